"""Is P99 at a fixed load per replica flat in the replica count? The benchmark behind ``rlctl bench isolation``.

The 2026-11-28 suite found P99 at the same load per replica rising from 4.7 ms with 2
replicas to 11.0 ms with 5, because the replicas, the load generator and the fault proxy
shared the host's two vCPUs. With a :class:`~rlctl.cgroups.CpuSplit` the replicas get their
own CPUs; this benchmark measures whether that makes the test-bed's P99 independent of the
replica count:

1. **capacity**: one replica (quota ``len(replica CPUs) / max_replicas`` cores, in the replica
   CPU set) behind the local backend's fault proxy, probed by ``rlctl probe``'s ramp
   (:func:`rlctl.boundary.probe.run_probe`); its knee is the replica's capacity;
2. **points**: for ``n = 1..max_replicas``, ``n`` replicas with that quota each, the load
   ``n x fraction x capacity`` (Poisson arrivals through the same proxy and ``gosvc loadgen``
   the local backend uses) for ``point_s`` seconds after ``warmup_s``; a point's P99 is the
   median of its per-second P99s;
3. both **layouts**: ``isolated`` (replicas on the replica CPUs, this process and its children,
   the proxy and the load generator, on the harness CPUs) and ``shared`` (the old layout:
   everything on every CPU, the same quotas), each ``repeats`` times, the order of ``n``
   shuffled per repeat and the layouts alternated, so drift of a shared host spreads over all
   points; the load average is recorded before and after every point.

The result: per layout and ``n`` the mean and range of P99 over repeats, and the ratio of the
largest to the smallest mean (flat: at most ``1 + tolerance``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.backends.live import signals_raise
from chaos.backends.local.backend import process_cpu_seconds
from chaos.backends.local.proxy import FaultProxy
from chaos.backends.local.replicas import ReplicaManager
from rlctl.boundary.probe import ProbeConfig, Ramp, run_probe
from rlctl.cgroups import CpuSplit
from rlctl.contract import Knobs
from rlctl.errors import ConfigError, TelemetryError
from rlctl.harness.isolation import HarnessIsolation, active
from rlctl.harness.journal import Journal, revert_journal, using
from rlctl.harness.process import find_gosvc
from rlctl.harness.process import run as harness_run
from rlctl.machine import cpu_busy_s, load_average

log = logging.getLogger(__name__)

SCHEMA = "rlctl.bench.isolation/v1"
ISOLATED, SHARED = "isolated", "shared"


@dataclass(frozen=True)
class FlatnessConfig:
    """What the benchmark measures; see the module docstring."""

    split: CpuSplit | None
    """None: only the ``shared`` layout can run (and :meth:`Bench.capacity` probes a shared replica)."""
    max_replicas: int = 4
    """Most replicas; each gets ``len(split.replica) / max_replicas`` cores of quota (unless ``replica_cpu``)."""
    replica_cpu: float | None = None
    """Quota per replica in cores, instead of the replica set divided by ``max_replicas``."""
    cpu_us: int = 1000
    """CPU work per request (``gosvc serve --cpu-us``), as ``rlctl validate-real``."""
    cpu_iters: int | None = None
    """Spin iterations per request (``gosvc serve --cpu-iters``); None: ``cpu_us`` at the fastest of
    ``calibrations`` spin-loop calibrations (a neighbour's burst only slows a calibration down, which
    would make every request of the run cheaper; the 19:08 run calibrated 36 % low)."""
    calibrations: int = 3
    capacity_probes: int = 1
    """Probes of one replica's capacity; the median knee is the capacity (a neighbour's burst during a
    probe's ramp moves its knee)."""
    fraction: float = 0.5
    """Load per replica as a fraction of one isolated replica's measured capacity."""
    per_replica_qps: float | None = None
    """Skip the capacity probe and use this load per replica."""
    point_s: float = 20.0
    warmup_s: float = 3.0
    repeats: int = 3
    layouts: tuple[str, ...] = (ISOLATED, SHARED)
    slo_p99_ms: float = 8.0
    tolerance: float = 0.2
    """Flat: the largest mean P99 over n is at most ``1 + tolerance`` times the smallest."""
    request_timeout_s: float = 2.0
    gosvc: str | None = None
    state_dir: str | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        if self.max_replicas < 1 or self.repeats < 1:
            raise ConfigError(f"--max-replicas {self.max_replicas} and --repeats {self.repeats} must be at least 1")
        bad = [x for x in self.layouts if x not in (ISOLATED, SHARED)]
        if bad or not self.layouts:
            raise ConfigError(f"--layout {','.join(self.layouts)}: choose from {ISOLATED}, {SHARED}")
        if self.split is None and (ISOLATED in self.layouts or self.replica_cpu is None):
            raise ConfigError("the isolated layout, and a quota from the replica CPU set, need a CPU split")
        if not 0 < self.fraction <= 1.5:
            raise ConfigError(f"--fraction {self.fraction:g}: use a fraction of the capacity in (0, 1.5]")
        if self.warmup_s < 0 or self.point_s < 3:
            raise ConfigError(f"--point-s {self.point_s:g} must be at least 3 and --warmup-s >= 0")

    @property
    def quota_cores(self) -> float:
        if self.replica_cpu is not None:
            return self.replica_cpu
        assert self.split is not None
        return len(self.split.replica) / self.max_replicas


