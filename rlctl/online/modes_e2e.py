"""End to end on this host: ``advise`` and ``shadow`` with real gosvc replicas and a real Prometheus.

The same load step as :mod:`rlctl.online.e2e` (``low_qps`` for ``warm_s``, ``high_qps`` for
``step_s``, ``low_qps`` again for ``cool_s``) against local ``gosvc serve`` replicas; a local
Prometheus (Debian's ``prometheus``) scrapes every replica (a file_sd target list rewritten
when replicas come and go) and the controller's own ``/metrics``; the controller reads its
telemetry from Prometheus (:class:`~rlctl.online.prometheus.PrometheusSource`).

1. **advise**: the controller (the HPA rule at ``advise_target_cpu``) runs with
   ``mode="advise"`` on read-only actuators: it publishes ``rlctl_desired_replicas`` and writes
   nothing. A stand-in for the KEDA ScaledObject of ``deploy/k8s/advise-keda`` scales the
   replicas: every ``keda_polling_s`` it runs the ScaledObject's query on Prometheus and applies
   its arithmetic (the HPA KEDA manages: ``ceil(value / threshold)``, the 10 % tolerance, the
   bounds, ``fallback.replicas`` after three failed polls). It is not KEDA; it is what KEDA's
   Prometheus trigger computes, on the same query and the same server.
2. **shadow**: a running autoscaler (the HPA rule at the Kubernetes default
   ``running_target_cpu``, acting) scales the replicas; the shadow controller (the HPA rule at
   ``shadow_target_cpu``, without ``behavior``: the legacy rate rule, ``max(2 * current, 4)``
   per sync, because the v2 behavior remembers its own scale events as if they had happened,
   which a shadow's never do) runs with ``mode="shadow"``, audits to Redis and writes nothing.
   Afterwards ``rlctl shadow-report`` (the real CLI, in a subprocess) compares what the shadow
   would have done with what ran, once from the audit and once from Prometheus' replica count.

Every replica change is recorded with the thread that made it, so the report can show that
the controller in advise and shadow mode made none. Run it with one command::

    python -m rlctl.online.modes_e2e --out deploy/results/modes-2026-12-05

It writes ``modes.json`` (and the shadow reports) into ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from policies.baselines import HPAConfig
from rlctl.contract import KNOB_COL, KnobBounds
from rlctl.errors import ConfigError, RlctlError, TelemetryError
from rlctl.harness.journal import session
from rlctl.harness.process import Managed, spawn
from rlctl.online.actuators import Actuators, ProcessReplicaActuator, ReadOnlyActuators
from rlctl.online.e2e import LoadSplitter, per_second
from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop, StepResult, run_in_thread
from rlctl.online.procs import RedisServer, free_port
from rlctl.online.prometheus import PrometheusConfig, PrometheusSource
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import TelemetryStore
from rlctl.scoring import violated

log = logging.getLogger(__name__)

SERVICE = "gosvc"
#: The ScaledObject's query (deploy/k8s/advise-keda/scaledobject.yaml).
ADVICE_QUERY = f'max(rlctl_desired_replicas{{service="{SERVICE}"}})'
REPLICAS_QUERY = 'count(up{job="gosvc"} == 1)'
#: The shadow report's fields the summary repeats.
SUMMARY_FIELDS = (
    "decisions",
    "compared",
    "held",
    "agree_share",
    "would_more",
    "would_fewer",
    "mean_abs_diff_replicas",
    "max_abs_diff_replicas",
    "replica_seconds",
    "over_slo",
    "reasons",
)


@dataclass(frozen=True)
class ModesE2EConfig:
    """The experiment. Defaults fit a 2-core host shared with other work (as :class:`rlctl.online.e2e.E2EConfig`)."""

    cpu_us: int = 1000
    gomaxprocs: int = 1
    low_qps: float = 40.0
    high_qps: float = 200.0
    """Low enough that one replica still answers Prometheus' scrapes on a loaded host: a saturated
    gosvc replica answers ``/metrics`` too late, Prometheus marks it down, and the controller holds
    (``telemetry-nonfinite``) for as long as it stays saturated."""
    warm_s: float = 15.0
    step_s: float = 45.0
    cool_s: float = 30.0
    interval_s: float = 2.0
    """The controllers' interval."""
    scrape_s: float = 2.0
    """Prometheus' scrape interval and timeout."""
    window: str = "6s"
    """The PromQL rate window of the controller's telemetry (three scrapes)."""
    max_replicas: int = 4
    advise_target_cpu: float = 0.03
    """The advising rule's CPU target. ``cpu_util`` is CPU against GOMAXPROCS 1 on a host where a
    replica gets a small, varying share of a core (0.02 at ``low_qps``, 0.06-0.09 at 160 req/s at
    load 7-12): the target sits so the step crosses it with margin. The run is about who writes
    the replicas, not about tuning the rule."""
    running_target_cpu: float = 0.7
    """The running autoscaler's CPU target in the shadow run: the Kubernetes default."""
    shadow_target_cpu: float = 0.03
    downscale_window_s: float = 15.0
    keda_polling_s: float = 2.0
    slo_p99_ms: float = 20.0


