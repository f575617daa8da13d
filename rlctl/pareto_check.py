"""The Pareto front checked on the real test-bed: front points run on real ``gosvc`` replicas.

:mod:`policies.pareto` scores knob settings in the simulator's physics. This module runs some
of them (the cheapest meeting the SLO, the lowest P99, the knee: :func:`check_points`) on
real ``gosvc serve`` replicas at the front's load and measures what the simulator predicted:

- **replicas** are :class:`rlctl.harness.testbed.TestBed` services (the calibrated test-bed's
  flags, :data:`~rlctl.harness.testbed.TESTBED_SERVE_FLAGS`), each in its own CPU cgroup with the
  profile's per-replica quota (``cpu_quota_cores``); the work per request is fixed across
  replicas (``--iters-per-us`` from the first replica's spin-loop calibration). The most
  replicas any point needs are started once; a point with ``n`` replicas uses the first
  ``n`` (the others idle) and gets its runtime knobs through ``/admin/knobs``;
- **load**: one open-loop ``gosvc loadgen`` per replica (Poisson arrivals, latency from the
  intended send time) at ``load / n`` each, as a Kubernetes Service spreads it (and as
  ``rlctl.online.e2e`` drives its replicas): no proxy hop the profile never saw;
- **P99**: the median of the reporting intervals' P99s of every generator (each interval
  about :data:`REQUESTS_PER_INTERVAL` requests), the statistic the profile was fitted to
  (:mod:`rlctl.harness.testbed`);
- **cores**: CPU seconds the replicas' cgroups accounted over the measured window, per second
  (cgroup v2 ``cpu.stat`` ``usage_usec``; cgroup v1 ``cpuacct.usage`` of a twin group in the
  ``cpuacct`` hierarchy, journaled like every group the harness makes);
- **peak heap**: the replicas' GC heap goals summed (``go_gc_heap_goal_bytes``), the
  simulator's ``heap_bytes``.

Knobs the real service cannot take are held fixed and said so (:data:`HELD`): turbo and the
prefetchers are model-specific registers (no hardware access here), held on, as the host ran
when the profile was calibrated. Each point is measured ``repeats`` times, interleaved (every
repeat visits every point, later repeats in a seeded shuffled order), after a warm-up at the
same load; :func:`summarise` reports mean and range and which points the measurements show
dominated (a point the simulator calls non-dominated but the real service does not).

A job of live measurement (the jobs floor of docs/architecture.md): it imports the harness
and the simulator's front, and nothing imports it but the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlctl import cgroups
from rlctl.errors import ConfigError, TelemetryError
from rlctl.harness import cgroup as harness_cgroup
from rlctl.harness.admin import AdminClient
from rlctl.harness.process import Managed, spawn
from rlctl.harness.testbed import TESTBED_SERVE_FLAGS, TestBed, parse_loadgen
from rlctl.machine import children_cpu_s, cpu_model, host_busy_s  # neighbours' CPU = busy host CPU minus ours
from rlctl.telemetry.scrape import Scraper

log = logging.getLogger(__name__)

#: The journal session of the processes and cgroups a check starts.
COMMAND = "pareto-check"
#: Knobs held fixed on the real test-bed, with the value held and why.
HELD: dict[str, tuple[bool, str]] = {
    "prefetch": (True, "a model-specific register: no hardware access here; on, as calibrated"),
    "turbo": (True, "a model-specific register: no hardware access here; on, as calibrated"),
}
#: Runtime knobs a point sets through /admin/knobs.
RUNTIME = ("gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")
#: Requests one reporting interval of one generator should hold (the P99 of ~250 samples).
REQUESTS_PER_INTERVAL = 250.0
#: The scheduler's weight of one thread at nice -5 (``sched_prio_to_weight``; nice 0 is 1024).
NICE_M5_WEIGHT = 3121
#: The objectives compared, in :data:`policies.pareto.OBJECTIVES` order.
OBJECTIVES = ("p99_ms", "cores_used", "peak_heap_mib")


@dataclass(frozen=True)
class CheckConfig:
    """How the points are measured."""

    load_qps: float
    """The front's load, spread evenly over a point's replicas."""
    quota_cores: float | None
    """CPU quota of each replica's cgroup (the profile's ``cpu_quota_cores``)."""
    repeats: int = 3
    duration_s: float = 10.0
    """The measured window of one trial."""
    warmup_s: float = 3.0
    """Load at the same rate before the window (the GC pacer and the pools settle after a knob change)."""
    settle_s: float = 0.5
    """Pause after setting the knobs."""
    timeout_s: float = 1.0
    """Per-request timeout of the generators (the profile's ``timeout_ms``)."""
    nice: int = -5
    """Niceness of replicas and generators, as the calibration ran them (negative needs root; 0: inherit)."""
    shares: int = 2 * NICE_M5_WEIGHT
    """CPU weight of each replica's cgroup and of the generators' (v1 ``cpu.shares`` units; 0: the
    default 1024, and the generators in no group). A cgroup competes with the host's other tasks
    as one entity, whatever its processes' niceness: the default gives it the weight its two
    GOMAXPROCS threads had at ``nice -5`` in the calibration, which ran without a cgroup; more
    shields the measurement from a busy host's other tenants."""
    serve_flags: tuple[str, ...] = TESTBED_SERVE_FLAGS
    iters_per_us: float | None = None
    """Spin-loop iterations per CPU microsecond for every replica (``gosvc serve --iters-per-us``),
    which fixes the work of ``--cpu-us``; None: the first replica calibrates it at its start, so
    it follows the host's state then and differs between runs."""
    seed: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.load_qps) and self.load_qps > 0):
            raise ConfigError(f"the check's load {self.load_qps!r} req/s must be a positive number; give --load QPS")
        if self.repeats < 1 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ConfigError(
                f"repeats {self.repeats}, duration {self.duration_s} s, warm-up {self.warmup_s} s: need "
                "repeats >= 1, a positive duration and a warm-up >= 0"
            )


