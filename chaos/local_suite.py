"""The policy against a tuned HPA on real Go processes: the suite behind ``rlctl validate-real``.

Each run is ``rlctl chaos run SCENARIO --backend local --online`` with the settings below:
every replica a ``gosvc serve`` in its own CPU cgroup, v1 or v2 (``REPLICA_CPU`` cores), so a
replica adds real capacity; decisions through the production path (Redis, Ray Serve for the
policy, the safety layer). The suite (``chaos/scenarios/real/``):

==================  ===================================================================
scenario            what happens
==================  ===================================================================
real-nasa-replay    the NASA trace, August 1995 (held out from training), 24x faster
real-flash-crowd    150 -> 650 QPS in 30 s
real-step-podkill   a step 200 -> 500 QPS, then two replicas SIGKILLed
real-delay-stress   380 QPS, a 3 ms network delay, then a CPU stressor in one replica
==================  ===================================================================

With a CPU split (the default of ``rlctl validate-real``: CPU 1 for the replicas, CPU 0 for
everything else on a 2-vCPU host) the replicas are confined to their own CPUs and the
quotas of ``max_replicas`` replicas must fit them (refused before anything starts).

Every scenario runs ``repeats`` times (seed = repeat), each controller once per repeat, the
controllers' order reversed on odd repeats so host drift does not always favour one. After
every scenario the summary (``summary.json``, ``summary.md``, ``summary.png``) is rewritten,
so an interrupted suite keeps what it measured. The summary gives per controller and
scenario the mean and range over repeats of SLO-violation seconds (client-side P99 over the
SLO), replica-seconds, CPU core-seconds the replicas used, recovery after each fault,
actions and flaps, the same in total, and the policy's ratios against ``hpa-tuned``
with the issue's goal: violations <= 0.5x, replica-seconds <= 1.0x, and steady-part
violations (outside fault windows and the minute after) no worse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chaos.backends.local import LocalBackend, LocalConfig
from chaos.backends.local.isolation_bench import ISOLATED, SHARED, Bench, FlatnessConfig
from chaos.backends.online import OnlinePath, audit_trail, served_policies
from chaos.backends.sim import SimBackend, SimConfig
from chaos.runner import (
    ControllerContext,
    build_report,
    check_controller_names,
    resolve_controller,
    run_experiment,
    score,
    write_report,
)
from chaos.spec import Scenario, load_scenario
from envs.loads import load_qps
from envs.profile import ServiceProfile
from rlctl.cgroups import CpuSplit
from rlctl.contract import KnobBounds, Knobs
from rlctl.errors import ConfigError
from rlctl.harness.isolation import HarnessIsolation
from rlctl.report import write_atomic

log = logging.getLogger(__name__)

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios" / "real"
SUITE: tuple[str, ...] = ("nasa-replay", "flash-crowd", "step-podkill", "delay-stress")
QUICK = "quick-flash"
POLICY = "ppo:default"
BASELINE = "hpa-tuned"
PROFILE = Path(__file__).resolve().parents[1] / "envs" / "profiles" / "testbed-real.yaml"
SUMMARY_SCHEMA = "rlctl.validate-real/v1"
GOAL_VIOLATION_RATIO = 0.5
GOAL_REPLICA_RATIO = 1.0
#: A scenario's peak may use at most this fraction of ``max_replicas`` replicas' capacity, so that
#: every violation is a controller's doing and not the test-bed's ceiling (issue 25).
SIZING_FRACTION = 0.7
SIZING_MODES = ("rescale", "refuse", "off")
_QPS_FIELDS = ("qps", "base_qps", "peak_qps", "start_qps", "end_qps", "step_qps")
SCORES = ("slo_violation_s", "steady_violation_s", "replica_seconds", "core_seconds_used", "actions", "flaps")


@dataclass(frozen=True)
class RealConfig:
    """The test-bed settings every run of the suite shares."""

    replica_cpu: float = 0.25
    """CPU quota per replica in cores (a cgroup each, v1 or v2): one replica's knee is about 170 QPS."""
    cpu_us: int = 1000
    """CPU work per request (``gosvc serve --cpu-us``)."""
    cpu_iters: int | None = None
    """Spin iterations per request for every run; None: ``cpu_us`` at the fastest of three spin-loop
    calibrations at the start of the suite (one per run let a neighbour's burst change the work)."""
    replicas: int = 2
    max_replicas: int = 4
    """Four replicas of 0.25 core fill the replicas' CPU (CPU 1 of a 2-vCPU host); the load generator,
    proxy, Redis, Ray and the controller have the other (see ``cpu_split``)."""
    cpu_split: CpuSplit | None = None
    """Replicas' and harness's CPUs (:meth:`rlctl.cgroups.CpuSplit.resolve`); None: shared (the 2026-11-28 layout)."""
    interval_s: float = 5.0
    controllers: tuple[str, ...] = (POLICY, BASELINE)
    repeats: int = 2
    first_repeat: int = 1
    """Number of the first repeat (its seed is one less): continue a suite in the same folder."""
    scenarios: tuple[str, ...] = SUITE
    sizing: str = "rescale"
    """``rescale``: scale a scenario whose peak is over ``SIZING_FRACTION`` of ``max_replicas``
    replicas' capacity down to it; ``refuse``: stop with the numbers instead; ``off``: run as written."""
    replica_capacity_qps: float | None = None
    """One replica's capacity; None: measured at the start (:func:`measure_replica_capacity`)."""
    gosvc: str | None = None
    predict: bool = True
    """Also run every scenario in the simulator (test-bed profile) and report sim against real."""
    extra: dict[str, Any] = field(default_factory=dict)