class LocalPrometheus:
    """Debian's prometheus on a free port: job ``gosvc`` from a file_sd list, job ``rlctl-controller`` static."""

    def __init__(self, directory: Path, *, controller: str, scrape_s: float) -> None:
        binary = os.environ.get("RLCTL_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise ConfigError("prometheus not found: apt-get install prometheus, or set RLCTL_PROMETHEUS to its path")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.targets = directory / "gosvc-targets.json"
        directory.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        (directory / "prometheus.yml").write_text(
            # A saturated replica answers /metrics slowly: the whole interval is its timeout.
            f"global: {{scrape_interval: {scrape_s:g}s, scrape_timeout: {scrape_s:g}s, "
            f"evaluation_interval: {scrape_s:g}s}}\n"
            "scrape_configs:\n"
            f"  - job_name: gosvc\n    file_sd_configs: [{{files: ['{self.targets}'], refresh_interval: 1s}}]\n"
            f"  - job_name: rlctl-controller\n    static_configs: [{{targets: ['{controller}']}}]\n"
        )
        self._proc: Managed | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, addrs: list[str]) -> None:
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": sorted(addrs), "labels": {}}]))
        tmp.replace(self.targets)  # atomic: Prometheus never reads half a file

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        args = [self.binary, f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip
        log_file = (self.directory / "prometheus.log").open("w")
        self._proc = spawn(None, "prometheus", args, stdout=log_file, stderr=log_file, command="modes-e2e")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise RlctlError(f"prometheus exited; see {self.directory / 'prometheus.log'}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.2)
        raise RlctlError(f"prometheus on {self.url} not ready within {timeout_s} s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()


class LockedReplicas(ProcessReplicaActuator):
    """Local replicas read and scaled from several threads (driver, controllers, the KEDA stand-in).

    :class:`ProcessReplicaActuator` drops dead replicas from its list on every read; two threads
    doing it at once (one stopping a replica, one counting) would remove it twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()

    def get_replicas(self) -> int:
        with self._lock:
            return super().get_replicas()

    def set_replicas(self, n: int) -> int:
        with self._lock:
            return super().set_replicas(n)


class Writers:
    """Wraps ``set_replicas`` to record every replica change with the thread that made it."""

    def __init__(self, reps: ProcessReplicaActuator, t0: float) -> None:
        self.changes: list[dict[str, Any]] = []
        self.t0 = t0
        inner = reps.set_replicas

        def set_replicas(n: int) -> int:
            before = reps.get_replicas()
            got = inner(n)
            if got != before:
                self.changes.append({"t_s": round(time.time() - self.t0, 1), "from": before, "to": got,
                                     "by": threading.current_thread().name})  # fmt: skip
            return got

        reps.set_replicas = set_replicas  # type: ignore[method-assign]

    def by(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c["by"]] = out.get(c["by"], 0) + 1
        return out


def scaled_object_replicas(
    value: float, current: int, failures: int, *, threshold: float = 1.0, min_replicas: int = 1,
    max_replicas: int = 4, tolerance: float = 0.1, fallback_after: int = 3,
) -> int:  # fmt: skip
    """The replicas a KEDA ScaledObject's HPA sets for a Prometheus trigger answering ``value``.

    ``AverageValue`` target ``threshold``: ``ceil(value / threshold)``, unless the ratio to
    ``current`` is within the HPA's ``tolerance``; bounded by min/max. ``value`` NaN is a failed
    poll (``ignoreNullValues: false``): after ``fallback_after`` in a row, ``fallback.replicas``
    (here ``max_replicas``), before that no change.
    """
    if math.isnan(value):
        desired = max_replicas if failures >= fallback_after else current
    else:
        ratio = value / (threshold * max(current, 1))
        desired = current if abs(ratio - 1.0) <= tolerance else math.ceil(value / threshold)
    return min(max(desired, min_replicas), max_replicas)


class KedaStandIn:
    """What a KEDA ScaledObject with a Prometheus trigger (AverageValue, threshold 1) does to the replicas."""

    def __init__(self, prom: PrometheusSource, reps: ProcessReplicaActuator, cfg: ModesE2EConfig, t0: float) -> None:
        self.prom, self.reps, self.cfg, self.t0 = prom, reps, cfg, t0
        self.timeline: list[dict[str, Any]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keda-scaledobject", daemon=True)

    def start(self) -> KedaStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.keda_polling_s):
            current = self.reps.get_replicas()
            try:
                value = self.prom.query(ADVICE_QUERY)
            except TelemetryError:
                value = math.nan
            self.failures = self.failures + 1 if math.isnan(value) else 0
            desired = scaled_object_replicas(value, current, self.failures, max_replicas=self.cfg.max_replicas)
            self.timeline.append({"t_s": round(time.time() - self.t0, 1), "advice": None if math.isnan(value)
                                  else value, "replicas": current, "set": desired})  # fmt: skip
            if desired != current:
                with contextlib.suppress(Exception):
                    self.reps.set_replicas(desired)


@contextlib.contextmanager
def _bench(cfg: ModesE2EConfig, work: Path, name: str) -> Iterator[tuple[Any, ...]]:
    """Redis, the replicas with their load, Prometheus scraping them and the controller's metrics port."""
    token = work / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    args = ["--cpu-us", str(cfg.cpu_us), "--gomaxprocs", str(cfg.gomaxprocs)]
    metrics = ControllerMetrics()
    port = free_port()
    server = metrics.serve(port)
    prom = LocalPrometheus(work / f"prom-{name}", controller=f"127.0.0.1:{port}", scrape_s=cfg.scrape_s)
    with RedisServer(directory=work / f"redis-{name}") as redis, LockedReplicas(args, token_file=token) as reps:
        splitter = LoadSplitter(reps)

        def changed(actuator: Any) -> None:
            splitter.reconcile(actuator)
            prom.set_targets([r.addr for r in reps.replicas])

        reps.pre_stop, reps.on_change = splitter.drain, changed
        reps.set_replicas(1)
        prom.start()
        try:
            yield redis, reps, splitter, prom, metrics
        finally:
            splitter.close()
            prom.stop()
            server.shutdown()


class Recorded:
    """The Prometheus source, keeping what each scrape returned (the telemetry the controller decided on)."""

    def __init__(self, source: PrometheusSource, t0: float) -> None:
        self.source, self.t0 = source, t0
        self.samples: list[dict[str, Any]] = []
        self.errors = 0

    def scrape(self) -> Any:
        try:
            sample = self.source.scrape()
        except TelemetryError:
            self.errors += 1
            raise
        self.samples.append({"t_s": round(time.time() - self.t0, 1), "cpu_util": _r(sample.cpu_util),
                             "p99_ms": _r(sample.p99_ms), "offered_qps": _r(sample.offered_qps),
                             "replicas_up": _r(sample.replicas)})  # fmt: skip
        return sample


def _r(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def _loop(cfg: ModesE2EConfig, mode: str, target_cpu: float, actuators: Actuators, source: Any,
          store: TelemetryStore | None, metrics: ControllerMetrics | None = None, *,
          behavior: bool = True) -> ControlLoop:  # fmt: skip
    # sync_s below the interval: the rule syncs on telemetry time, and a sample 1.99 s after the last
    # would skip a sync; a skipped sync answers "what runs", which in advise mode is a flapping advice.
    hpa = HPAConfig(target_cpu=target_cpu, sync_s=0.5 * cfg.interval_s, downscale_window_s=cfg.downscale_window_s,
                    min_replicas=1, max_replicas=cfg.max_replicas, metric_window_s=2 * cfg.interval_s,
                    metric_lag_s=0.0, pod_ready_s=0.0, behavior=behavior)  # fmt: skip
    bounds = KnobBounds(min_replicas=1, max_replicas=cfg.max_replicas)
    config = ControlConfig(SERVICE, interval_s=cfg.interval_s, slo_p99_ms=cfg.slo_p99_ms, hpa=hpa, mode=mode,
                           safety=SafetyConfig(bounds=bounds))  # fmt: skip
    return ControlLoop(config, actuators, scrape=source.scrape, store=store, metrics=metrics or ControllerMetrics())


def _wait_for_data(source: PrometheusSource, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(TelemetryError):
            if math.isfinite(source.query(source.config.query("p99_ms"))):
                return
        time.sleep(0.5)
    raise RlctlError(f"prometheus had no gosvc latency after {timeout_s} s")


def _drive(cfg: ModesE2EConfig, splitter: LoadSplitter, reps: ProcessReplicaActuator, t0: float) -> list[list[float]]:
    """The load schedule; the replica count every 0.5 s."""
    timeline = []
    while (t := time.time() - t0) < cfg.warm_s + cfg.step_s + cfg.cool_s:
        high = cfg.warm_s <= t < cfg.warm_s + cfg.step_s
        splitter.set_total(cfg.high_qps if high else cfg.low_qps)
        timeline.append([round(t, 1), reps.get_replicas()])
        time.sleep(0.5)
    return timeline


def _slo(series: list[dict[str, float]], cfg: ModesE2EConfig) -> dict[str, Any]:
    def share(lo: float, hi: float) -> dict[str, Any]:
        rows = [s for s in series if lo <= s["t_s"] < hi]
        over = int(sum(violated(s["p99_ms"], s["offered_qps"], cfg.slo_p99_ms) for s in rows))
        return {"seconds": len(rows), "seconds_over_slo": over, "share_over_slo": round(over / max(len(rows), 1), 3)}

    end_step = cfg.warm_s + cfg.step_s
    return {"before_step": share(2.0, cfg.warm_s), "step_first_10s": share(cfg.warm_s, cfg.warm_s + 10),
            "step_after_10s": share(cfg.warm_s + 10, end_step),
            "cool": share(end_step, end_step + cfg.cool_s)}  # fmt: skip


def _decisions(history: list[StepResult], t0: float) -> list[dict[str, Any]]:
    r = KNOB_COL["replicas"]
    return [{"t_s": round(s.time_s - t0, 1), "reason": s.reason, "ran": float(s.current[r]),
             "wants": float(s.safe[r]) if s.reason not in ("hold", "killswitch") else float(s.current[r]),
             "p99_ms": None if math.isnan(s.p99_ms) else round(s.p99_ms, 2)} for s in history]  # fmt: skip


def _lags(decisions: list[dict[str, Any]], replicas: list[list[float]]) -> list[float]:
    """Seconds from each change of the advice until the replicas ran it (None when they never did)."""
    lags, last = [], None
    for d in decisions:
        if d["wants"] != last and last is not None:
            done = [t for t, n in replicas if t >= d["t_s"] and n == d["wants"]]
            lags.append(round(done[0] - d["t_s"], 1) if done else math.nan)
        last = d["wants"]
    return lags


def run_advise(cfg: ModesE2EConfig, work: Path) -> dict[str, Any]:
    with _bench(cfg, work, "advise") as (redis, reps, splitter, prom, metrics):
        source = PrometheusSource(prom.url, PrometheusConfig(window=cfg.window, timeout_s=1.5), service=SERVICE)
        splitter.set_total(cfg.low_qps)
        _wait_for_data(source)
        t0 = time.time()
        writers = Writers(reps, t0)
        actuators = ReadOnlyActuators(Actuators(replicas=reps), mode="advise")
        seen_by_controller = Recorded(source, t0)
        loop = _loop(cfg, "advise", cfg.advise_target_cpu, actuators, seen_by_controller,
                     TelemetryStore(redis.url, timeout_s=0.5), metrics)  # fmt: skip
        keda = KedaStandIn(source, reps, cfg, t0).start()
        thread = run_in_thread(loop)
        try:
            replicas = _drive(cfg, splitter, reps, t0)
        finally:
            loop.stop()
            thread.join(15)
            keda.stop()
        end = time.time()
        queries = PrometheusSource(prom.url, PrometheusConfig(queries={"advice": ADVICE_QUERY,
                                                                       "replicas": REPLICAS_QUERY}))  # fmt: skip
        seen = {k: queries.range(k, t0, end, 1.0) for k in ("advice", "replicas")}
        records = TelemetryStore(redis.url).audit_records(SERVICE)
        per_s = per_second(splitter.records(), t0)
    decisions = _decisions(list(loop.history), t0)
    lags = [x for x in _lags(decisions, replicas) if math.isfinite(x)]
    refused = sum(1 for r in records if any("refused" in v for v in r.actuation.values()))
    return {
        "decisions": decisions, "telemetry": seen_by_controller.samples, "keda": keda.timeline,
        "replicas": replicas, "writers": writers.changes,
        "writes_by": writers.by(), "prometheus": seen, "per_second": per_s, "slo": _slo(per_s, cfg),
        "summary": {
            "decisions": len(decisions), "audit_records": len(records),
            "advice_changes": len(_lags(decisions, replicas)),
            "controller_replica_writes": writers.by().get(thread.name, 0), "refused_writes": refused,
            "keda_replica_writes": writers.by().get("keda-scaledobject", 0),
            "advice_to_replicas_lag_s": {"median": sorted(lags)[len(lags) // 2] if lags else None,
                                         "max": max(lags) if lags else None, "n": len(lags)},
            "max_advice": max((d["wants"] for d in decisions), default=None),
            "max_replicas_ran": max((n for _, n in replicas), default=None),
        },
    }  # fmt: skip


def run_shadow(cfg: ModesE2EConfig, work: Path, out: Path) -> dict[str, Any]:
    with _bench(cfg, work, "shadow") as (redis, reps, splitter, prom, metrics):
        source = PrometheusSource(prom.url, PrometheusConfig(window=cfg.window, timeout_s=1.5), service=SERVICE)
        splitter.set_total(cfg.low_qps)
        _wait_for_data(source)
        t0 = time.time()
        writers = Writers(reps, t0)
        running = _loop(cfg, "act", cfg.running_target_cpu, Actuators(replicas=reps), source, None)
        seen_by_shadow = Recorded(source, t0)
        shadow = _loop(cfg, "shadow", cfg.shadow_target_cpu, ReadOnlyActuators(Actuators(replicas=reps), mode="shadow"),
                       seen_by_shadow, TelemetryStore(redis.url, timeout_s=0.5), metrics,
                       behavior=False)  # fmt: skip
        running_thread = threading.Thread(target=running.run, name="running-autoscaler", daemon=True)
        running_thread.start()
        shadow_thread = run_in_thread(shadow)
        try:
            replicas = _drive(cfg, splitter, reps, t0)
        finally:
            for loop, thread in ((running, running_thread), (shadow, shadow_thread)):
                loop.stop()
                thread.join(15)
        per_s = per_second(splitter.records(), t0)
        reports = {}
        for name, extra in (
            ("audit", []),
            ("prometheus", ["--prometheus", prom.url, "--replicas-query", REPLICAS_QUERY]),
        ):
            path = out / f"shadow-report-{name}.json"
            argv = ["rlctl", "shadow-report", "--service", SERVICE, "--redis", redis.url,
                    "--slo-p99-ms", f"{cfg.slo_p99_ms:g}", *extra, "--json", str(path)]  # fmt: skip
            rlctl = Path(sys.executable).with_name("rlctl")
            proc = subprocess.run([str(rlctl) if rlctl.exists() else "rlctl", *argv[1:]], capture_output=True,
                                  text=True, timeout=120, check=False)  # fmt: skip
            if proc.returncode != 0:
                raise RlctlError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            reports[name] = {"command": argv, "report": json.loads(path.read_text())}
    return {
        "running": _decisions(list(running.history), t0), "shadow": _decisions(list(shadow.history), t0),
        "telemetry": seen_by_shadow.samples,
        "replicas": replicas, "writers": writers.changes, "writes_by": writers.by(), "per_second": per_s,
        "slo": _slo(per_s, cfg), "reports": {k: v["command"] for k, v in reports.items()},
        "summary": {
            "shadow_replica_writes": writers.by().get(shadow_thread.name, 0),
            "running_replica_writes": writers.by().get("running-autoscaler", 0),
            **{f"report_{k}": {f: v["report"][f] for f in SUMMARY_FIELDS} for k, v in reports.items()},
        },
    }  # fmt: skip


def run(cfg: ModesE2EConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    session("modes-e2e")  # every process is journaled: `rlctl chaos cleanup --backend local` stops leftovers
    with tempfile.TemporaryDirectory(prefix="rlctl-modes-") as tmp:
        work = Path(tmp)
        log.info("advise: the controller publishes, a KEDA stand-in scales")
        advise = run_advise(cfg, work)
        log.info("shadow: the HPA rule at %.2f acts, the shadow at %.2f records", cfg.running_target_cpu,
                 cfg.shadow_target_cpu)  # fmt: skip
        shadow = run_shadow(cfg, work, out)
    report = {"config": asdict(cfg), "advise": advise, "shadow": shadow,
              "host": {"load_average": os.getloadavg(), "cpus": os.cpu_count()}}  # fmt: skip
    report = _clean(report)
    (out / "modes.json").write_text(json.dumps(report, indent=1, allow_nan=False))
    return report


def _clean(x: Any) -> Any:
    """NaN -> None, tuples -> lists: strict JSON."""
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlctl.online.modes_e2e", description=__doc__.split("\n\n")[0])
    defaults = ModesE2EConfig()
    parser.add_argument("--out", type=Path, default=Path("out/modes-e2e"))
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ModesE2EConfig(**{k: v for k, v in vars(ns).items() if k != "out"})
    report = run(cfg, ns.out)
    print(json.dumps({"advise": report["advise"]["summary"], "advise_slo": report["advise"]["slo"],
                      "shadow": report["shadow"]["summary"], "shadow_slo": report["shadow"]["slo"],
                      "load_average": report["host"]["load_average"]}, indent=1))  # fmt: skip
    ok = report["advise"]["summary"]["controller_replica_writes"] == 0 and report["shadow"]["summary"][
        "shadow_replica_writes"] == 0  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