@dataclass(frozen=True)
class CheckPoint:
    """A front point to run: its names (``knee``, ...), knobs and the simulator's objectives."""

    names: tuple[str, ...]
    knobs: dict[str, Any]
    predicted: dict[str, float]

    @property
    def label(self) -> str:
        return "+".join(self.names)

    @property
    def replicas(self) -> int:
        return int(self.knobs["replicas"])


def check_points(report: Mapping[str, Any]) -> list[CheckPoint]:
    """The front's called-out points (a point called out twice is run once, with both names)."""
    by_index: dict[int, list[str]] = {}
    for name in ("cheapest", "lowest_p99", "knee"):
        knee = report["knees"].get(name)
        if knee is not None:
            by_index.setdefault(int(knee["index"]), []).append(name)
    front = report["front"]
    return [
        CheckPoint(tuple(names), dict(front[i]["knobs"]), {k: float(v) for k, v in front[i]["objectives"].items()})
        for i, names in by_index.items()
    ]


@dataclass
class Trial:
    """One measured window of one point."""

    point: str
    repeat: int
    order: int
    p99_ms: float
    cores_used: float
    peak_heap_mib: float
    offered_qps: float
    served_qps: float
    error_rate: float
    interval_s: float
    window_s: float
    foreign_cores: float = math.nan
    """CPU the host's other tenants used meanwhile (busy CPU minus the replicas' and the generators')."""
    loadavg: list[float] | None = None
    p99_intervals_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        d["p99_intervals_ms"] = [round(v, 3) for v in self.p99_intervals_ms]
        return d


# ------------------------------------------------------------------------------ cgroup CPU accounting