@dataclass
class Point:
    """One measurement: ``n`` replicas of one layout at ``n x rate`` for ``point_s`` seconds."""

    layout: str
    replicas: int
    repeat: int
    target_qps: float
    p99_ms: float
    """Median of the per-second P99s after the warm-up."""
    p99_mean_ms: float
    p50_ms: float
    served_qps: float
    error_rate: float
    seconds: int
    cpu_busy: dict[str, float]
    """Busy fraction of each CPU during the load (this benchmark's processes and everyone else's)."""
    replicas_cores: float
    """Cores the replica processes used during the load."""
    foreign_cores_on_replica_cpus: float | None
    """Isolated layout: busy cores of the replica CPUs minus the replicas' own (other tenants of the host)."""
    foreign_cores: float
    """Busy cores of the whole host minus this benchmark's (replicas, proxy, load generator, itself)."""
    loadavg_before: list[float]
    loadavg_after: list[float]
    started: str
    harness: str = ""


@dataclass
class _Plant:
    """The proxy and replicas of one point, and their journal."""

    journal: Journal
    proxy: FaultProxy
    replicas: ReplicaManager
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


def _replicas_cpu_s(mgr: ReplicaManager) -> float:
    return sum(process_cpu_seconds(r.proc.pid) or 0.0 for r in mgr.live() if r.proc is not None)


