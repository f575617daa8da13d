"""End to end on this host: real gosvc replicas, their load generator, redis-server, Ray Serve, the loop.

A load step (``low_qps`` for ``warm_s``, then ``high_qps`` for ``step_s``) is replayed twice
against the same service:

1. **static**: one replica, never changed — the configuration the step breaks;
2. **controlled**: the control loop (scrape -> Redis -> policy on Ray Serve, or the HPA rule
   -> safety -> local replica processes and ``/admin/knobs``) every ``interval_s``.

The load generator (``gosvc loadgen``, open loop, latency from the intended send time) runs
once per replica and the total rate is split evenly over the replicas, as a Kubernetes
Service would spread it; a replica is drained (its generator stopped) before it is stopped.
Per second, the service's P99 is the worst replica's P99. The verdict compares the share of
seconds over the SLO after the step (by :func:`rlctl.scoring.violated`: a second with load and no P99
counts as over), with the first ``reaction_s`` seconds after the step
reported separately (no controller can act before it has seen the step): the static run
"breaks" the SLO when more than half its seconds are over it; the controlled run "keeps" it
when no larger share than ``slo_tolerance`` (or its own pre-step share, the host's noise
floor) is over it.

Run it with one command::

    python -m rlctl.online.e2e --policy hpa            # the HPA rule as the controller
    python -m rlctl.online.e2e --policy default        # the shipped policy on Ray Serve

It writes ``e2e.json`` (and ``e2e.png``) into ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import secrets
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.baselines import HPAConfig
from rlctl.contract import KnobBounds
from rlctl.harness.journal import session
from rlctl.online.actuators import Actuators, AdminKnobsActuator, ProcessReplicaActuator
from rlctl.online.loop import ControlConfig, ControlLoop, StepResult, run_in_thread, summarize
from rlctl.online.policy import HttpPolicy
from rlctl.online.procs import LoadGen, RedisServer, free_port
from rlctl.online.safety import SafetyConfig
from rlctl.online.sources import ReplicaSetScraper
from rlctl.online.store import TelemetryStore
from rlctl.scoring import violated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class E2EConfig:
    """The experiment. Defaults fit a 2-core host shared with other work."""

    policy: str = "hpa"
    """``hpa`` (the HPA rule is the controller), ``default`` or an artifact folder (served by Ray Serve)."""
    cpu_us: int = 1000
    """CPU work per request, µs (so one replica at GOMAXPROCS 1 serves under 1,000 req/s)."""
    gomaxprocs: int = 1
    low_qps: float = 200.0
    high_qps: float = 700.0
    warm_s: float = 20.0
    step_s: float = 60.0
    reaction_s: float = 10.0
    """Seconds after the step excluded from the steady-state verdict (reported on their own)."""
    slo_p99_ms: float = 50.0
    slo_tolerance: float = 0.1
    """Share of seconds over the SLO still counted as "kept": a shared host is noisy (at low load,
    before the step, a few seconds go over the SLO too). The bar is this or the same run's
    pre-step share, whichever is higher."""
    interval_s: float = 1.0
    max_replicas: int = 4
    hpa_target_cpu: float = 0.35
    """The HPA rule's CPU target. On a host shared with other work a GOMAXPROCS-1 replica gets
    only part of a core, so it saturates at a CPU use (against GOMAXPROCS) well below 1: the
    Kubernetes default of 0.7 never scales here (it reads ~0.5 while latency explodes). 0.35 is
    the target tuned for this host, like the evaluation's ``hpa-tuned`` baseline."""
    num_cpus: int = 1
    """CPUs for Ray when a policy is served."""
    seed: int = 0


@dataclass
class RunResult:
    name: str
    per_second: list[dict[str, float]] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    replicas_timeline: list[tuple[float, int]] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)