class CpuAccount:
    """CPU seconds a replica's cgroup accounted: v2 ``cpu.stat`` ``usage_usec``; v1 ``cpuacct.usage``.

    On cgroup v1 with ``cpu`` and ``cpuacct`` mounted apart, the replica's pid also joins a twin
    group in the ``cpuacct`` hierarchy (journaled through :mod:`rlctl.harness.cgroup`, removed by
    :meth:`close`).
    """

    def __init__(self, group: Path, pid: int) -> None:
        self.group = group
        self._twin: harness_cgroup.Cgroup | None = None
        if cgroups.is_v2(group) or (group / "cpuacct.usage").exists():
            self.path = group
            return
        root = cgroups._mount_root(group)  # the hierarchy's root, as rlctl.cgroups finds it
        acct = root.parent / "cpuacct"
        if not (acct / "cpuacct.usage").exists():
            raise ConfigError(
                f"{group}: cgroup v1 without a cpuacct hierarchy next to {root} ({acct}); the check measures "
                "cores from cgroup CPU accounting and cannot without it"
            )
        self._twin = harness_cgroup.create(cgroups.Cgroups(1, acct), group.relative_to(root), command=COMMAND)
        self._twin.add(pid)
        self.path = self._twin.path

    def seconds(self) -> float:
        if (self.path / "cpuacct.usage").exists():
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise TelemetryError(f"{self.path}/cpu.stat has no usage_usec; is the cpu controller enabled there?")

    def close(self) -> None:
        if self._twin is not None:
            self._twin.remove()
            self._twin = None


# ------------------------------------------------------------------------------ replicas and load


@dataclass
class Replica:
    bed: TestBed
    account: CpuAccount
    admin: AdminClient


def _start_replicas(n: int, cfg: CheckConfig, stack: contextlib.ExitStack, meta: dict[str, Any]) -> list[Replica]:
    """``n`` test-bed services in quota cgroups; the first one's spin calibration fixes everyone's work."""
    out: list[Replica] = []
    flags = [*cfg.serve_flags, "--shutdown-timeout", "2s"]
    if cfg.iters_per_us is not None:
        flags += ["--iters-per-us", f"{cfg.iters_per_us:g}"]
        meta["spin_iters_per_us"] = cfg.iters_per_us
    for i in range(n):
        bed = stack.enter_context(TestBed(flags, cgroup_quota_cores=cfg.quota_cores, nice=cfg.nice))
        if bed.cgroup is None:
            raise ConfigError("the check needs a cgroup per replica for CPU accounting; give the profile a CPU quota")
        if cfg.shares:
            cgroups.set_shares(bed.cgroup, cfg.shares)
        account = CpuAccount(bed.cgroup, bed.proc.pid if bed.proc else 0)
        stack.callback(account.close)
        out.append(Replica(bed, account, AdminClient(bed.admin_root, token=bed.token, timeout_s=5.0)))
        if i == 0 and cfg.iters_per_us is None:
            iters = Scraper(bed.metrics_url).snapshot().gauge("gosvc_spin_iterations_per_cpu_second")
            if math.isfinite(iters) and iters > 0:
                flags += ["--iters-per-us", f"{iters / 1e6:.6f}"]
                log.info("spin loop: %.1f iterations per CPU microsecond (fixed for every replica)", iters / 1e6)
                meta["spin_iters_per_us"] = round(iters / 1e6, 3)
    return out


def interval_for(rate_qps: float, duration_s: float) -> float:
    """A reporting interval holding about :data:`REQUESTS_PER_INTERVAL` requests (0.25 s to a quarter of the window)."""
    want = REQUESTS_PER_INTERVAL / max(rate_qps, 1e-9)
    return round(min(max(want, 0.25), max(duration_s / 4.0, 0.25)), 2)