def scenario_path(name: str) -> Path:
    p = SCENARIO_DIR / f"{name}.yaml"
    if not p.exists():
        known = ", ".join(sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml")))
        raise ConfigError(f"--scenario {name!r}: no {p}; choose from {known}")
    return p


def machine() -> dict[str, Any]:
    """What the suite ran on (for the results' README)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass

    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "git_commit": run("git", "-C", str(SCENARIO_DIR), "rev-parse", "HEAD"),
        "load_average": list(os.getloadavg()),
    }


def peak_qps(spec: Scenario) -> float:
    """The highest per-second rate the load generator is asked for (the load without its Poisson noise)."""
    load = spec.load.model_copy(update={"noise": False})
    return float(np.max(load_qps(load, math.ceil(spec.duration_s) + 1, 1.0, np.random.default_rng(0))))


def scale_scenario(spec: Scenario, factor: float) -> Scenario:
    """``spec`` with every rate of its load multiplied by ``factor`` (a trace: its peak)."""
    load = spec.load.model_copy(update={f: getattr(spec.load, f) * factor for f in _QPS_FIELDS})
    return spec.model_copy(update={"load": load})


def suite_bench(cfg: RealConfig) -> Bench:
    """The flatness benchmark's plant with the suite's settings: its calibration and capacity probe."""
    bench_cfg = FlatnessConfig(
        split=cfg.cpu_split, max_replicas=cfg.max_replicas, replica_cpu=cfg.replica_cpu, cpu_us=cfg.cpu_us,
        cpu_iters=cfg.cpu_iters, gosvc=cfg.gosvc,
        layouts=(ISOLATED, SHARED) if cfg.cpu_split is not None else (SHARED,),
    )  # fmt: skip
    return Bench(bench_cfg, on_point=lambda msg: log.info("%s", msg))


def measure_replica_capacity(bench: Bench) -> dict[str, Any]:
    """One replica's capacity, as the suite runs it (quota, work per request, CPU split): ``rlctl probe``'s
    ramp and knee (:func:`rlctl.boundary.probe.run_probe`) through the fault proxy, on one replica in
    the replicas' CPU set (:meth:`chaos.backends.local.isolation_bench.Bench.capacity`)."""
    if bench.cpu_iters is None:
        bench.calibrate()
    return bench.capacity()


def size_scenarios(
    specs: dict[str, Scenario], capacity_qps: float, max_replicas: int, *, mode: str, source: str
) -> tuple[dict[str, Scenario], dict[str, Any]]:
    """Each scenario's peak against ``SIZING_FRACTION`` of ``max_replicas`` replicas' capacity.

    :returns: the scenarios to run (rescaled ones replaced) and, per scenario, its peak, the
        fraction of the capacity it uses and the factor applied.
    :raises ConfigError: ``mode`` is ``refuse`` and a peak is over the limit (the message names
        the scenario, its peak, the capacity and where it came from, and the fixes).
    """
    if mode not in SIZING_MODES:
        raise ConfigError(f"--sizing {mode!r}: choose {', '.join(SIZING_MODES)}")
    total = capacity_qps * max_replicas
    ceiling = SIZING_FRACTION * total
    out: dict[str, Scenario] = {}
    report: dict[str, Any] = {}
    for name, spec in specs.items():
        peak = peak_qps(spec)
        factor = 1.0
        if peak > ceiling and mode == "refuse":
            raise ConfigError(
                f"scenario {name}: its peak of {peak:.0f} QPS is {peak / total:.0%} of {max_replicas} replicas' "
                f"capacity ({max_replicas} x {capacity_qps:.0f} QPS, {source}); the suite allows "
                f"{SIZING_FRACTION:.0%} ({ceiling:.0f} QPS): pass --sizing rescale, lower the scenario's load, or "
                "raise --max-replicas (with a quota that still fits --replica-cpus)"
            )
        if peak > ceiling and mode == "rescale":
            factor = ceiling / peak
            log.warning(
                "scenario %s: peak %.0f QPS is %.0f%% of %d replicas' capacity (%.0f QPS each, %s); its load is "
                "scaled by %.3f to peak at %.0f QPS (%.0f%%)", name, peak, 100 * peak / total, max_replicas,
                capacity_qps, source, factor, ceiling, 100 * SIZING_FRACTION,
            )  # fmt: skip
        out[name] = scale_scenario(spec, factor) if factor != 1.0 else spec
        report[name] = {"peak_qps": round(peak, 1), "fraction_of_capacity": round(peak / total, 3),
                        "scale": round(factor, 4), "peak_qps_run": round(peak * factor, 1)}  # fmt: skip
    return out, report


def run_suite(
    cfg: RealConfig,
    out: Path,
    *,
    command: Sequence[str] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the suite, writing each run's report under ``out`` and the summary after each scenario."""
    controllers = check_controller_names(list(cfg.controllers))
    if cfg.repeats < 1:
        raise ConfigError(f"--repeats {cfg.repeats}: run each scenario at least once")
    if cfg.cpu_split is not None:
        cfg.cpu_split.check_quotas(
            cfg.replica_cpu or None, cfg.max_replicas, quota_source="--replica-cpu", max_source="--max-replicas"
        )
    specs = {name: load_scenario(scenario_path(name)) for name in cfg.scenarios}
    out.mkdir(parents=True, exist_ok=True)
    if cfg.sizing not in SIZING_MODES:
        raise ConfigError(f"--sizing {cfg.sizing!r}: choose {', '.join(SIZING_MODES)}")
    bench = suite_bench(cfg)
    sizing: dict[str, Any] | None = None
    capacity: dict[str, Any] = {}
    with contextlib.ExitStack() as pinned:
        if cfg.cpu_split is not None:
            pinned.enter_context(HarnessIsolation(cfg.cpu_split, command="validate-real"))
        cpu_iters = bench.calibrate()  # one work per request for every run of the suite
        if cfg.sizing != "off" and cfg.replica_capacity_qps is None:
            capacity = measure_replica_capacity(bench)
    if cfg.sizing != "off":
        if cfg.replica_capacity_qps is not None:
            capacity, source = {"capacity_qps": cfg.replica_capacity_qps}, "given by --replica-capacity"
        else:
            source = "measured by rlctl probe's ramp on one isolated replica"
        specs, per_scenario = size_scenarios(
            specs, float(capacity["capacity_qps"]), cfg.max_replicas, mode=cfg.sizing, source=source
        )
        sizing = {"mode": cfg.sizing, "fraction": SIZING_FRACTION, "replica_capacity": capacity, "source": source,
                  "scenarios": per_scenario}  # fmt: skip
    bounds = KnobBounds(max_replicas=cfg.max_replicas, max_gomaxprocs=4)
    knobs = Knobs(replicas=cfg.replicas, gomaxprocs=1)
    meta = {
        "schema": SUMMARY_SCHEMA,
        "command": shlex.join(command or sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "settings": {
            "replica_cpu_cores": cfg.replica_cpu, "cpu_us_per_request": cfg.cpu_us, "replicas": cfg.replicas,
            "cpu_iters_per_request": cpu_iters, "cpu_iters_calibrations": bench.calibrated,
            "max_replicas": cfg.max_replicas, "interval_s": cfg.interval_s, "repeats": cfg.repeats,
            "controllers": controllers, "scenarios": list(cfg.scenarios),
            "cpu_split": cfg.cpu_split.to_dict() if cfg.cpu_split is not None else None,
            "path": "gosvc loadgen -> gosvc proxy -> gosvc serve replicas (cgroup each); telemetry -> Redis "
            "Streams -> Ray Serve (policy) or the baseline's rule -> safety layer -> replica manager, /admin/knobs",
        },
        "sizing": sizing,
        **cfg.extra,
    }  # fmt: skip
    if cfg.predict:
        meta["simulator"] = {"profile": str(PROFILE.relative_to(SCENARIO_DIR.parents[2])),
                             "scenarios": simulate(list(cfg.scenarios), controllers, specs=specs)}  # fmt: skip
    reports: list[dict[str, Any]] = []
    policies = served_policies(controllers)
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(OnlinePath(policies))
        if cfg.cpu_split is not None:
            # After Redis and Ray are up (a policy deployment starting on one busy core can take minutes): the
            # isolation moves them, with every other process below this one, onto the harness's CPUs.
            iso = stack.enter_context(HarnessIsolation(cfg.cpu_split, command="validate-real"))
            meta["settings"]["cpu_split"]["harness_isolation"] = iso.detail
        for rep in range(cfg.first_repeat - 1, cfg.first_repeat - 1 + cfg.repeats):
            order = controllers if rep % 2 == 0 else list(reversed(controllers))
            for name, spec in specs.items():
                ctx = ControllerContext("local", spec, bounds=bounds, initial_knobs=knobs, seed=rep)
                run_dir = out / f"{spec.name}-r{rep + 1}"
                backend = LocalBackend(
                    LocalConfig(
                        gosvc=cfg.gosvc, replica_cpu=cfg.replica_cpu or None, cpu_us=cfg.cpu_us,
                        interval_s=cfg.interval_s, initial_knobs=knobs, bounds=bounds,
                        log_dir=run_dir / "logs", seed=rep, cpu_split=cfg.cpu_split, cpu_iters=cpu_iters,
                    )
                )  # fmt: skip
                if on_start is not None:
                    on_start(f"{spec.name} repeat {rep + 1}: {', '.join(order)}")

                def wrap(inner: Any, ctl: str) -> Any:
                    return path.controller(inner, ctl, bounds=bounds, interval_s=cfg.interval_s)

                run_id = time.strftime("%Y%m%d-%H%M%S") + f"-r{rep + 1}"
                records, facts = run_experiment(spec, backend, order, run_id=run_id, context=ctx, wrap=wrap)
                report = build_report(spec, records, backend="local", run_id=run_id,
                                      scenario_file=str(scenario_path(name).relative_to(SCENARIO_DIR.parents[1])),
                                      facts=facts)  # fmt: skip
                report["repeat"] = rep + 1
                report["load_average_after"] = list(os.getloadavg())
                write_report(report, run_dir, None)
                for ctl, res in report["results"].items():  # the audit stream dies with this Redis: keep it
                    online = res.get("extra", {}).get("online")
                    if online:
                        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in ctl)
                        audit_trail(path.store_url, online["service"], run_dir / "logs" / f"audit-{safe}.jsonl")
                reports.append(report)
                summary = summarize(reports, meta)
                write_summary(summary, out)
    return summarize(reports, meta)


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def summarize(reports: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Per scenario and controller: mean and range over repeats; totals; the policy's ratios to the baseline."""
    controllers: list[str] = []
    for r in reports:
        controllers += [c for c in r["controllers"] if c not in controllers]
    scenarios: dict[str, Any] = {}
    for r in reports:
        entry = scenarios.setdefault(r["scenario"]["name"], {"runs": [], "per_controller": {}})
        entry["runs"].append(str(Path(r["files"].get("json", "")).parent.name))
    for name, entry in scenarios.items():
        mine = [r for r in reports if r["scenario"]["name"] == name]
        for c in controllers:
            res = [r["results"][c] for r in mine if c in r["results"]]
            block: dict[str, Any] = {k: _stats([x.get(k) for x in res]) for k in SCORES}
            rec = [f.get("recovery_s") for x in res for f in x["recovery"]]
            block["recovery_s"] = _stats([v for v in rec if v is not None])
            block["unrecovered_faults"] = sum(1 for x in res for f in x["recovery"] if not f["recovered"])
            block["hpa_target_cpu"] = sorted({r["results"][c]["controller"].get("hpa_target_cpu") for r in mine
                                              if c in r["results"]} - {None})  # fmt: skip
            entry["per_controller"][c] = block
    totals: dict[str, Any] = {}
    for c in controllers:
        # Sum over scenarios of each scenario's mean (and of its min and max): a suite whose
        # repeats are incomplete still totals every scenario once.
        blocks = [e["per_controller"][c] for e in scenarios.values() if c in e["per_controller"]]
        totals[c] = {}
        for k in SCORES:
            have = [b[k] for b in blocks if b[k]["mean"] is not None]
            totals[c][k] = {
                "mean": float(sum(b["mean"] for b in have)) if have else None,
                "min": float(sum(b["min"] for b in have)) if have else None,
                "max": float(sum(b["max"] for b in have)) if have else None,
                "n": min((b["n"] for b in have), default=0),
            }
    verdict = None
    if POLICY in totals and BASELINE in totals:
        p, b = totals[POLICY], totals[BASELINE]

        def ratio(key: str) -> float | None:
            num, den = p[key]["mean"], b[key]["mean"]
            if num is None or den is None:
                return None
            return float(num / den) if den > 0 else (1.0 if num == 0 else None)

        steady_worse = []
        for name, entry in scenarios.items():
            pc = entry["per_controller"]
            if POLICY in pc and BASELINE in pc:
                ps, bs = pc[POLICY]["steady_violation_s"]["mean"], pc[BASELINE]["steady_violation_s"]["mean"]
                if ps is not None and bs is not None and ps > bs:
                    steady_worse.append({"scenario": name, "policy_s": ps, "baseline_s": bs})
        vr, rr = ratio("slo_violation_s"), ratio("replica_seconds")
        verdict = {
            "violation_ratio": vr,
            "replica_seconds_ratio": rr,
            "core_seconds_ratio": ratio("core_seconds_used"),
            "steady_worse": steady_worse,
            "goal": f"violations <= {GOAL_VIOLATION_RATIO}x and replica-seconds <= {GOAL_REPLICA_RATIO}x "
            f"{BASELINE}, never worse on the steady parts",
            "met": bool(vr is not None and rr is not None and vr <= GOAL_VIOLATION_RATIO
                        and rr <= GOAL_REPLICA_RATIO and not steady_worse),
        }  # fmt: skip
    return {**meta, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "controllers": controllers,
            "scenarios": scenarios, "totals": totals, "verdict": verdict}  # fmt: skip


def _cell(s: dict[str, Any], digits: int = 0) -> str:
    if s["mean"] is None:
        return "–"
    if s["n"] > 1 and s["max"] - s["min"] > 0:
        return f"{s['mean']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"
    return f"{s['mean']:.{digits}f}"


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as Markdown: settings, machine, per-scenario and total tables, the verdict."""
    cs = summary["controllers"]
    m, st = summary["machine"], summary["settings"]
    lines = [
        "# Real test-bed results: policy vs tuned HPA",
        "",
        f"Command: `{summary['command']}`  ",
        f"Started {summary['started']}, updated {summary['updated']}.  ",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']}, commit {m['git_commit'][:12]}.  ",
        f"Test-bed: {st['path']}; {st['replica_cpu_cores']} core per replica, {st['cpu_us_per_request']} µs CPU "
        f"per request, {st['replicas']} replicas at the start, at most {st['max_replicas']}, a decision every "
        f"{st['interval_s']:g} s.",
        *_split_and_sizing_lines(summary),
        "",
        "Cells: mean over repeats (range in brackets). Violation: seconds with the load generator's P99 over "
        "the SLO. Steady: the same outside fault windows and the minute after them. Core-s: CPU seconds the "
        "replica processes used. Flaps: replica changes reversing the previous one.",
        "",
    ]
    for name, entry in summary["scenarios"].items():
        pc = entry["per_controller"]
        lines += [f"## {name}", "", f"Runs: {', '.join(entry['runs'])}", ""]
        lines += ["| score | " + " | ".join(cs) + " |", "|---|" + "---:|" * len(cs)]
        labels = [("SLO violation (s)", "slo_violation_s", 0), ("steady violation (s)", "steady_violation_s", 0),
                  ("replica-seconds", "replica_seconds", 0), ("core-seconds used", "core_seconds_used", 0),
                  ("recovery after faults (s)", "recovery_s", 0), ("actions", "actions", 0),
                  ("flaps", "flaps", 0)]  # fmt: skip
        for label, key, d in labels:
            lines.append(f"| {label} | " + " | ".join(_cell(pc[c][key], d) if c in pc else "–" for c in cs) + " |")
        lines.append("| unrecovered faults | " + " | ".join(str(pc[c]["unrecovered_faults"]) if c in pc else "–"
                                                         for c in cs) + " |")  # fmt: skip
        targets = {c: pc[c]["hpa_target_cpu"] for c in cs if c in pc and pc[c]["hpa_target_cpu"]}
        if targets:
            lines.append("")
            lines.append("HPA CPU target from the simulator sweep: " +
                         ", ".join(f"{c} {v}" for c, v in targets.items()))  # fmt: skip
        lines.append("")
    sim = summary.get("simulator")
    if sim:
        lines += ["## The simulator's prediction against the real runs", "",
                  f"The simulator ran each scenario with the test-bed profile ({sim['profile']}), the same bounds, "
                  "starting knobs and controllers (in-process). Cells: simulated / real mean.", "",
                  "| scenario | controller | SLO violation (s) | replica-seconds |", "|---|---|---:|---:|"]  # fmt: skip
        for name, entry in summary["scenarios"].items():
            for c in cs:
                pred = sim["scenarios"].get(name, {}).get(c)
                real = entry["per_controller"].get(c)
                if pred is None or real is None:
                    continue
                rv, rr = real["slo_violation_s"]["mean"], real["replica_seconds"]["mean"]
                lines.append(f"| {name} | {c} | {pred['slo_violation_s']:.0f} / {rv:.0f} | "
                             f"{pred['replica_seconds']:.0f} / {rr:.0f} |")  # fmt: skip
        lines.append("")
    lines += ["## Total (sum over scenarios of their means; range: sum of their minima and maxima)", "",
              "| score | " + " | ".join(cs) + " |", "|---|" + "---:|" * len(cs)]  # fmt: skip
    for key in SCORES:
        lines.append(f"| {key} | " + " | ".join(_cell(summary["totals"][c][key]) for c in cs) + " |")
    v = summary.get("verdict")
    if v:

        def r(x: float | None) -> str:
            return "–" if x is None else f"{x:.2f}x"

        lines += ["", f"## Verdict: {'goal met' if v['met'] else 'goal not met'}", "",
                  f"Goal: {v['goal']}.", "",
                  f"- SLO-violation seconds: {r(v['violation_ratio'])} of {BASELINE}",
                  f"- replica-seconds: {r(v['replica_seconds_ratio'])}",
                  f"- core-seconds used: {r(v['core_seconds_ratio'])}"]  # fmt: skip
        for w in v["steady_worse"]:
            lines.append(
                f"- worse on the steady part of {w['scenario']}: {w['policy_s']:.0f} s vs {w['baseline_s']:.0f} s"
            )
    return "\n".join(lines) + "\n"


def _split_and_sizing_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    split = summary["settings"].get("cpu_split")
    if split:
        lines.append(f"CPUs: replicas on {split['replica_cpus']}, harness on {split['harness_cpus']} "
                     f"({split.get('harness_isolation') or split['source']}).  ")  # fmt: skip
    sizing = summary.get("sizing")
    if sizing:
        cap = sizing["replica_capacity"]["capacity_qps"]
        scaled = ", ".join(f"{n} x{v['scale']:.2f} (peak {v['peak_qps_run']:.0f} QPS)"
                           for n, v in sizing["scenarios"].items() if v["scale"] != 1.0)  # fmt: skip
        lines.append(f"Sizing ({sizing['mode']}): one replica's capacity {cap:.0f} QPS ({sizing['source']}); peaks at "
                     f"most {sizing['fraction']:.0%} of the most replicas' capacity; "
                     f"{('scaled: ' + scaled) if scaled else 'no scenario scaled'}.")  # fmt: skip
    return lines


def plot_summary(summary: dict[str, Any], path: Path) -> Path:
    """Bars per scenario: violation seconds and replica-seconds, one bar per controller (range as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = summary["controllers"]
    names = list(summary["scenarios"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(len(cs), 1)
    for ax, key, title in ((axes[0], "slo_violation_s", "SLO-violation seconds"),
                           (axes[1], "replica_seconds", "replica-seconds")):  # fmt: skip
        for i, c in enumerate(cs):
            stats = [summary["scenarios"][n]["per_controller"].get(c, {}).get(key, {"mean": None}) for n in names]
            mean = np.array([s["mean"] if s["mean"] is not None else np.nan for s in stats])
            lo = np.array([s["mean"] - s["min"] if s["mean"] is not None else 0 for s in stats])
            hi = np.array([s["max"] - s["mean"] if s["mean"] is not None else 0 for s in stats])
            x = np.arange(len(names)) + (i - (len(cs) - 1) / 2) * width
            ax.bar(x, mean, width, yerr=[lo, hi], capsize=3, label=c)
        ax.set_xticks(np.arange(len(names)), [n.replace("real-", "") for n in names], rotation=15)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Real test-bed: mean over repeats, range as error bars")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_summary(summary: dict[str, Any], out: Path) -> dict[str, str]:

    write_atomic(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_atomic(out / "summary.md", render_summary(summary))
    plot_summary(summary, out / "summary.png")
    return {"json": str(out / "summary.json"), "markdown": str(out / "summary.md"), "png": str(out / "summary.png")}


def simulate(
    names: Sequence[str],
    controllers: Sequence[str],
    *,
    profile: Path | None = None,
    seeds: Sequence[int] = (0,),
    specs: dict[str, Scenario] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """The simulator's prediction of the suite: per scenario and controller, mean scores over ``seeds``.

    The simulator runs the test-bed's profile (``envs/profiles/testbed-real.yaml``) with the
    suite's bounds and starting knobs; the controllers decide in-process (the sim backend).
    """

    cfg = RealConfig()
    prof = ServiceProfile.load(profile or PROFILE)
    bounds = KnobBounds(max_replicas=cfg.max_replicas, max_gomaxprocs=4)
    knobs = Knobs(replicas=cfg.replicas, gomaxprocs=1)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        spec = specs[name] if specs and name in specs else load_scenario(scenario_path(name))
        out[spec.name] = {}
        for c in controllers:
            runs = []
            for seed in seeds:
                backend = SimBackend(SimConfig(seed=seed, bounds=bounds, profile=prof, initial_knobs=knobs))
                ctl, _ = resolve_controller(c, ControllerContext("local", spec, bounds=bounds, initial_knobs=knobs,
                                                                 seed=seed))  # fmt: skip
                runs.append(score(backend.run(spec, ctl), spec))
            out[spec.name][c] = {k: float(np.mean([float(r.get(k) or 0.0) for r in runs]))
                                 for k in ("slo_violation_s", "replica_seconds", "actions", "flaps")}  # fmt: skip
    return out


def rebuild_summary(out: Path, *, predict: bool = True) -> dict[str, Any]:
    """Recompute ``out``'s summary from its run reports (e.g. after scoring changed, or to add the prediction)."""
    old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("*/report.json"))]
    if not reports:
        raise ConfigError(f"{out}: no */report.json to summarize; run the suite into it first")
    reports.sort(key=lambda r: (int(r.get("repeat", 1)), r.get("run_id", "")))
    keep = ("schema", "command", "started", "machine", "settings", "sizing")
    meta = {k: old[k] for k in keep if k in old}
    if predict:
        names = list(dict.fromkeys(Path(r["scenario"]["file"]).stem for r in reports if r["scenario"].get("file")))
        controllers = list(dict.fromkeys(c for r in reports for c in r["controllers"]))
        scales = {n: float(v["scale"]) for n, v in ((old.get("sizing") or {}).get("scenarios") or {}).items()}
        specs = {n: scale_scenario(load_scenario(scenario_path(n)), scales.get(n, 1.0)) for n in names}
        meta["simulator"] = {"profile": str(PROFILE.relative_to(SCENARIO_DIR.parents[2])),
                             "scenarios": simulate(names, controllers, specs=specs)}  # fmt: skip
    summary = summarize(reports, meta)
    write_summary(summary, out)
    return summary