class LoadSplitter:
    """One ``gosvc loadgen`` per replica; the total rate split evenly over them."""

    def __init__(self, replicas: ProcessReplicaActuator) -> None:
        self.replicas = replicas
        self.gens: dict[str, LoadGen] = {}
        self.retired: list[LoadGen] = []
        self.total = 0.0
        self._lock = threading.Lock()

    def set_total(self, qps: float) -> None:
        with self._lock:
            self.total = qps
            self._spread()

    def reconcile(self, _actuator: object = None) -> None:
        with self._lock:
            urls = {f"{u}/work" for u in self.replicas.urls()}
            for url in list(self.gens):
                if url not in urls:
                    self._retire(url)
            for url in urls - set(self.gens):
                self.gens[url] = LoadGen(url)
            self._spread()

    def drain(self, replica: Any) -> None:
        """Called before ``replica`` stops: move its load to the others first."""
        with self._lock:
            self._retire(f"{replica.url}/work")
            self._spread()
        time.sleep(0.2)

    def _retire(self, url: str) -> None:
        gen = self.gens.pop(url, None)
        if gen is not None:
            gen.set_rate(0)
            gen.stop()
            self.retired.append(gen)

    def _spread(self) -> None:
        for gen in self.gens.values():
            gen.set_rate(self.total / max(len(self.gens), 1))

    def records(self) -> list[dict[str, Any]]:
        return [r for g in [*self.gens.values(), *self.retired] for r in g.snapshot()]

    def close(self) -> None:
        with self._lock:
            for url in list(self.gens):
                self._retire(url)


def per_second(records: list[dict[str, Any]], t0: float) -> list[dict[str, float]]:
    """Loadgen interval records bucketed by wall-clock second since ``t0``: worst P99, summed rates."""
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("summary") or not r.get("target_qps"):
            continue
        buckets[int(r["time_s"] - t0)].append(r)
    out = []
    for sec in sorted(buckets):
        rs = buckets[sec]
        out.append({
            "t_s": float(sec),
            "p99_ms": max(float(r.get("p99_ms", math.nan)) for r in rs),
            "offered_qps": sum(float(r.get("offered_qps", 0.0)) for r in rs),
            "completed_qps": sum(float(r.get("completed_qps", 0.0)) for r in rs),
            "errors": sum(float(r.get("errors", 0.0)) for r in rs),
        })  # fmt: skip
    return out


def verdict(series: list[dict[str, float]], cfg: E2EConfig) -> dict[str, Any]:
    step_at = cfg.warm_s
    settle = step_at + cfg.reaction_s
    end = step_at + cfg.step_s

    def window(lo: float, hi: float) -> list[dict[str, float]]:
        return [s for s in series if lo <= s["t_s"] < hi]

    def stats(rows: list[dict[str, float]]) -> dict[str, Any]:
        p99 = np.array([r["p99_ms"] for r in rows]) if rows else np.array([np.nan])
        offered = np.array([r["offered_qps"] for r in rows]) if rows else np.array([0.0])
        # rlctl.scoring's rule: a second with load and no P99 (nothing answered) is over the SLO too.
        over = int(np.sum(violated(p99, offered, cfg.slo_p99_ms)))
        return {"seconds": len(rows), "seconds_over_slo": over,
                "share_over_slo": round(over / max(len(rows), 1), 3),
                "p99_of_per_second_p99_ms": round(float(np.nanpercentile(p99, 99)), 2) if rows else None,
                "median_per_second_p99_ms": round(float(np.nanmedian(p99)), 2) if rows else None,
                "max_per_second_p99_ms": round(float(np.nanmax(p99)), 2) if rows else None,
                "errors": int(sum(r["errors"] for r in rows))}  # fmt: skip

    return {"before_step": stats(window(2.0, step_at)), "reaction": stats(window(step_at, settle)),
            "after_reaction": stats(window(settle, end)), "slo_p99_ms": cfg.slo_p99_ms}  # fmt: skip