def _loadgens(replicas: Sequence[Replica], rate: float, duration_s: float, interval_s: float, cfg: CheckConfig,
              seed: int, group: Path | None = None) -> list[str]:  # fmt: skip
    """One generator per replica at ``rate`` for ``duration_s``, all at once; their stdouts."""
    running: list[Managed] = []
    try:
        for i, rep in enumerate(replicas):
            argv = [rep.bed.binary, "loadgen", "--url", rep.bed.url, "--rate", f"{rate:.3f}", "--duration",
                    f"{duration_s:g}s", "--interval", f"{interval_s:g}s", "--timeout", f"{cfg.timeout_s:g}s",
                    "--poisson", "--seed", str(seed * 1000 + i)]  # fmt: skip
            if cfg.nice:
                argv = ["nice", "-n", str(cfg.nice), *argv]
            running.append(spawn(None, "loadgen", argv, cgroup=group, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 command=COMMAND))  # fmt: skip
        outs = []
        for m in running:
            out, err = m.proc.communicate(timeout=duration_s + 3 * cfg.timeout_s + 15)
            if m.proc.returncode != 0:
                raise TelemetryError(f"load generator exited with {m.proc.returncode}: {err.strip()[-300:]}")
            outs.append(out)
        return outs
    finally:
        for m in running:
            m.stop(grace_s=0.5)


def _heap_goal_mib(replicas: Sequence[Replica]) -> float:
    total = 0.0
    for rep in replicas:
        goal = Scraper(rep.bed.metrics_url).snapshot().gauge("go_gc_heap_goal_bytes")
        if not math.isfinite(goal):
            return math.nan
        total += goal
    return total / 2**20


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def measure_point(point: CheckPoint, replicas: Sequence[Replica], cfg: CheckConfig, *, repeat: int, order: int,
                  loadgen_group: Path | None = None) -> Trial:  # fmt: skip
    """Set ``point``'s knobs on its first replicas, warm up, measure one window (generators in ``loadgen_group``)."""
    used = replicas[: point.replicas]
    body = {k: point.knobs[k] for k in RUNTIME}
    for rep in used:
        rep.admin.put_knobs(body)
    time.sleep(cfg.settle_s)
    rate = cfg.load_qps / len(used)
    interval = interval_for(rate, cfg.duration_s)
    seed = cfg.seed + 100 * repeat + order
    if cfg.warmup_s > 0:
        _loadgens(used, rate, cfg.warmup_s, interval_for(rate, cfg.warmup_s), cfg, seed + 50_000, loadgen_group)
    load0 = _loadavg()
    busy0, gen0 = host_busy_s(), children_cpu_s()
    cpu0, t0 = [r.account.seconds() for r in replicas], time.monotonic()
    outs = _loadgens(used, rate, cfg.duration_s, interval, cfg, seed, loadgen_group)
    cpu1, t1 = [r.account.seconds() for r in replicas], time.monotonic()
    busy1, gen1 = host_busy_s(), children_cpu_s()
    ours = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) + (gen1 - gen0)
    heap = _heap_goal_mib(used)
    steps = [parse_loadgen(o, rate) for o in outs]
    p99s = [v for s in steps for v in s.p99s if math.isfinite(v)]
    load1 = _loadavg()
    return Trial(
        point=point.label, repeat=repeat, order=order,
        p99_ms=statistics.median(p99s) if p99s else math.nan,
        cores_used=sum(b - a for a, b in zip(cpu0[: len(used)], cpu1[: len(used)], strict=True)) / (t1 - t0),
        peak_heap_mib=heap,
        offered_qps=sum(s.offered_qps for s in steps), served_qps=sum(s.served_qps for s in steps),
        error_rate=statistics.fmean(s.error_rate for s in steps), interval_s=interval, window_s=t1 - t0,
        foreign_cores=max(busy1 - busy0 - ours, 0.0) / (t1 - t0),
        loadavg=[round((a + b) / 2, 2) for a, b in zip(load0, load1, strict=True)] if load0 and load1 else None,
        p99_intervals_ms=p99s,
    )  # fmt: skip


def schedule(n_points: int, repeats: int, seed: int) -> list[tuple[int, int]]:
    """``(repeat, point index)`` in run order: repeat 0 in the given order, later ones shuffled."""
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    for r in range(repeats):
        order = list(range(n_points))
        if r > 0:
            rng.shuffle(order)
        out += [(r, i) for i in order]
    return out


