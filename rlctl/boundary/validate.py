"""Validate ``rlctl probe`` against ground truth on the gosvc test-bed, in one command.

    python -m rlctl.boundary.validate --cpu-shares 16384 --json out/validate.json
    python -m rlctl.boundary.validate --cpu-shares 16384 --configs cpu --skip-comparison \
        --knee-qps 786 --steady-minutes 10 --json /tmp/steady70.json
    python -m rlctl.boundary.validate --cpu-shares 16384 --skip-comparison --automaxprocs \
        --json out/automaxprocs.json

(``--steady-minutes`` without ``--skip-comparison`` measures the knee first.) On a host
shared with other work, ``--cpu-shares`` puts this process and everything it starts into
a CPU cgroup with that ``cpu.shares`` (v2: the same ratio in ``cpu.weight``) for the
duration (removed afterwards), so the neighbours cannot starve the test-bed and move its
capacity between phases.

For each service configuration (CPU-bound; allocation-heavy with GOGC=25; mutex-contended):

1. **coarse**: a quick probe (ramp 100 qps / 2 s) estimates the capacity ``K0``;
2. **ground truth**: a fine step sweep on a fresh service, levels of 4 s from 0.2 x K0 in
   steps of 1.4 x K0 / 21, stopping three levels past the crossing but never before 15
   levels (22 at most, i.e. up to 1.6 x K0). The sweep's knee is the load at
   which its P99 crosses 4x its low-load median (the median P99 of four warm-up levels,
   skipping levels over twice the lowest, which are another tenant's interference),
   interpolated linearly between the last level below and the first of two consecutive
   levels above (one level above alone is treated as noise). This is the same "P99 up
   300 %" criterion the detector uses, measured slowly (the Kneedle knee of the sweep up to
   that boundary is reported too, as a second reference). The sweep runs once before and
   once after the probe; the ground truth is their mean, their difference the drift of
   the shared host in between;
3. **probe**: ``rlctl probe``'s procedure (ramp from 0.2 x K0 in K0/20 steps of 4 s,
   detector defaults) on a fresh service; its Kneedle knee and its stop point are
   compared with the ground truth: the knee within +-10 %, the stop within two ramp
   steps of the crossing.

``--repeats N`` runs sweep, probe, sweep, probe, ... sweep (N probes, N + 1 sweeps) per
configuration: each probe is compared with the two sweeps around it, and the headline
figures are medians (the median probe knee against the median sweep knee; the median stop
delay against that knee), so a single drift of a shared host cannot decide the result.

Every phase restarts the service, so a backlog left by one overload cannot leak into the
next. Every start gets the same CPU-work calibration (``--iters-per-us``, by default the
median of five starts measured once at the beginning; see ``calibrate``), so every phase
measures the same service. Per-level and per-step P99 are aggregated identically (median of 1 s intervals).

``--steady-minutes M`` then holds 70 % of the first configuration's ground-truth knee for
M minutes and feeds the online detector (defaults: 5 s samples, 30-sample window) to
check that it never fires below the boundary.

``--automaxprocs`` runs the CPU-bound service inside a CPU quota of one core (the cgroup
``rlctl-probe``, v1 ``/sys/fs/cgroup/cpu/rlctl-probe`` or v2 ``/sys/fs/cgroup/rlctl-probe``;
the load generator stays outside it) with
GOMAXPROCS 2 and then 1, and reports CFS throttling and the knee of each. The cgroup is
always removed afterwards.

Everything runs on loopback. The host is shared, so figures carry its noise; the JSON
keeps every curve so a reader can judge.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rlctl import cgroups
from rlctl.boundary.detector import BoundaryDetector, DetectorConfig
from rlctl.boundary.knee import KNEE_METHODS, kneedle_knee, lower_envelope
from rlctl.boundary.probe import ProbeConfig, Ramp, resolve_loadgen, run_probe, write_report
from rlctl.errors import ChaosError, ConfigError, RlctlError
from rlctl.harness import cgroup as harness_cgroup
from rlctl.harness.process import spawn
from rlctl.telemetry.scrape import Scraper

logger = logging.getLogger("rlctl.boundary.validate")

#: Relative error of the probe's knee against the ground truth that counts as a pass.
KNEE_TOLERANCE = 0.10
#: Ramp steps after the ground-truth crossing by which the probe must have stopped.
STOP_WITHIN_STEPS = 2
#: P99 rise over the low-load median that defines the ground-truth knee (up 300 %).
GROUND_TRUTH_RISE = 4.0
SWEEP_LEVELS = 22
SWEEP_MIN_LEVELS = 15
SWEEP_STEP_S = 4.0
PROBE_STEPS_PER_K0 = 20
PROBE_STEP_S = SWEEP_STEP_S  # the same dwell time: a GOMEMLIMIT-bound heap needs time to fill


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """One gosvc configuration under test."""

    name: str
    description: str
    flags: tuple[str, ...]


#: The CPU-bound configuration's work per request, without its GOMAXPROCS.
CPU_WORK = ("--cpu-us", "1000")

CONFIGS: dict[str, ServiceConfig] = {
    # GOMAXPROCS 1 where parallelism is not the point: one core is what a shared two-core
    # host can hand the test-bed reliably, so its capacity does not follow the neighbours.
    "cpu": ServiceConfig("cpu", "CPU-bound: 1 ms of computation per request, GOMAXPROCS 1",
                         (*CPU_WORK, "--gomaxprocs", "1")),
    "alloc": ServiceConfig("alloc", "allocation-heavy: 8 x 256 KiB fresh buffers per request (no pool), GOGC 25, "
                           "GOMEMLIMIT 24 MiB, GOMAXPROCS 1",
                           ("--cpu-us", "50", "--alloc-bytes", "262144", "--alloc-count", "8", "--pool-size", "0",
                            "--gogc", "25", "--gomemlimit", "24MiB", "--gomaxprocs", "1")),
    "mutex": ServiceConfig("mutex", "mutex-contended: 1 ms of computation under one global lock per request, "
                           "GOMAXPROCS 2", ("--cpu-us", "50", "--mutex-us", "1000", "--gomaxprocs", "2")),
}  # fmt: skip


# ------------------------------------------------------------------------------ service

#: The name of this validation's session journal (``rlctl chaos cleanup --backend local`` reverts it after a crash).
COMMAND = "validate"


class Service:
    """``gosvc serve`` on a free loopback port; a context manager that always stops it."""

    def __init__(self, gosvc: str, flags: Sequence[str], log_path: Path, iters_per_us: float | None = None) -> None:
        """``iters_per_us``: the CPU-work calibration to start with (None: the run's, ``ITERS_PER_US``;
        0: let the service calibrate itself)."""
        self.log = open(log_path, "a")  # noqa: SIM115 - closed in stop()
        rate = ITERS_PER_US["value"] if iters_per_us is None else iters_per_us
        fixed = ("--iters-per-us", repr(rate)) if rate else ()
        # No admin API here (no token): a GOSVC_ADMIN_TOKEN of the environment must not enable it,
        # nor, if shorter than 16 bytes, stop the service from starting.
        self._managed = spawn(
            None, "gosvc-serve", [gosvc, "serve", "--addr", "127.0.0.1:0", *fixed, *flags], stdout=subprocess.PIPE,
            stderr=self.log, unset_env=("GOSVC_ADMIN_TOKEN",), command=COMMAND,
        )  # fmt: skip
        self.proc = self._managed.proc
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30):
            self.stop()
            raise ChaosError(f"gosvc serve {' '.join(flags)} did not start within 30 s; see {log_path}")
        #: The service's start-up line: its address, knobs and ``cpu_iters_per_us``.
        self.started: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.url = f"http://{self.started['addr']}"
        self.pid = self.proc.pid

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._managed.stop(grace_s=15.0)
        self.log.close()


#: Spin iterations per microsecond every service of a run is started with (0: each calibrates itself).
ITERS_PER_US = {"value": 0.0}
#: Service starts whose calibrations ``calibrate`` takes the median of.
CALIBRATION_STARTS = 5


def calibrate(gosvc: str, logs: Path, starts: int = CALIBRATION_STARTS) -> dict[str, Any]:
    """The test-bed's CPU-work calibration, measured once for a whole run.

    gosvc converts ``--cpu-us`` and ``--mutex-us`` into spin iterations with a calibration
    taken at each start; a start on a busy or just-woken core measures fewer iterations per
    microsecond, so that service does less work per request and has a higher capacity. One
    such start between two sweeps moves "the" knee. The median of ``starts`` starts, passed
    to every service of the run as ``--iters-per-us``, makes every phase the same service.
    """
    rates = []
    for _ in range(starts):
        with Service(gosvc, (), logs / "calibrate.log", iters_per_us=0) as svc:
            rates.append(float(svc.started["cpu_iters_per_us"]))
    value = statistics.median(rates)
    logger.info("calibration: %.1f Spin iterations per microsecond (median of %s)", value, [round(r, 1) for r in rates])
    return {"iters_per_us": value, "starts": rates, "source": f"median of {starts} service starts"}


#: cpu.shares given to the validation's own cgroups (0: leave the scheduler alone).
CPU_SHARES = {"shares": 0}


@contextlib.contextmanager
def cpu_cgroup(pid: int, name: str, *, quota_cores: float | None = None, shares: int = 0) -> Iterator[Path]:
    """Put ``pid`` (with its threads, and children it starts later) into a CPU cgroup (v1 or v2).

    ``quota_cores`` sets a CFS quota (period 100 ms); ``shares`` a relative weight in
    ``cpu.shares`` units (``cpu.weight`` on v2, see :func:`rlctl.cgroups.set_shares`). The
    tasks are always moved back to the root group and the cgroup removed afterwards; the group
    is journaled first (:mod:`rlctl.harness.cgroup`), so a killed validation leaves it to
    ``rlctl chaos cleanup --backend local``.
    """
    hierarchy = cgroups.detect(purpose="--automaxprocs and --cpu-shares", alternative="run without them")
    with harness_cgroup.scoped(hierarchy, name, quota_cores=quota_cores, shares=shares, command=COMMAND) as group:
        group.add(pid)
        logger.info("pid %d in %s (%s, quota %s cores, shares %s)", pid, group.path, hierarchy, quota_cores,
                    shares or "default")  # fmt: skip
        yield group.path
    logger.info("removed %s", group.path)


def cpu_quota_cgroup(pid: int, cores: float = 1.0) -> contextlib.AbstractContextManager[Path]:
    """The one-core CFS quota of ``--automaxprocs`` (with the run's cpu.shares, if any)."""
    return cpu_cgroup(pid, "rlctl-probe", quota_cores=cores, shares=CPU_SHARES["shares"])


# ------------------------------------------------------------------------------ phases

#: Wait for the host's 1-minute load average to fall below this before each phase (0: don't).
QUIET_LOADAVG = {"threshold": 0.0, "max_wait_s": 600.0}
PHASES: list[dict[str, Any]] = []


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Record the host load around a phase, after waiting for a quiet host if asked to."""
    waited = 0.0
    threshold, max_wait = QUIET_LOADAVG["threshold"], QUIET_LOADAVG["max_wait_s"]
    while threshold and loadavg() > threshold and waited < max_wait:
        time.sleep(10.0)
        waited += 10.0
    started = time.time()
    record: dict[str, Any] = {"phase": name, "waited_s": waited, "loadavg_start": loadavg()}
    try:
        yield
    finally:
        record["loadavg_end"] = loadavg()
        record["duration_s"] = round(time.time() - started, 1)
        PHASES.append(record)


def _probe(url: str, gosvc: str, ramp: Ramp, max_qps: float, **kw: Any) -> dict[str, Any]:
    config = ProbeConfig.from_cli(url, loadgen=gosvc, ramp=ramp, max_qps=max_qps, **kw)
    return run_probe(config)


def coarse_capacity(config: ServiceConfig, gosvc: str, logs: Path) -> float:
    """A quick probe's stop point: the scale for the sweep and the fine probe."""
    with phase(f"{config.name}-coarse"), Service(gosvc, config.flags, logs / f"{config.name}-coarse.log") as svc:
        report = _probe(svc.url, gosvc, Ramp(100, 100, 2), 20_000, profile_dir=str(logs / "profiles"))
    k0 = rule_first_held_qps(report) or float(report["stopped_at_qps"])
    logger.info("%s: coarse capacity %.0f qps (stopped by %s)", config.name, k0, report["stopped_by"])
    return k0


def rule_first_held_qps(probe: dict[str, Any]) -> float | None:
    """The ramp step where the probe's rule first held: its stop step, less the confirming
    steps when it confirmed on whole steps (intervals confirm inside the crossing step)."""
    if probe["stopped_by"] != "detector":
        return None
    confirming = probe["detector"]["consecutive"] - 1 if probe.get("confirmed_by", "steps") == "steps" else 0
    return float(probe["stopped_at_qps"]) - confirming * float(probe["ramp"]["step_qps"])


def robust_warmup(p99: Sequence[float], n: int = 4, ratio: float = 2.0) -> list[int]:
    """Indices of the warm-up levels, chosen as the detector chooses them.

    Levels are taken in order; one whose P99 is over ``ratio`` times the lowest so far is
    interference and skipped (and earlier ones over ``ratio`` x a new lowest are dropped),
    until ``n`` consistent levels are collected or ``3 n`` levels were seen.
    """
    kept: list[int] = []
    for i, v in enumerate(p99):
        if i >= 3 * n or len(kept) >= n:
            break
        if not math.isfinite(v):
            continue
        lowest = min([v] + [p99[j] for j in kept])
        kept = [j for j in kept if p99[j] <= ratio * lowest]
        if v <= ratio * lowest:
            kept.append(i)
    return kept


def ground_truth(curve: Sequence[dict[str, Any]], baseline_levels: int = 4) -> dict[str, Any]:
    """The ground-truth knee of a sweep curve (see the module docstring)."""
    loads = [float(p["qps"]) for p in curve]
    p99 = [float(p["p99_ms"]) if p["p99_ms"] is not None else math.nan for p in curve]
    warm = robust_warmup(p99, baseline_levels)
    base = statistics.median(p99[i] for i in warm) if warm else math.nan
    threshold = GROUND_TRUTH_RISE * base
    over = [v > threshold for v in p99]
    begin = (warm[-1] + 1) if warm else len(p99)
    first = next((i for i in range(max(begin, 1), len(over) - 1) if over[i] and over[i + 1]), None)
    result: dict[str, Any] = {
        "definition": f"load where P99 crosses {GROUND_TRUTH_RISE:g}x the median P99 of the {baseline_levels} "
        "warm-up levels, interpolated; first of two consecutive levels above",
        "warmup_levels_qps": [loads[i] for i in warm],
        "baseline_p99_ms": base,
        "threshold_p99_ms": threshold,
        "kneedle_knee_qps": kneedle_knee(*lower_envelope(loads, p99)),
    }
    if first is None:
        return {**result, "knee_qps": None, "first_level_over_qps": None, "kneedle_to_boundary_qps": None}
    # The same Kneedle the probe runs, on the sweep up to where the probe's rule would stop it.
    result["kneedle_to_boundary_qps"] = kneedle_knee(*lower_envelope(loads[: first + 2], p99[: first + 2]))
    lo, hi = loads[first - 1], loads[first]
    below = p99[first - 1] if p99[first - 1] <= threshold else base
    frac = (threshold - below) / (p99[first] - below) if p99[first] > below else 1.0
    return {**result, "knee_qps": lo + (hi - lo) * min(max(frac, 0.0), 1.0), "first_level_over_qps": hi}


def sweep(config: ServiceConfig, gosvc: str, k0: float, logs: Path, tag: str = "") -> dict[str, Any]:
    """Fine step sweep, levels of 4 s from 0.2 x K0 up to 1.6 x K0 (22 levels at most).

    It stops three levels past the crossing, but never before 15 levels.
    """
    start = max(10.0, round(0.2 * k0))
    step = max(5.0, round(1.4 * k0 / (SWEEP_LEVELS - 1)))
    detector = DetectorConfig(window=4, warmup=4, consecutive=3, require=("p99_rise",), any_of=(),
                              learn_after_warmup=False, interval_s=SWEEP_STEP_S,
                              warmup_outlier_ratio=2.0)  # fmt: skip
    with (
        phase(f"{config.name}-sweep-{tag}"),
        Service(gosvc, config.flags, logs / f"{config.name}-sweep{tag}.log") as svc,
    ):
        report = _probe(
            svc.url, gosvc, Ramp(start, step, SWEEP_STEP_S), start + step * (SWEEP_LEVELS - 1),
            detector=detector, warmup_steps=4, consecutive=3, profile_dir=str(logs / "profiles"),
            min_steps=SWEEP_MIN_LEVELS, max_scrape_failures=1_000_000,  # /metrics times out when overloaded
            confirm_intervals=0,  # the ground truth is judged on whole levels
        )  # fmt: skip
    truth = ground_truth(report["curve"])
    levels = len(report["curve"])
    logger.info("%s: sweep %s knee %s qps over %d levels", config.name, tag, _q(truth["knee_qps"]), levels)
    return {"ramp": report["ramp"], "levels": len(report["curve"]), "curve": report["curve"], **truth}


def fine_probe(config: ServiceConfig, gosvc: str, k0: float, logs: Path, **kw: Any) -> dict[str, Any]:
    """``rlctl probe`` with its defaults and a ramp scaled to K0 (``confirm_intervals`` may be passed)."""
    start = max(10.0, round(0.2 * k0))
    step = max(5.0, round(k0 / PROBE_STEPS_PER_K0))
    flags = kw.pop("flags", config.flags)
    with phase(f"{config.name}-probe"), Service(gosvc, flags, logs / f"{config.name}-probe.log") as svc:
        cgroup = kw.pop("cgroup", None)
        ctx = cpu_quota_cgroup(svc.pid, cgroup) if cgroup else contextlib.nullcontext()
        with ctx:
            report = _probe(svc.url, gosvc, Ramp(start, step, PROBE_STEP_S), 3 * k0,
                            profile_dir=str(logs / "profiles"), **kw)  # fmt: skip
    logger.info("%s: probe knee %s qps, stopped at %.0f", config.name, _q(report["knee_qps"]), report["stopped_at_qps"])
    return report


def compare(truth: dict[str, Any], probe: dict[str, Any]) -> dict[str, Any]:
    """The probe against the ground truth: knee error and how late the ramp stopped."""
    gt, knee = truth["knee_qps"], probe["knee_qps"]
    step = probe["ramp"]["step_qps"]
    crossing = rule_first_held_qps(probe)
    out: dict[str, Any] = {
        "ground_truth_knee_qps": gt,
        "probe_knee_qps": knee,
        "probe_knee_qps_second_method": probe["knee_qps_second_method"],
        "probe_stopped_at_qps": probe["stopped_at_qps"],
        "probe_stopped_by": probe["stopped_by"],
        "probe_rule_first_held_at_qps": crossing,
        "probe_step_qps": step,
    }
    if gt is None or knee is None:
        return {**out, "knee_error": None, "knee_within_10pct": False, "stop_steps_after_crossing": None,
                "stopped_within_2_steps": False}  # fmt: skip
    steps_after = (probe["stopped_at_qps"] - gt) / step
    kneedle_gt = truth.get("kneedle_to_boundary_qps")
    return {
        **out,
        "sweep_kneedle_to_boundary_qps": kneedle_gt,
        "knee_error_vs_sweep_kneedle": (knee - kneedle_gt) / kneedle_gt if kneedle_gt else None,
        "stop_intervals_after_crossing": steps_after * probe["ramp"]["step_s"] / probe["ramp"]["interval_s"],
        "knee_error": (knee - gt) / gt,
        "knee_within_10pct": abs(knee - gt) / gt <= KNEE_TOLERANCE,
        "stop_steps_after_crossing": steps_after,
        "stopped_within_2_steps": probe["stopped_by"] == "detector" and steps_after <= STOP_WITHIN_STEPS,
    }


def validate_config(
    config: ServiceConfig,
    gosvc: str,
    logs: Path,
    repeats: int = 1,
    confirm_intervals: int = 0,
    knee_method: str = "kneedle",
) -> dict[str, Any]:
    """Coarse estimate, then sweep, probe, sweep, probe, ... sweep (``repeats`` probes).

    Each probe is judged against the mean of the two sweeps around it (their difference
    shows how much the host drifted meanwhile). With more than one repeat the headline
    comparison pools them: the median probe knee against the median of all sweeps, and
    the median of the probes' stop delays, so one drift of the shared host does not
    decide the result.
    """
    k0 = coarse_capacity(config, gosvc, logs)
    sweeps = [sweep(config, gosvc, k0, logs, "before" if repeats == 1 else "0")]
    probes: list[dict[str, Any]] = []
    for i in range(repeats):
        probes.append(fine_probe(config, gosvc, k0, logs, confirm_intervals=confirm_intervals, knee_method=knee_method))
        write_report(
            probes[-1], logs / (f"{config.name}-probe.json" if repeats == 1 else f"{config.name}-probe{i}.json")
        )
        sweeps.append(sweep(config, gosvc, k0, logs, "after" if repeats == 1 else str(i + 1)))
    per_repeat = [compare(_truth(sweeps[i : i + 2]), probes[i]) for i in range(repeats)]
    if repeats == 1:
        truth, comparison = _truth(sweeps), per_repeat[0]
    else:
        truth = _truth(sweeps, statistics.median)
        comparison = pooled_comparison(truth, probes, per_repeat)
    return {
        "config": dataclasses.asdict(config),
        "coarse_capacity_qps": k0,
        "comparison": comparison,
        "ground_truth": truth,
        "repeats": [
            {"ground_truth_knee_qps": c["ground_truth_knee_qps"], "comparison": c} for c in per_repeat
        ] if repeats > 1 else [],
        "sweeps": {"before": sweeps[0], "after": sweeps[1]} if repeats == 1
                  else {str(i): w for i, w in enumerate(sweeps)},
        "probe": _probe_summary(probes[0]) if repeats == 1 else [_probe_summary(p) for p in probes],
    }  # fmt: skip


def _truth(sweeps: Sequence[dict[str, Any]], centre: Any = None) -> dict[str, Any]:
    """The ground truth of some sweeps: their mean knee (or ``centre`` of them) and spread."""
    knees = [s["knee_qps"] for s in sweeps if s["knee_qps"] is not None]
    kneedles = [s["kneedle_to_boundary_qps"] for s in sweeps if s.get("kneedle_to_boundary_qps")]
    pick = centre or (lambda xs: sum(xs) / len(xs))
    return {
        "knee_qps": pick(knees) if knees else None,
        "kneedle_to_boundary_qps": pick(kneedles) if kneedles else None,
        "sweep_knees_qps": [s["knee_qps"] for s in sweeps],
        "sweep_spread": (max(knees) - min(knees)) / min(knees) if len(knees) >= 2 else None,
        "definition": sweeps[0]["definition"],
    }


def pooled_comparison(
    truth: dict[str, Any], probes: Sequence[dict[str, Any]], per_repeat: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Repeated probes against repeated sweeps: medians of each (see :func:`validate_config`).

    The knee error is the median probe knee's against the median sweep knee; the stop delay
    the median over the probes of (stop load - median sweep knee) / ramp step.
    """
    gt = truth["knee_qps"]
    knees = [p["knee_qps"] for p in probes if p["knee_qps"] is not None]
    stops = [c["stop_steps_after_crossing"] for c in per_repeat if c.get("stop_steps_after_crossing") is not None]
    out: dict[str, Any] = {
        "ground_truth_knee_qps": gt,
        "probe_knee_qps": statistics.median(knees) if knees else None,
        "probe_knees_qps": [p["knee_qps"] for p in probes],
        "probe_stopped_by": [p["stopped_by"] for p in probes],
        "stop_steps_after_crossing_each": [c.get("stop_steps_after_crossing") for c in per_repeat],
        "knee_error_each": [c.get("knee_error") for c in per_repeat],
        "probe_step_qps": statistics.median(p["ramp"]["step_qps"] for p in probes),
    }
    if gt is None or not knees or len(stops) < len(probes):
        return {**out, "knee_error": None, "knee_within_10pct": False, "stop_steps_after_crossing": None,
                "stopped_within_2_steps": False}  # fmt: skip
    knee = out["probe_knee_qps"]
    steps_after = statistics.median((p["stopped_at_qps"] - gt) / p["ramp"]["step_qps"] for p in probes)
    return {
        **out,
        "knee_error": (knee - gt) / gt,
        "knee_within_10pct": abs(knee - gt) / gt <= KNEE_TOLERANCE,
        "stop_steps_after_crossing": steps_after,
        "stopped_within_2_steps": all(p["stopped_by"] == "detector" for p in probes)
        and steps_after <= STOP_WITHIN_STEPS,
    }


def _probe_summary(probe: dict[str, Any]) -> dict[str, Any]:
    keys = ("knee_qps", "knee_qps_second_method", "knee_method", "knee_agreement", "max_qps_at_slo",
            "stopped_at_qps", "stopped_by", "stop_reason", "ramp", "curve", "settings")  # fmt: skip
    return {k: probe[k] for k in keys}


# ------------------------------------------------------------------------------ steady


def steady(config: ServiceConfig, gosvc: str, rate: float, minutes: float, logs: Path) -> dict[str, Any]:
    """Hold ``rate`` for ``minutes`` with the online detector (defaults) watching 5 s samples."""
    detector = BoundaryDetector(DetectorConfig(), pprof_url=None)
    samples: list[dict[str, Any]] = []
    with phase(f"{config.name}-steady"), Service(gosvc, config.flags, logs / f"{config.name}-steady.log") as svc:
        scraper = Scraper(f"{svc.url}/metrics")
        scraper.prime()
        argv = [gosvc, "loadgen", "--url", f"{svc.url}/work", "--rate", f"{rate:g}",
                "--duration", f"{minutes * 60:g}s", "--interval", "5s"]  # fmt: skip
        loadgen = spawn(None, "loadgen", argv, stdout=subprocess.PIPE, command=COMMAND)
        try:
            assert loadgen.proc.stdout is not None
            for raw in loadgen.proc.stdout:
                line = json.loads(raw)
                if line.get("summary"):
                    continue
                try:
                    server = scraper.scrape(offered_qps=float(line["offered_qps"]))
                except Exception as exc:  # keep the run going on a missed scrape; the detector sees NaN
                    logger.warning("scrape failed: %s", exc)
                    continue
                sample = dataclasses.replace(server, p50_ms=float(line["p50_ms"]), p99_ms=float(line["p99_ms"]))
                event = detector.update(sample)
                samples.append({"t_s": line["t_s"], "offered_qps": line["offered_qps"], "p99_ms": line["p99_ms"],
                                "goroutines": sample.goroutines, "alloc_bytes_per_s": sample.alloc_bytes_per_s,
                                "fired": [s.name for s in detector.last_signals if s.fired],
                                "event": event is not None})  # fmt: skip
        finally:
            loadgen.stop(grace_s=5.0)  # at the end of its output it has exited: this only forgets it

    p99 = sorted(s["p99_ms"] for s in samples)
    return {
        "rate_qps": rate,
        "minutes": minutes,
        "samples": len(samples),
        "events": len(detector.events),
        "detector_fired": bool(detector.events),
        "samples_with_any_signal": sum(1 for s in samples if s["fired"]),
        "p99_ms_median": p99[len(p99) // 2] if p99 else None,
        "p99_ms_max": p99[-1] if p99 else None,
        "baseline": detector.baseline().to_dict(),
        "series": samples,
    }


# ------------------------------------------------------------------------------ quota


def automaxprocs(gosvc: str, logs: Path) -> dict[str, Any]:
    """The CPU-bound service under a one-core quota with GOMAXPROCS 2 against 1."""
    base = CONFIGS["cpu"]
    flags1, flags2 = (*CPU_WORK, "--gomaxprocs", "1"), (*CPU_WORK, "--gomaxprocs", "2")
    with phase("quota-coarse"), Service(gosvc, flags1, logs / "quota-coarse.log") as svc, cpu_quota_cgroup(svc.pid):
        coarse = _probe(svc.url, gosvc, Ramp(50, 50, 2), 20_000, profile_dir=str(logs / "profiles"))
    k0 = float(coarse["stopped_at_qps"])
    logger.info("quota: coarse capacity with GOMAXPROCS 1 %.0f qps", k0)
    out: dict[str, Any] = {"quota_cores": 1.0, "coarse_capacity_qps": k0}
    for procs, flags in (("gomaxprocs_2", flags2), ("gomaxprocs_1", flags1)):
        cfg = dataclasses.replace(base, name=f"quota-{procs}")
        report = fine_probe(cfg, gosvc, k0, logs, flags=flags, cgroup=1.0)
        write_report(report, logs / f"quota-{procs}-probe.json")
        throttled = [p["cfs_throttled_fraction"] for p in report["curve"] if p["cfs_throttled_fraction"] is not None]
        periods = sum(p["cfs_periods"] or 0 for p in report["curve"])
        throttled_periods = sum(p["cfs_throttled_periods"] or 0 for p in report["curve"])
        out[procs] = {
            "knee_qps": report["knee_qps"],
            "knee_qps_second_method": report["knee_qps_second_method"],
            "stopped_at_qps": report["stopped_at_qps"],
            "stopped_by": report["stopped_by"],
            "max_qps_at_slo": report["max_qps_at_slo"],
            "settings": report["settings"],
            "throttled_fraction_mean": sum(throttled) / len(throttled) if throttled else None,
            "throttled_fraction_max": max(throttled) if throttled else None,
            "throttled_fraction_first_step": throttled[0] if throttled else None,
            "cfs_periods": periods,
            "cfs_throttled_periods": throttled_periods,
            "throttled_fraction_overall": throttled_periods / periods if periods else None,
            "curve": report["curve"],
        }
    k2, k1 = out["gomaxprocs_2"]["knee_qps"], out["gomaxprocs_1"]["knee_qps"]
    out["knee_lower_with_gomaxprocs_2"] = k2 is not None and k1 is not None and k2 < k1
    t2, t1 = out["gomaxprocs_2"]["throttled_fraction_overall"], out["gomaxprocs_1"]["throttled_fraction_overall"]
    out["more_throttling_with_gomaxprocs_2"] = t2 is not None and t1 is not None and t2 > t1
    return out


# ------------------------------------------------------------------------------ main


def _q(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def run_phases(args: argparse.Namespace, names: list[str], gosvc: str, logs: Path, results: dict[str, Any]) -> None:
    """The comparison, steady and quota runs asked for, into ``results``."""
    if not args.skip_comparison:
        for name in names:
            try:
                results["configs"][name] = validate_config(
                    CONFIGS[name], gosvc, logs, args.repeats, args.confirm_intervals, args.knee_method
                )
            except RlctlError as exc:  # one broken configuration must not lose the others' figures
                logger.error("%s failed: %s: %s", name, type(exc).__name__, exc)
                results["configs"][name] = {"error": f"{type(exc).__name__}: {exc}", "comparison": {}}
        comps = [r["comparison"] for r in results["configs"].values()]
        results["all_knees_within_10pct"] = all(c.get("knee_within_10pct") for c in comps)
        results["all_stopped_within_2_steps"] = all(c.get("stopped_within_2_steps") for c in comps)
    if args.steady_minutes > 0:
        first = names[0]
        knee = args.knee_qps or results["configs"].get(first, {}).get("ground_truth", {}).get("knee_qps")
        if not knee:
            raise ConfigError("--steady-minutes needs a knee: run the comparison or pass --knee-qps")
        results["steady"] = steady(CONFIGS[first], gosvc, round(0.7 * knee), args.steady_minutes, logs)
        results["steady"]["config"] = first
        results["steady"]["knee_qps"] = knee
    if args.automaxprocs:
        results["automaxprocs"] = automaxprocs(gosvc, logs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlctl.boundary.validate", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--configs", default="cpu,alloc,mutex", help="comma-separated subset of cpu,alloc,mutex")
    parser.add_argument("--steady-minutes", type=float, default=0.0, help="hold 70%% of the first knee this long")
    parser.add_argument("--automaxprocs", action="store_true", help="also run the one-core cgroup quota comparison")
    parser.add_argument("--skip-comparison", action="store_true", help="only the steady or quota runs")
    parser.add_argument("--knee-qps", type=float, help="knee for --steady-minutes when --skip-comparison")
    parser.add_argument(
        "--repeats", type=int, default=1, help="probes per configuration, each between two sweeps; medians judged"
    )
    parser.add_argument(
        "--confirm-intervals", type=int, default=0, help="the probes' --confirm-intervals (0: whole steps)"
    )
    parser.add_argument(
        "--knee-method",
        default="kneedle",
        help="the probes' --knee-method: kneedle, two-segment or crossing (the sweeps' ground truth does not change)",
    )
    parser.add_argument(
        "--iters-per-us",
        type=float,
        help="start every service with this CPU-work calibration (default: the median of "
        f"{CALIBRATION_STARTS} starts, measured once; 0: every service calibrates itself)",
    )
    parser.add_argument("--loadgen", help="gosvc binary (default: deploy/gosvc/bin/gosvc)")
    parser.add_argument("--logs", type=Path, help="directory for service logs and probe reports")
    parser.add_argument(
        "--cpu-shares",
        type=int,
        default=0,
        help="run the test-bed and load generator in a CPU cgroup (v1 or v2) with this cpu.shares "
        "(e.g. 8192) so other tenants of a shared host cannot starve them; removed afterwards",
    )
    parser.add_argument(
        "--quiet-loadavg",
        type=float,
        default=0.0,
        help="before each phase wait (up to 10 min) for the 1-min load average to drop below this",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    if args.iters_per_us is not None and not (args.iters_per_us >= 0 and math.isfinite(args.iters_per_us)):
        raise ConfigError(
            f"--iters-per-us {args.iters_per_us}: give a positive calibration (Spin iterations per microsecond, "
            "about 600 on this class of host), or 0 to let every service calibrate itself"
        )
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: give at least 1 (probes per configuration)")
    if args.knee_method not in KNEE_METHODS:
        raise ConfigError(f"--knee-method {args.knee_method!r}: use one of {', '.join(KNEE_METHODS)}")
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise ConfigError(f"--configs: unknown {sorted(unknown)}; choose from {sorted(CONFIGS)}")
    gosvc = resolve_loadgen(args.loadgen)
    QUIET_LOADAVG["threshold"] = args.quiet_loadavg
    CPU_SHARES["shares"] = args.cpu_shares
    logs = args.logs or args.json.with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "tolerance": KNEE_TOLERANCE,
        "stop_within_steps": STOP_WITHIN_STEPS,
        "cpu_shares": args.cpu_shares,
        "host_cpus": os.cpu_count(),
        "knee_method": args.knee_method,
        "confirm_intervals": args.confirm_intervals,
        "repeats": args.repeats,
        "configs": {},
    }
    # Children (gosvc, loadgen) inherit this process's cgroup.
    own = cpu_cgroup(os.getpid(), "rlctl-validate", shares=args.cpu_shares) if args.cpu_shares else None
    with own or contextlib.nullcontext():
        if args.iters_per_us is None:
            results["calibration"] = calibrate(gosvc, logs)
        else:
            source = "--iters-per-us" if args.iters_per_us else "each service calibrates itself (--iters-per-us 0)"
            results["calibration"] = {"iters_per_us": args.iters_per_us or None, "starts": [], "source": source}
        ITERS_PER_US["value"] = results["calibration"]["iters_per_us"] or 0.0
        run_phases(args, names, gosvc, logs, results)
    results["duration_s"] = round(time.time() - started, 1)
    results["phases"] = PHASES
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    brief = {k: v for k, v in results.items() if k in ("all_knees_within_10pct", "all_stopped_within_2_steps")}
    comparisons = {k: v["comparison"] for k, v in results["configs"].items()}
    sys.stdout.write(json.dumps({"comparisons": comparisons, **brief, "duration_s": results["duration_s"]}, indent=2))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RlctlError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        sys.exit(exc.exit_code)