@contextlib.contextmanager
def _policy_server(cfg: E2EConfig) -> Iterator[str | None]:
    if cfg.policy == "hpa":
        yield None
        return
    from rlctl.online.serve import LocalServe  # local: Ray Serve (the serve extra) is heavy

    server = LocalServe(cfg.policy, port=free_port(), num_cpus=cfg.num_cpus).start()
    try:
        yield server.url
    finally:
        server.stop()


def run_once(cfg: E2EConfig, *, controlled: bool, policy_url: str | None, work: Path) -> RunResult:

    name = ("policy" if policy_url else "hpa") if controlled else "static"
    result = RunResult(name)
    token = work / "token"
    token.write_text(secrets.token_hex(32) + "\n")  # gosvc refuses tokens under 16 bytes
    args = ["--cpu-us", str(cfg.cpu_us), "--gomaxprocs", str(cfg.gomaxprocs)]
    with RedisServer(directory=work / f"redis-{name}") as redis, ProcessReplicaActuator(args, token_file=token) as reps:
        splitter = LoadSplitter(reps)
        reps.pre_stop = splitter.drain
        reps.on_change = splitter.reconcile
        reps.set_replicas(1)
        stop = threading.Event()
        loop: ControlLoop | None = None
        thread = None
        if controlled:
            bounds = KnobBounds(min_replicas=1, max_replicas=cfg.max_replicas)
            # The rule on the loop's own fresh scrape (no metrics-server age); a local replica
            # serves when set_replicas returns (GoService.start waits for it), so it is Ready at once.
            hpa = HPAConfig(target_cpu=cfg.hpa_target_cpu, sync_s=0.5 * cfg.interval_s, downscale_window_s=60.0,
                            min_replicas=1, max_replicas=cfg.max_replicas,
                            metric_window_s=2 * cfg.interval_s, metric_lag_s=0.0, pod_ready_s=0.0)  # fmt: skip
            config = ControlConfig("e2e", interval_s=cfg.interval_s, slo_p99_ms=cfg.slo_p99_ms, hpa=hpa,
                                   safety=SafetyConfig(bounds=bounds))  # fmt: skip
            # A saturated service answers /metrics slowly, exactly when the loop must act: be patient.
            scraper = ReplicaSetScraper(reps.metrics_urls, service="e2e", timeout_s=0.8 * cfg.interval_s)
            policy = HttpPolicy(policy_url, timeout_s=config.effective_policy_timeout_s) if policy_url else None
            loop = ControlLoop(config, Actuators(admin=AdminKnobsActuator(reps.admin_urls, token_file=token,
                                                                          timeout_s=0.5), replicas=reps),
                               scrape=scraper.scrape, store=TelemetryStore(redis.url, timeout_s=0.5),
                               policy=policy)  # fmt: skip
        splitter.set_total(cfg.low_qps)
        t0 = time.time()
        if loop is not None:
            with contextlib.suppress(Exception):
                scraper.scrape()  # prime the rates
            thread = run_in_thread(loop, stop=stop)
        try:
            while (t := time.time() - t0) < cfg.warm_s + cfg.step_s:
                splitter.set_total(cfg.high_qps if t >= cfg.warm_s else cfg.low_qps)
                result.replicas_timeline.append((round(t, 1), reps.get_replicas()))
                time.sleep(0.5)
        finally:
            stop.set()
            if thread is not None:
                thread.join(10)
            splitter.close()
        result.per_second = per_second(splitter.records(), t0)
        if loop is not None:
            result.decisions = summarize(list(loop.history))
            result.decisions["timeline"] = [_brief(r, t0) for r in loop.history]
    result.verdict = verdict(result.per_second, cfg)
    return result


def _brief(r: StepResult, t0: float) -> dict[str, Any]:
    return {"t_s": round(r.time_s - t0, 1), "reason": r.reason, "cause": r.cause,
            "replicas": float(r.applied[0]), "p99_ms": None if math.isnan(r.p99_ms) else round(r.p99_ms, 2),
            "saturation": None if math.isnan(r.saturation) else round(r.saturation, 3)}  # fmt: skip