def run_check(
    points: Sequence[CheckPoint],
    cfg: CheckConfig,
    *,
    on_trial: Callable[[Trial], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> list[Trial]:
    """Every point ``cfg.repeats`` times, interleaved, on real replicas; the replicas are always stopped.

    ``meta`` gets ``spin_iters_per_us``: the work per request every replica was started with.
    """
    if not points:
        raise ConfigError("no front points to check; the front is empty")
    trials: list[Trial] = []
    with contextlib.ExitStack() as stack:
        replicas = _start_replicas(max(p.replicas for p in points), cfg, stack, meta if meta is not None else {})
        group = None
        if cfg.shares and replicas[0].bed.cgroup is not None:  # the generators weigh as much as a replica
            hierarchy = cgroups.detect(purpose="the check's load generators")
            name = f"{replicas[0].bed.cgroup.name}-loadgen"
            loadgens = harness_cgroup.create(hierarchy, name, shares=cfg.shares, command=COMMAND)
            stack.callback(loadgens.remove)
            group = loadgens.path
        for k, (repeat, i) in enumerate(schedule(len(points), cfg.repeats, cfg.seed)):
            trial = measure_point(points[i], replicas, cfg, repeat=repeat, order=k, loadgen_group=group)
            trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
    return trials


# ------------------------------------------------------------------------------ the verdict


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def summarise(points: Sequence[CheckPoint], trials: Sequence[Trial], slo_p99_ms: float) -> list[dict[str, Any]]:
    """Per point: predicted and measured (mean, range) objectives, relative errors, and dominance.

    ``dominated_by``: the checked points whose measured means dominate this one's (at least as
    good in every objective, better in one); ``clearly_dominated_by``: those whose worst
    repeat is at least as good as this point's best in every objective (better in one), so
    the repeats' spread cannot explain it. The simulator calls every point here non-dominated.
    """
    rows: list[dict[str, Any]] = []
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for p in points:
        mine = [t for t in trials if t.point == p.label]
        per: dict[str, dict[str, float]] = {}
        for obj in OBJECTIVES:
            vals = [getattr(t, obj) for t in mine if math.isfinite(getattr(t, obj))]
            per[obj] = {
                "mean": statistics.fmean(vals) if vals else math.nan,
                "min": min(vals) if vals else math.nan,
                "max": max(vals) if vals else math.nan,
            }
        stats[p.label] = per
    for p in points:
        per = stats[p.label]
        means = [per[o]["mean"] for o in OBJECTIVES]
        best = [per[o]["min"] for o in OBJECTIVES]
        by, clearly = [], []
        for q in points:
            if q.label == p.label:
                continue
            other = stats[q.label]
            if _dominates([other[o]["mean"] for o in OBJECTIVES], means):
                by.append(q.label)
            if _dominates([other[o]["max"] for o in OBJECTIVES], best):
                clearly.append(q.label)
        rows.append({
            "point": p.label, "knobs": p.knobs, "repeats": sum(t.point == p.label for t in trials),
            "predicted": {o: round(p.predicted[o], 4) for o in OBJECTIVES},
            "measured": {o: {k: round(v, 4) for k, v in per[o].items()} for o in OBJECTIVES},
            "relative_error": {o: round(per[o]["mean"] / p.predicted[o] - 1.0, 4) if p.predicted[o] else None
                               for o in OBJECTIVES},
            "meets_slo_measured": bool(per["p99_ms"]["mean"] <= slo_p99_ms),
            "foreign_cores_mean": round(statistics.fmean(t.foreign_cores for t in trials if t.point == p.label), 3),
            "dominated_by": by, "clearly_dominated_by": clearly,
            "non_dominated_measured": not by,
        })  # fmt: skip
    return rows


def machine() -> dict[str, Any]:
    """The CPU model and count, for the figures."""
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "loadavg_end": _loadavg()}