def _own_cpu_s(proxy: FaultProxy) -> float:
    """CPU seconds of this process, its waited-for children (the load generator) and the proxy."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    px = process_cpu_seconds(proxy.proc.pid) if proxy.proc is not None else None
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + (px or 0.0)


class Bench:
    """Runs :class:`FlatnessConfig`; see the module docstring."""

    def __init__(self, cfg: FlatnessConfig, *, on_point: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.gosvc = find_gosvc(cfg.gosvc)
        self.on_point = on_point or (lambda _msg: None)
        self.cpu_iters: int | None = None
        self.calibrated: list[int] = []
        self._k = 0

    @contextlib.contextmanager
    def plant(self, layout: str, n: int) -> Any:
        """``n`` replicas behind a fresh proxy, in ``layout``; everything stopped and reverted afterwards."""
        cfg = self.cfg
        self._k += 1
        journal = Journal.open(f"bench-isolation-{os.getpid()}-{self._k}", cfg.state_dir, command="bench isolation")
        with contextlib.ExitStack() as stack:
            stack.callback(journal.close)
            stack.callback(revert_journal, journal)
            isolated = layout == ISOLATED and cfg.split is not None
            if isolated:
                assert cfg.split is not None
                stack.enter_context(HarnessIsolation(cfg.split, command="bench isolation"))
            stack.enter_context(using(journal))
            proxy = FaultProxy(self.gosvc, journal, seed=cfg.seed, hold_s=max(10.0, 5 * cfg.request_timeout_s))
            proxy.start()
            stack.callback(proxy.stop)
            mgr = ReplicaManager(
                self.gosvc, journal, proxy, Knobs(replicas=n, gomaxprocs=1), quota_cores=cfg.quota_cores,
                cpu_us=cfg.cpu_us, cpus=cfg.split.replica_list if isolated and cfg.split is not None else None,
            )  # fmt: skip
            mgr.cpu_iters = self.cpu_iters  # the same work per request at every point
            stack.callback(mgr.shutdown)
            mgr.setup()
            mgr.scale_to(n)
            self.cpu_iters = mgr.cpu_iters
            yield proxy, mgr

    def calibrate(self) -> int:
        """Spin iterations per request: ``cpu_us`` at the fastest of ``calibrations`` replica starts."""
        cfg = self.cfg
        if cfg.cpu_iters is not None:
            self.cpu_iters = cfg.cpu_iters
            return cfg.cpu_iters
        found: list[int] = []
        for _ in range(cfg.calibrations):
            self.cpu_iters = None
            with self.plant(ISOLATED if cfg.split is not None else SHARED, 1):
                assert self.cpu_iters is not None
                found.append(self.cpu_iters)
        self.cpu_iters = max(found)
        self.calibrated = found
        self.on_point(f"work per request: {self.cpu_iters} spin iterations (calibrations {found})")
        return self.cpu_iters

    def capacity(self) -> dict[str, Any]:
        """The median of ``capacity_probes`` knees of one replica (:meth:`probe_capacity`)."""
        probes = [self.probe_capacity() for _ in range(max(1, self.cfg.capacity_probes))]
        knees = sorted(float(p["capacity_qps"]) for p in probes)
        out = dict(probes[0]) if len(probes) == 1 else {"probes": probes}
        out |= {"capacity_qps": statistics.median(knees), "knees_qps": knees}
        if len(probes) > 1:
            self.on_point(
                f"capacity: median of {len(knees)} knees {[round(k) for k in knees]}: {out['capacity_qps']:.0f}"
            )
        return out

    def probe_capacity(self) -> dict[str, Any]:
        """One replica's knee (isolated when there is a split) by ``rlctl probe``'s ramp, through the proxy."""
        cfg = self.cfg
        top = cfg.quota_cores * 1e6 / cfg.cpu_us  # requests/s the quota allows at best
        ramp = Ramp(start_qps=round(0.1 * top, 1), step_qps=round(0.08 * top, 1), step_s=4.0)
        layout = ISOLATED if cfg.split is not None else SHARED
        with self.plant(layout, 1) as (proxy, mgr):
            rep = mgr.ready()[0]
            probe = ProbeConfig(
                url=f"{proxy.url}/work", metrics_url=f"{rep.url}/metrics", pprof_url=None, ramp=ramp,
                max_qps=2.0 * top, slo_p99_ms=cfg.slo_p99_ms, interval_s=1.0, loadgen=self.gosvc,
                request_timeout_s=cfg.request_timeout_s,
            )  # fmt: skip
            report = run_probe(probe)
        knee = report.get("knee_qps") or report.get("max_qps_at_slo")
        if not knee:
            raise TelemetryError(f"the probe found no knee for one replica (stopped at {report.get('stopped_at_qps')})")
        out = {k: report.get(k) for k in ("knee_qps", "knee_qps_second_method", "max_qps_at_slo", "stopped_at_qps",
                                          "stopped_by")}  # fmt: skip
        out |= {"capacity_qps": float(knee), "ramp": str(ramp), "quota_cores": cfg.quota_cores, "layout": layout,
                "cpu_us": cfg.cpu_us, "loadavg_after": load_average()}  # fmt: skip
        self.on_point(f"capacity of one {layout} replica: {float(knee):.0f} qps (probe knee)")
        return out

    def point(self, layout: str, n: int, rate: float, repeat: int) -> Point:
        cfg = self.cfg
        before, started = load_average(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.plant(layout, n) as (proxy, mgr):
            iso = active()
            argv = [
                self.gosvc, "loadgen", "--url", f"{proxy.url}/work", "--rate", f"{n * rate:.3f}",
                "--duration", f"{cfg.warmup_s + cfg.point_s:g}s", "--interval", "1s",
                "--timeout", f"{cfg.request_timeout_s:g}s", "--poisson", "--seed", str(cfg.seed + repeat),
                "--max-inflight", "2000",
            ]  # fmt: skip
            busy0, rep0, own0, t0 = cpu_busy_s(), _replicas_cpu_s(mgr), _own_cpu_s(proxy), time.monotonic()
            proc = harness_run("loadgen", argv, timeout_s=cfg.warmup_s + cfg.point_s + 30)
            busy1, rep1, own1, t1 = cpu_busy_s(), _replicas_cpu_s(mgr), _own_cpu_s(proxy), time.monotonic()
        busy = {str(c): round((busy1[c] - busy0[c]) / (t1 - t0), 3) for c in sorted(busy1) if c in busy0}
        replicas_cores = max(0.0, rep1 - rep0) / (t1 - t0)
        ours = replicas_cores + max(0.0, own1 - own0) / (t1 - t0)
        foreign_all = round(max(0.0, sum(busy.values()) - ours), 3)
        foreign = None
        if layout == ISOLATED and cfg.split is not None:
            foreign = round(max(0.0, sum(busy[str(c)] for c in cfg.split.replica) - replicas_cores), 3)
        if proc.returncode != 0:
            raise TelemetryError(f"load generator exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip().startswith("{")]
        steady = [x for x in lines if not x.get("summary") and float(x["t_s"]) > cfg.warmup_s + 0.5]
        steady = [x for x in steady if float(x.get("offered", 0)) > 0]
        if not steady:
            raise TelemetryError(f"the load generator printed no steady second at {n * rate:.0f} qps")
        p99s = [float(x["p99_ms"]) for x in steady]
        offered = sum(float(x["offered"]) for x in steady)
        pt = Point(
            layout=layout, replicas=n, repeat=repeat, target_qps=round(n * rate, 2),
            p99_ms=round(statistics.median(p99s), 3), p99_mean_ms=round(statistics.fmean(p99s), 3),
            p50_ms=round(statistics.median(float(x["p50_ms"]) for x in steady), 3),
            served_qps=round(sum(float(x["completed"]) for x in steady) / sum(float(x["interval_s"]) for x in steady),
                             1),
            error_rate=round(sum(float(x["errors"]) for x in steady) / offered, 5) if offered else 0.0,
            seconds=len(steady), cpu_busy=busy, replicas_cores=round(replicas_cores, 3),
            foreign_cores_on_replica_cpus=foreign, foreign_cores=foreign_all,
            loadavg_before=before, loadavg_after=load_average(), started=started,
            harness=iso.detail if iso is not None and layout == ISOLATED else "shared with the replicas",
        )  # fmt: skip
        self.on_point(
            f"{layout} n={n} r{repeat}: P99 {pt.p99_ms:.2f} ms at {pt.target_qps:.0f} qps "
            f"(load {before[0]:.1f} -> {pt.loadavg_after[0]:.1f}; CPUs busy {busy}, replicas "
            f"{replicas_cores:.2f} core, other tenants {foreign_all:.2f} core)"
        )
        return pt

    def run(self) -> dict[str, Any]:
        """Capacity, then every point; SIGINT and SIGTERM stop it cleanly (every process stopped, cgroups removed)."""
        with signals_raise():
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.time()
        load_start = load_average()
        self.calibrate()
        cap: dict[str, Any]
        if cfg.per_replica_qps is not None:
            cap = {"capacity_qps": None, "given_per_replica_qps": cfg.per_replica_qps}
            rate = cfg.per_replica_qps
        else:
            cap = self.capacity()
            rate = cfg.fraction * float(cap["capacity_qps"])
        rng = random.Random(cfg.seed)
        points: list[Point] = []
        for repeat in range(1, cfg.repeats + 1):
            layouts = list(cfg.layouts) if repeat % 2 else list(reversed(cfg.layouts))
            for layout in layouts:
                ns = list(range(1, cfg.max_replicas + 1))
                rng.shuffle(ns)
                for n in ns:
                    points.append(self.point(layout, n, rate, repeat))
        return {
            "schema": SCHEMA,
            "config": {
                **asdict(cfg),
                "split": cfg.split.to_dict() if cfg.split else None,
                "quota_cores": cfg.quota_cores,
            },
            "per_replica_qps": round(rate, 2),
            "capacity": cap,
            "loadavg_start": load_start,
            "loadavg_end": load_average(),
            "duration_s": round(time.time() - started, 1),
            "cpu_iters_per_request": self.cpu_iters,
            "cpu_iters_calibrations": self.calibrated,
            "layouts": summarize(points, cfg),
            "points": [asdict(p) for p in points],
        }


def summarize(points: list[Point], cfg: FlatnessConfig) -> dict[str, Any]:
    """Per layout: per n the mean and range of P99 over repeats; the ratio of the largest to the smallest mean."""
    out: dict[str, Any] = {}
    for layout in cfg.layouts:
        per_n: dict[str, Any] = {}
        for n in range(1, cfg.max_replicas + 1):
            v = [p.p99_ms for p in points if p.layout == layout and p.replicas == n]
            if v:
                mine = [p for p in points if p.layout == layout and p.replicas == n]
                foreign = [p.foreign_cores_on_replica_cpus for p in mine if p.foreign_cores_on_replica_cpus is not None]
                per_n[str(n)] = {"p99_ms_mean": round(statistics.fmean(v), 3), "p99_ms_min": min(v),
                                 "p99_ms_max": max(v), "repeats": len(v), "p99_ms": v,
                                 "p50_ms_median": statistics.median(p.p50_ms for p in mine),
                                 "replicas_cores_mean": round(statistics.fmean(p.replicas_cores for p in mine), 3),
                                 "foreign_cores_on_replica_cpus": foreign,
                                 "foreign_cores": [p.foreign_cores for p in mine],
                                 "loadavg_1m_before": [p.loadavg_before[0] for p in mine]}  # fmt: skip
        means = [b["p99_ms_mean"] for b in per_n.values()]
        ratio = max(means) / min(means) if means and min(means) > 0 else None
        out[layout] = {
            "per_replicas": per_n,
            "ratio_max_min": round(ratio, 3) if ratio is not None else None,
            "flat": ratio is not None and ratio <= 1 + cfg.tolerance,
        }
    return out