def run(cfg: E2EConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    # Every process below (redis-server, replicas, load generators) is journaled in this session:
    # ``rlctl chaos cleanup --backend local`` stops them if this run is killed.
    session("e2e")
    with tempfile.TemporaryDirectory(prefix="rlctl-e2e-") as tmp:
        work = Path(tmp)
        log.info("static run: 1 replica, %s -> %s req/s", cfg.low_qps, cfg.high_qps)
        static = run_once(cfg, controlled=False, policy_url=None, work=work)
        with _policy_server(cfg) as url:
            log.info("controlled run: %s", "policy at " + url if url else "the HPA rule")
            controlled = run_once(cfg, controlled=True, policy_url=url, work=work)
    s, c = static.verdict["after_reaction"], controlled.verdict["after_reaction"]
    report = {
        "config": asdict(cfg),
        "static": asdict(static),
        "controlled": asdict(controlled),
        "summary": {
            "controller": controlled.name,
            "static_share_over_slo_after_step": s["share_over_slo"],
            "controlled_share_over_slo_after_step": c["share_over_slo"],
            "static_max_p99_ms_after_step": s["max_per_second_p99_ms"],
            "controlled_max_p99_ms_after_step": c["max_per_second_p99_ms"],
            "controlled_reaction_seconds_over_slo": controlled.verdict["reaction"]["seconds_over_slo"],
            "controlled_before_step_share_over_slo": controlled.verdict["before_step"]["share_over_slo"],
            "static_median_p99_ms_after_step": s["median_per_second_p99_ms"],
            "controlled_median_p99_ms_after_step": c["median_per_second_p99_ms"],
            "static_breaks_slo": s["share_over_slo"] > 0.5,
            "controlled_keeps_slo": c["share_over_slo"]
            <= max(cfg.slo_tolerance, controlled.verdict["before_step"]["share_over_slo"]),
            "max_replicas_used": max((n for _, n in controlled.replicas_timeline), default=1),
        },
    }
    (out / "e2e.json").write_text(json.dumps(report, indent=2))
    _plot(out / "e2e.png", static, controlled, cfg)
    return report


def _plot(path: Path, static: RunResult, controlled: RunResult, cfg: E2EConfig) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a convenience
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for run_ in (static, controlled):
        xs = [p["t_s"] for p in run_.per_second]
        ax1.plot(xs, [p["p99_ms"] for p in run_.per_second], label=run_.name)
        ax2.step([t for t, _ in run_.replicas_timeline], [n for _, n in run_.replicas_timeline], where="post",
                 label=run_.name)  # fmt: skip
    ax1.axhline(cfg.slo_p99_ms, color="red", linestyle="--", label="SLO")
    ax1.axvline(cfg.warm_s, color="grey", linestyle=":")
    ax1.set_yscale("log")
    ax1.set_ylabel("P99 per second, ms")
    ax1.legend()
    ax2.set_ylabel("replicas")
    ax2.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlctl.online.e2e", description=__doc__.split("\n\n")[0])
    defaults = E2EConfig()
    parser.add_argument("--policy", default=defaults.policy, help="hpa, default, or an artifact folder")
    parser.add_argument("--out", type=Path, default=Path("out/e2e"))
    for name in ("cpu_us", "gomaxprocs", "max_replicas", "num_cpus"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("low_qps", "high_qps", "warm_s", "step_s", "reaction_s", "slo_p99_ms", "slo_tolerance",
                 "interval_s", "hpa_target_cpu"):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = E2EConfig(**{k: v for k, v in vars(ns).items() if k != "out"})
    report = run(cfg, ns.out)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {ns.out / 'e2e.json'} and {ns.out / 'e2e.png'}")
    ok = report["summary"]["static_breaks_slo"] and report["summary"]["controlled_keeps_slo"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
