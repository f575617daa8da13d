"""Calibration: fit a :class:`~envs.profile.ServiceProfile` to latency measured on a real service.

The data are P99 (and P50) latency against offered load, measured open loop at a few
runtime-knob settings (GOMAXPROCS, GOGC, object-pool size) — by :mod:`envs.testbed` against a
running ``gosvc``, or read from ``rlctl probe`` reports (:func:`load_probe_report`). The fit
has two stages:

1. **Direct estimates** from the service's own counters (when the data carry them):
   bytes allocated per request (pool off), the pooled fraction (pool on vs off), the
   scannable heap ``live + roots = alloc_rate x 100 / (GOGC x GC cycles/s)`` (the pacer's
   runway, go.dev/doc/gc-guide), and the GC CPU per cycle split into a fixed and a
   per-byte part by non-negative least squares across settings.
2. **Least squares on log latency** (:func:`scipy.optimize.least_squares`, soft-L1 loss so
   one noisy step cannot drag the fit): residuals ``log P_sim - log P_real`` for P99 (and
   P50 at half weight, which separates the round trip from the service-time tail) between
   every measured point and the simulator's steady-state latency at the same load and
   knobs (:func:`simulate_points`: the real physics, :func:`envs.model.service.step_services`,
   one replica, the host's cores as the CPU quota). The fitted parameters are those the
   data can identify (:func:`choose_params`): service time ``s_cpu_ms`` (``s_mem_ms`` tied
   to it at a fixed ratio), its variability ``cs2``, the round trip ``rtt_ms`` and its
   spread ``rtt_std_ms``; ``usl_sigma`` when GOMAXPROCS varies, ``sched_overhead`` when
   GOMAXPROCS exceeds the quota, ``gc_assist_ms`` when the GC knobs vary.

Quality is the RMSE of the log-P99 residuals and the median absolute relative P99 error;
:func:`holdout_report` scores the fitted profile on settings and loads not used in the fit
(P99 at fractions of the measured knee, and the knee itself, located by Kneedle on both the
measured and the simulated curve at the same loads).

A measured step longer than the service can keep up with builds a backlog; the simulator
reproduces it with :attr:`Point.overload_s`, the time a backlog grows before the step's
median reporting interval ends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.model.faults import neutral_effects
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile
from rlctl.contract import COL, Knobs
from rlctl.errors import ConfigError
from rlctl.scoring import STEADY_MARGIN_S

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
NAN = float("nan")

#: JSON schema tag of calibration data and reports.
DATA_SCHEMA = "rlctl.calibration-data/v1"
REPORT_SCHEMA = "rlctl.calibration/v1"
#: Squared coefficient of variation of inter-arrival times per arrival process of the load generator.
ARRIVAL_CA2: dict[str, float] = {"poisson": 1.0, "uniform": 0.0}
#: Goal of the holdout check (the issue "Close the sim-to-real gap").
GOAL_P99_MEDIAN_ABS_REL_ERROR = 0.25
GOAL_KNEE_REL_ERROR = 0.10
#: Points per measured level of the fine load grid both knees are located on (:func:`knee_report`).
KNEE_GRID_PER_LEVEL = 16
#: Fractions of the measured knee at which holdout P99 is compared.
HOLDOUT_KNEE_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.1)


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, slots=True, order=True)
class Setting:
    """The runtime knobs of one measured curve (the knobs ``/admin/knobs`` sets)."""

    gomaxprocs: int
    gogc: int
    object_pool_size: int

    @classmethod
    def parse(cls, text: str, *, source: str = "--settings") -> Setting:
        """``"P,GOGC,POOL"``, e.g. ``"2,50,1024"``."""
        try:
            p, g, k = (int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(
                f"{source} {text!r}: want GOMAXPROCS,GOGC,POOL as three integers, e.g. 2,50,1024"
            ) from None
        if p < 1 or g < 1 or k < 0:
            raise ConfigError(f"{source} {text!r}: need GOMAXPROCS >= 1, GOGC >= 1 and POOL >= 0, e.g. 2,50,1024")
        return cls(p, g, k)

    @classmethod
    def parse_list(cls, text: str, *, source: str = "--settings") -> tuple[Setting, ...]:
        """Settings separated by ``;`` or spaces: ``"1,50,0;2,200,1024"``."""
        parts = [p for p in text.replace(";", " ").split() if p]
        if not parts:
            raise ConfigError(f"{source} is empty; give settings like '1,50,0;2,200,1024'")
        return tuple(cls.parse(p, source=source) for p in parts)

    def knobs(self) -> Knobs:
        """Contract knobs of this setting for one replica (turbo and prefetch as the host runs them)."""
        return Knobs(replicas=1, gomaxprocs=self.gomaxprocs, gogc=self.gogc, object_pool_size=self.object_pool_size)

    def admin_body(self) -> dict[str, int]:
        return {"gomaxprocs": self.gomaxprocs, "gogc": self.gogc, "object_pool_size": self.object_pool_size}

    @property
    def label(self) -> str:
        return f"P{self.gomaxprocs}/GOGC{self.gogc}/pool{self.object_pool_size}"

    def __str__(self) -> str:
        return f"{self.gomaxprocs},{self.gogc},{self.object_pool_size}"


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counter increases over a step, from the service's ``/metrics`` (NaN where unknown)."""

    duration_s: float = NAN
    requests: float = NAN
    cpu_s: float = NAN
    gc_cycles: float = NAN
    gc_cpu_s: float = NAN
    alloc_bytes: float = NAN
    live_bytes: float = NAN

    def __add__(self, other: ServerStats) -> ServerStats:
        def add(a: float, b: float) -> float:
            return b if math.isnan(a) else a if math.isnan(b) else a + b

        sums = {f: add(getattr(self, f), getattr(other, f)) for f in _STAT_SUMS}
        live = other.live_bytes if math.isfinite(other.live_bytes) else self.live_bytes
        return ServerStats(**sums, live_bytes=live)


_STAT_SUMS = ("duration_s", "requests", "cpu_s", "gc_cycles", "gc_cpu_s", "alloc_bytes")


@dataclass(frozen=True, slots=True)
class Point:
    """One measured load level of one setting: client latency plus server counters.

    ``p99_ms`` is the median of the per-interval P99s of every repeat of the step (a
    robust "typical P99" on a noisy host); ``overload_s`` is how long a backlog could grow
    before the median interval ended, which the simulator uses past saturation.
    """

    setting: Setting
    qps: float
    p99_ms: float
    p50_ms: float
    error_rate: float = 0.0
    served_qps: float = NAN
    duration_s: float = 2.0
    overload_s: float = 1.25
    repeats: int = 1
    arrivals: str = "poisson"
    role: str = "fit"
    knee_fraction: float | None = None
    p99_intervals_ms: tuple[float, ...] = ()
    server: ServerStats = field(default_factory=ServerStats)
    foreign_cores: float = NAN
    """CPU (cores) other tenants of the host used during the step (busy CPU minus service and load generator)."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["setting"] = dataclasses.asdict(self.setting)
        out["p99_intervals_ms"] = list(self.p99_intervals_ms)
        return _strict_json(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "calibration data") -> Point:
        try:
            values = dict(data)
            values["setting"] = Setting(**values["setting"])
            values["server"] = ServerStats(**{k: _num(v) for k, v in (values.get("server") or {}).items()})
            values["p99_intervals_ms"] = tuple(_num(v) for v in values.get("p99_intervals_ms") or ())
            for key in (
                "qps",
                "p99_ms",
                "p50_ms",
                "error_rate",
                "served_qps",
                "duration_s",
                "overload_s",
                "foreign_cores",
            ):
                if key in values:
                    values[key] = _num(values[key])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: malformed point {data!r} ({exc}); write points with Point.to_dict()"
            ) from None


@dataclass
class CalibrationData:
    """Measured points plus what the simulator needs to reproduce the set-up."""

    points: list[Point]
    cpu_quota_cores: float
    source: dict[str, Any] = field(default_factory=dict)

    def select(self, role: str | None = None, setting: Setting | None = None) -> list[Point]:
        return [
            p for p in self.points if (role is None or p.role == role) and (setting is None or p.setting == setting)
        ]

    def settings(self, role: str | None = None) -> list[Setting]:
        return sorted({p.setting for p in self.select(role)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DATA_SCHEMA,
            "cpu_quota_cores": self.cpu_quota_cores,
            "source": self.source,
            "points": [p.to_dict() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "calibration data") -> CalibrationData:
        if data.get("schema") != DATA_SCHEMA:
            raise ConfigError(f"{source}: schema {data.get('schema')!r} is not {DATA_SCHEMA!r}")
        points = [Point.from_dict(p, source=source) for p in data.get("points", [])]
        return cls(points=points, cpu_quota_cores=float(data["cpu_quota_cores"]), source=dict(data.get("source", {})))

    def merge(self, other: CalibrationData) -> CalibrationData:
        if not math.isclose(self.cpu_quota_cores, other.cpu_quota_cores, rel_tol=0.01):
            raise ConfigError(
                f"cannot fit data from hosts with different CPU quotas together ({self.cpu_quota_cores:g} vs "
                f"{other.cpu_quota_cores:g} cores); calibrate each set-up separately"
            )
        merged = {**self.source, "merged": [*self.source.get("merged", []), other.source]}
        return CalibrationData(self.points + other.points, self.cpu_quota_cores, merged)


def _num(v: Any) -> float:
    return NAN if v is None else float(v)


def _strict_json(value: Any) -> Any:
    """NaN and infinities become None so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def host_cores() -> float:
    """CPUs this process may run on (the affinity mask), the quota when no cgroup limits it."""
    import os

    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


# ------------------------------------------------------------------------------ probe reports


def load_probe_report(path: str | Path, *, cpu_quota_cores: float | None = None) -> CalibrationData:
    """Points from an ``rlctl probe`` report (schema ``rlctl.probe/v1``).

    The probe's load generator spaces requests uniformly, its steps follow each other
    without a pause, and every step row carries the server's rates, which are turned back
    into counters here. Steps with an error rate over 50 % are dropped (the service was
    down, not slow).
    """
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"--from-probe {p}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--from-probe {p}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict) or report.get("schema") != "rlctl.probe/v1":
        raise ConfigError(
            f"--from-probe {p}: not an rlctl probe report (schema rlctl.probe/v1); write one with `rlctl probe`"
        )
    settings = report.get("settings") or {}
    missing = [k for k in ("gomaxprocs", "gogc", "object_pool_size") if settings.get(k) is None]
    if missing:
        raise ConfigError(
            f"--from-probe {p}: the report's settings lack {missing}; probe a service whose /metrics exposes the "
            "knobs (go_sched_gomaxprocs_threads, go_gc_gogc_percent, gosvc_knob_object_pool_size)"
        )
    setting = Setting(int(settings["gomaxprocs"]), int(settings["gogc"]), int(settings["object_pool_size"]))
    quota = cpu_quota_cores or settings.get("cpu_quota_cores") or host_cores()
    ramp = report.get("ramp") or {}
    step_s, interval_s = float(ramp.get("step_s", 5.0)), float(ramp.get("interval_s", 1.0))
    points = []
    for row in report.get("curve") or []:
        qps, p99 = _num(row.get("offered_qps", row.get("qps"))), _num(row.get("p99_ms"))
        err = _num(row.get("error_rate"))
        if not (math.isfinite(qps) and math.isfinite(p99) and qps > 0) or err > 0.5:
            continue
        duration = _num(row.get("duration_s")) if row.get("duration_s") else step_s
        served = _num(row.get("served_qps"))
        gomaxprocs = float(setting.gomaxprocs)
        stats = ServerStats(
            duration_s=duration,
            requests=served * duration,
            cpu_s=_num(row.get("cpu_util")) * quota * duration,
            gc_cycles=_num(row.get("gc_cycles_per_s")) * duration,
            gc_cpu_s=_num(row.get("gc_cpu_fraction")) * gomaxprocs * duration,
            alloc_bytes=_num(row.get("alloc_bytes_per_s")) * duration,
        )
        points.append(
            Point(setting, qps, p99, _num(row.get("p50_ms")), error_rate=0.0 if math.isnan(err) else err,
                  served_qps=served, duration_s=duration, overload_s=(step_s + interval_s) / 2,
                  arrivals="uniform", server=stats)
        )  # fmt: skip
    if not points:
        raise ConfigError(f"--from-probe {p}: its curve has no step with a finite load and P99")
    return CalibrationData(points, float(quota), {"probe_report": str(p), "url": report.get("url")})


#: Seconds after a fault ends, and after a replica-count change, whose latency is not steady state.
#: (The margin :mod:`rlctl.scoring` leaves out of a run's steady part.)
SUITE_SETTLE_S = STEADY_MARGIN_S
SUITE_REPLICA_SETTLE_S = 10.0
#: Seconds at the start of a run (warm-up) left out.
SUITE_WARMUP_S = 15.0
#: Width of the per-replica load bins a suite's seconds are grouped into, req/s.
SUITE_BIN_QPS = 10.0
#: Fewest seconds in a bin for it to become a point.
SUITE_MIN_SECONDS = 5


def load_suite_reports(path: str | Path, *, cpu_quota_cores: float, holdout_from_repeat: int = 2) -> CalibrationData:
    """Points from a real chaos suite (``rlctl validate-real --out DIR``: ``DIR/*/report.json``).

    Every controller's one-second series counts. Seconds are kept only in steady state: past
    the warm-up, outside every fault window and the :data:`SUITE_SETTLE_S` after it, with the
    replica count unchanged for :data:`SUITE_REPLICA_SETTLE_S` and no errors. The balancer
    spreads the load evenly, so one second is one replica at ``offered / replicas``; seconds
    are grouped by runtime knobs, replica count and a :data:`SUITE_BIN_QPS` bin of that load,
    and a group of at least :data:`SUITE_MIN_SECONDS` becomes a point (its P99 the median of
    the seconds' P99s, like the ramps'). Runs of repeat ``holdout_from_repeat`` and later
    become ``holdout_level`` points: the profile fitted on the first repeat is scored on runs
    it has not seen. The object-pool size is not in the series; the suite's is the default.
    """
    root = Path(path)
    files = sorted(root.glob("*/report.json"))
    if not files:
        raise ConfigError(
            f"--from-suite {root}: no */report.json under it; give the --out folder of rlctl validate-real"
        )
    default_pool = Knobs().object_pool_size
    groups: dict[tuple[str, Setting, int, int], list[tuple[float, float, float]]] = {}
    runs: list[str] = []
    for f in files:
        try:
            report = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--from-suite {f}: not a readable report ({exc})") from None
        repeat = int(report.get("repeat") or 1)
        role = "fit" if repeat < holdout_from_repeat else "holdout_level"
        windows = [(float(w["start_s"]), float(w["end_s"]) + SUITE_SETTLE_S) for w in report.get("faults") or []]
        runs.append(f.parent.name)
        for result in (report.get("results") or {}).values():
            s = result.get("series") or {}
            t = np.asarray(s.get("t_s", []), dtype=np.float64)
            if t.size == 0:
                continue
            reps = np.asarray(s["replicas"], dtype=np.float64)
            changed = np.concatenate([[t[0]], t[1:][np.diff(reps) != 0]])
            for i in range(t.size):
                ti = float(t[i])
                since = ti - float(changed[changed <= ti].max())
                if ti < SUITE_WARMUP_S or since < SUITE_REPLICA_SETTLE_S or any(a <= ti <= b for a, b in windows):
                    continue
                qps, p99, p50 = _num(s["offered_qps"][i]), _num(s["p99_ms"][i]), _num(s["p50_ms"][i])
                ok = reps[i] >= 1 and qps > 0 and math.isfinite(p99) and math.isfinite(p50)
                if not ok or float(s["error_rate"][i] or 0.0) > 0:
                    continue
                per = qps / reps[i]
                setting = Setting(int(s["gomaxprocs"][i]), int(s["gogc"][i]), default_pool)
                key = (role, setting, int(reps[i]), int(per // SUITE_BIN_QPS))
                groups.setdefault(key, []).append((per, p99, p50))
    points = []
    for (role, setting, _, _), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        if len(rows) < SUITE_MIN_SECONDS:
            continue
        points.append(
            Point(setting, statistics.fmean(r[0] for r in rows), statistics.median(r[1] for r in rows),
                  statistics.median(r[2] for r in rows), duration_s=1.0, overload_s=1.0, repeats=len(rows),
                  arrivals="uniform", role=role, p99_intervals_ms=tuple(r[1] for r in rows))
        )  # fmt: skip
    if not any(p.role == "fit" for p in points):
        raise ConfigError(
            f"--from-suite {root}: no steady seconds of a first repeat to fit (runs: {', '.join(runs)}); "
            "run the suite for longer or with fewer faults"
        )
    source = {"suite": str(root), "runs": runs, "holdout_from_repeat": holdout_from_repeat,
              "steady_state": {"warmup_s": SUITE_WARMUP_S, "after_fault_s": SUITE_SETTLE_S,
                               "after_replica_change_s": SUITE_REPLICA_SETTLE_S, "bin_qps": SUITE_BIN_QPS,
                               "min_seconds": SUITE_MIN_SECONDS}}  # fmt: skip
    return CalibrationData(points, float(cpu_quota_cores), source)


# ------------------------------------------------------------------------------ simulator


def _profile_arrays(profile: ServiceProfile, n: int) -> dict[str, Array]:
    return {k: np.full(n, float(v)) for k, v in profile.to_dict().items()}


def simulate_points(
    profile: ServiceProfile,
    points: Sequence[Point],
    *,
    cpu_quota_cores: float | None = None,
    qps: npt.ArrayLike | None = None,
) -> tuple[Array, Array]:
    """The simulator's ``(P50, P99)`` in ms at each point's load and knobs, one replica.

    Steady state as ``tests/test_physics.py``'s ``steady()`` evaluates it: a few steps at
    constant load (the GC pacer's fixed point settles) with the backlog and the package
    temperature reset before each, then a last step of ``overload_s`` seconds whose
    backlog (zero below saturation) adds its wait. The CPU quota and the cores free are
    ``cpu_quota_cores`` (default: the profile's). ``qps`` overrides the points' loads.
    """
    n = len(points)
    prof = _profile_arrays(profile, n)
    if cpu_quota_cores is not None:
        prof["cpu_quota_cores"][:] = cpu_quota_cores
        prof["cores_free"][:] = cpu_quota_cores
    prof["ca2"] = np.array([ARRIVAL_CA2.get(p.arrivals, profile.ca2) for p in points])
    knobs = np.stack([p.setting.knobs().to_array() for p in points])
    load = np.asarray([p.qps for p in points] if qps is None else qps, dtype=np.float64)
    overload = np.array([max(p.overload_s, 1e-3) for p in points])
    serving = np.ones(n)
    eff = neutral_effects(n)
    state = ServiceState.initial(prof)
    cool = prof["t_amb_c"] + 20.0
    out = None
    for _ in range(3):
        state.backlog[:] = 0.0
        state.temp_c[:] = cool
        out = step_services(prof, knobs, serving, load, eff, state, 0.0, 1.0)
    state.backlog[:] = 0.0
    state.temp_c[:] = cool
    # step_services takes one dt; points with different overload times run as one batch per value.
    p50, p99 = np.empty(n), np.empty(n)
    for dt in np.unique(overload):
        rows = overload == dt
        sub_state = ServiceState(state.temp_c.copy(), state.backlog.copy(), state.gc_cycles_per_s.copy())
        out = step_services(prof, knobs, serving, load, eff, sub_state, 0.0, float(dt))
        p50[rows] = out.telemetry[rows, COL["p50_ms"]]
        p99[rows] = out.telemetry[rows, COL["p99_ms"]]
    return p50, p99


def simulated_knee(
    profile: ServiceProfile, setting: Setting, loads: Sequence[float], *, cpu_quota_cores: float, slo_p99_ms: float
) -> tuple[float | None, Array]:
    """Kneedle knee of the simulated P99 curve at ``loads`` (the measured ramp's loads)."""
    from rlctl.boundary.knee import find_knee

    pts = [Point(setting, float(q), NAN, NAN) for q in loads]
    _, p99 = simulate_points(profile, pts, cpu_quota_cores=cpu_quota_cores)
    knee = find_knee(list(loads), list(p99), slo_p99_ms=slo_p99_ms)
    return knee.knee_qps, p99


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True, slots=True)
class FitParam:
    """A profile field the least squares may move: bounds and whether it moves in log space."""

    name: str
    lo: float
    hi: float
    log: bool
    why: str

    def to_x(self, value: float) -> float:
        v = min(max(value, self.lo), self.hi)
        return math.log(v) if self.log else v

    def from_x(self, x: float) -> float:
        return math.exp(x) if self.log else x

    def x_bounds(self) -> tuple[float, float]:
        return (math.log(self.lo), math.log(self.hi)) if self.log else (self.lo, self.hi)


#: Every parameter the least squares knows how to fit.
FIT_PARAMS: dict[str, FitParam] = {
    p.name: p
    for p in (
        FitParam("s_cpu_ms", 0.005, 100.0, True, "service time: sets the capacity and the low-load latency"),
        FitParam("cs2", 0.02, 40.0, True, "service-time variability: the low-load tail and the curve's bend"),
        FitParam("rtt_ms", 0.005, 50.0, True, "fixed client/network overhead: the P50 floor"),
        FitParam("rtt_std_ms", 0.0, 50.0, False, "latency jitter independent of load: the P99 floor"),
        FitParam("usl_sigma", 0.0, 2.0, False, "contention: capacity gained from a second core"),
        FitParam("mutex_ms", 0.0, 20.0, False, "a global lock: a capacity ceiling independent of cores"),
        FitParam("sched_overhead", 0.0, 3.0, False, "overhead of GOMAXPROCS above the CPU quota"),
        FitParam("gc_assist_ms", 0.0, 200.0, False, "P99 cost of GC mark assists"),
        FitParam("gc_cpu_s_per_byte", 1e-13, 1e-6, True, "GC mark cost, when no GC counters were measured"),
        FitParam("gc_fixed_cpu_s", 1e-7, 0.1, True, "fixed GC cost per cycle, when no GC counters were measured"),
        FitParam("alloc_bytes_per_req", 64.0, 64.0 * 2**20, True, "allocation per request, without counters"),
    )
}


def choose_params(
    data: CalibrationData, points: Sequence[Point] | None = None
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The parameters ``points`` can identify, and why each of the others stays fixed."""
    pts = list(points if points is not None else data.select("fit"))
    chosen = ["s_cpu_ms", "cs2", "rtt_ms", "rtt_std_ms"]
    fixed: dict[str, str] = {}
    procs = {p.setting.gomaxprocs for p in pts}
    quota = data.cpu_quota_cores
    if len({min(p, quota) for p in procs}) > 1:
        chosen.append("usl_sigma")
    else:
        fixed["usl_sigma"] = "one usable core count in the data: contention is not identifiable"
    if any(p > quota + 1e-9 for p in procs):
        chosen.append("sched_overhead")
    else:
        fixed["sched_overhead"] = f"no setting has GOMAXPROCS above the quota ({quota:g} cores)"
    if len({(p.setting.gogc, p.setting.object_pool_size) for p in pts}) > 1:
        chosen.append("gc_assist_ms")
    else:
        fixed["gc_assist_ms"] = "GOGC and the pool size do not vary in the data"
    fixed["mutex_ms"] = "indistinguishable from usl_sigma in latency-vs-load data; fit it only for a lock-bound service"
    fixed["s_mem_ms"] = "tied to s_cpu_ms at a fixed ratio: separating them needs prefetch or NUMA perturbation"
    return tuple(chosen), fixed


# ------------------------------------------------------------------------------ direct estimates


def _per_setting_stats(points: Iterable[Point]) -> dict[Setting, ServerStats]:
    out: dict[Setting, ServerStats] = {}
    for p in points:
        if p.error_rate > 0.01:
            continue  # a saturated step's counters mix backlog with steady state
        out[p.setting] = out.get(p.setting, ServerStats()) + p.server
    return out


def direct_estimates(data: CalibrationData, base: ServiceProfile) -> tuple[dict[str, float], dict[str, str]]:
    """Profile fields measured from server counters rather than fitted, with how.

    Returns ``(values, notes)``; a field without data is absent from ``values`` and its
    note says what was missing.
    """
    stats = _per_setting_stats(data.select("fit") or data.points)
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    per_req = {s: st.alloc_bytes / st.requests for s, st in stats.items() if st.requests > 0 and st.alloc_bytes > 0}
    no_pool = [v for s, v in per_req.items() if s.object_pool_size == 0]
    pooled = [v for s, v in per_req.items() if s.object_pool_size > 0]
    if no_pool:
        values["alloc_bytes_per_req"] = statistics.median(no_pool)
        notes["alloc_bytes_per_req"] = "allocated bytes / requests at pool size 0"
        if pooled:
            frac = 1.0 - statistics.median(pooled) / values["alloc_bytes_per_req"]
            values["pooled_fraction"] = min(max(frac, 0.0), 0.99)
            values["object_bytes"] = max(values["alloc_bytes_per_req"] * values["pooled_fraction"], 64.0)
            notes["pooled_fraction"] = "1 - allocation per request with the pool on / with it off"
            notes["object_bytes"] = "the pooled bytes of one request (one pooled object per request)"
    else:
        notes["alloc_bytes_per_req"] = "no setting with pool size 0 and allocation counters"
    # Scannable heap from the pacer's runway: alloc / cycles = (live + roots) * GOGC / 100.
    scan = {s: st.alloc_bytes * 100.0 / (s.gogc * st.gc_cycles) for s, st in stats.items() if st.gc_cycles >= 3}
    cost = {s: st.gc_cpu_s / st.gc_cycles for s, st in stats.items() if st.gc_cycles >= 3 and st.gc_cpu_s > 0}
    scan0 = [v for s, v in scan.items() if s.object_pool_size == 0] or list(scan.values())
    if scan0:
        heap = statistics.median(scan0)
        lives = [st.live_bytes for s, st in stats.items() if s in scan and math.isfinite(st.live_bytes)]
        live = min(statistics.median(lives), 0.95 * heap) if lives else 0.75 * heap
        values["live_heap_bytes"] = live
        values["roots_bytes"] = max(heap - live, 0.05 * heap)
        notes["live_heap_bytes"] = "go_gc_heap_live_bytes" if lives else "3/4 of the pacer's scannable heap"
        notes["roots_bytes"] = "scannable heap (alloc x 100 / (GOGC x GC cycles)) minus the live heap"
    else:
        notes["live_heap_bytes"] = "fewer than 3 GC cycles per setting: heap not measured"
    if cost and scan:
        values.update(_gc_cost_split(cost, scan, base))
        notes["gc_fixed_cpu_s"] = notes["gc_cpu_s_per_byte"] = (
            "GC CPU seconds per cycle = fixed + per_byte x scannable heap, non-negative least squares over settings"
        )
    else:
        notes["gc_fixed_cpu_s"] = "no GC CPU counters: GC cost kept from the base profile"
    return values, notes


def _gc_cost_split(cost: dict[Setting, float], scan: dict[Setting, float], base: ServiceProfile) -> dict[str, float]:
    """``fixed + per_byte * heap = cost`` over settings (turbo speed-up folded in)."""
    from scipy.optimize import nnls

    speed = base.f_turbo_ghz / base.f_base_ghz  # the knobs run with turbo on
    keys = [s for s in cost if s in scan]
    heaps = np.array([scan[s] for s in keys])
    cpu = np.array([cost[s] * speed for s in keys])
    if heaps.size >= 2 and heaps.max() > 1.5 * heaps.min():
        (fixed, per_byte), _ = nnls(np.column_stack([np.ones_like(heaps), heaps]), cpu)
    else:  # one heap size: keep the base split of fixed vs per-byte cost, rescaled
        c, h = float(np.median(cpu)), float(np.median(heaps))
        base_total = base.gc_fixed_cpu_s + base.gc_cpu_s_per_byte * h
        fixed, per_byte = base.gc_fixed_cpu_s * c / base_total, base.gc_cpu_s_per_byte * c / base_total
    return {"gc_fixed_cpu_s": max(float(fixed), 1e-7), "gc_cpu_s_per_byte": max(float(per_byte), 1e-13)}


# ------------------------------------------------------------------------------ least squares


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit_profile` fits."""

    params: tuple[str, ...] | None = None
    """Parameters to fit; None picks what the data identify (:func:`choose_params`)."""
    mem_ratio: float | None = None
    """``s_mem_ms / s_cpu_ms``, fixed; None keeps the base profile's ratio."""
    p50_weight: float = 0.5
    """Weight of the log-P50 residuals relative to log-P99 (0 fits P99 only)."""
    loss: str = "soft_l1"
    """scipy loss; soft_l1 keeps one host hiccup from dragging the fit."""
    f_scale: float = 0.25
    """Residual (in log units, about 25 %) where the robust loss starts to flatten."""
    starts: int = 4
    """Least-squares runs from different starting points; the best is kept."""
    seed: int = 0
    max_nfev: int = 300
    use_direct: bool = True
    """Take allocation, heap and GC cost from server counters where measured."""
    cap_ms: float | None = None
    """Latencies above this are compared at this value (default: the profile's timeout)."""

    def __post_init__(self) -> None:
        unknown = set(self.params or ()) - set(FIT_PARAMS)
        if unknown:
            raise ConfigError(f"fit params {sorted(unknown)} unknown; choose from {sorted(FIT_PARAMS)}")
        if self.loss not in ("linear", "soft_l1", "huber", "cauchy", "arctan"):
            raise ConfigError(f"loss {self.loss!r} unknown; use linear, soft_l1, huber, cauchy or arctan")


@dataclass
class FitResult:
    """A fitted profile, the numbers behind it and how well it matches the data."""

    profile: ServiceProfile
    fitted: dict[str, float]
    stderr_rel: dict[str, float | None]
    fixed: dict[str, str]
    direct: dict[str, float]
    direct_notes: dict[str, str]
    quality: dict[str, Any]
    points: list[dict[str, Any]]
    cpu_quota_cores: float

    def to_dict(self) -> dict[str, Any]:
        return _strict_json(
            {
                "profile": self.profile.to_dict(),
                "fitted": self.fitted,
                "stderr_rel": self.stderr_rel,
                "fixed": self.fixed,
                "direct": self.direct,
                "direct_notes": self.direct_notes,
                "quality": self.quality,
                "cpu_quota_cores": self.cpu_quota_cores,
                "points": self.points,
            }
        )


def _apply(base: ServiceProfile, params: Sequence[FitParam], x: npt.ArrayLike, mem_ratio: float) -> ServiceProfile:
    values = {p.name: p.from_x(float(v)) for p, v in zip(params, np.asarray(x), strict=True)}
    if "s_cpu_ms" in values:
        values["s_mem_ms"] = values["s_cpu_ms"] * mem_ratio
    return base.replace(**values)


def _log_residuals(sim: Array, real: Array, cap: float) -> Array:
    return np.log(np.clip(sim, 1e-3, cap)) - np.log(np.clip(real, 1e-3, cap))


def repeat_disagreement(points: Sequence[Point]) -> float | None:
    """How well the measurement agrees with itself: median over points of ``|P99(first half) / P99(second half) - 1|``.

    The halves are the first and second half of a point's interval P99s (its first and
    later repeats). A simulator cannot be expected to predict P99 more closely than this.
    """
    rel = []
    for p in points:
        v = [x for x in p.p99_intervals_ms if math.isfinite(x)]
        if p.repeats >= 2 and len(v) >= 4:
            a, b = statistics.median(v[: len(v) // 2]), statistics.median(v[len(v) // 2 :])
            rel.append(abs(a / b - 1.0) if b > 0 else math.inf)
    return float(np.median(rel)) if rel else None


def fit_quality(sim_p99: Array, real_p99: Array, cap_ms: float) -> dict[str, Any]:
    """RMSE of log-P99 residuals, median absolute relative error, number of points."""
    ok = np.isfinite(real_p99) & np.isfinite(sim_p99)
    r = _log_residuals(sim_p99[ok], real_p99[ok], cap_ms)
    rel = np.abs(np.clip(sim_p99[ok], 1e-3, cap_ms) / np.clip(real_p99[ok], 1e-3, cap_ms) - 1.0)
    return {
        "rmse_log_p99": float(np.sqrt(np.mean(r**2))) if r.size else None,
        "median_abs_rel_error_p99": float(np.median(rel)) if rel.size else None,
        "max_abs_rel_error_p99": float(np.max(rel)) if rel.size else None,
        "n_points": int(r.size),
    }


def _initial_guess(
    data: CalibrationData, pts: Sequence[Point], base: ServiceProfile, mem_ratio: float
) -> dict[str, float]:
    """Starting values from the lightest loads: CPU per request and the P50 floor."""
    speed = base.f_turbo_ghz / base.f_base_ghz
    mem_factor = 1.0 + base.numa_remote_fraction * (base.numa_ratio - 1.0)
    guess: dict[str, float] = {}
    cpu = [p.server.cpu_s / p.server.requests for p in pts if p.server.requests > 0 and p.server.cpu_s > 0]
    if cpu:
        s_work_ms = 1000.0 * statistics.median(cpu)
    else:
        lightest = min(pts, key=lambda p: p.qps / p.setting.gomaxprocs)
        s_work_ms = max(0.3 * lightest.p50_ms, 0.01)
    guess["s_cpu_ms"] = s_work_ms / (1.0 / speed + mem_ratio * mem_factor)
    low = sorted(pts, key=lambda p: p.qps)[: max(3, len(pts) // 4)]
    p50 = statistics.median(p.p50_ms for p in low if math.isfinite(p.p50_ms)) if low else base.rtt_ms
    guess["rtt_ms"] = max(p50 - 0.7 * s_work_ms, 0.02)
    guess["rtt_std_ms"] = 0.2 * guess["rtt_ms"]
    return guess


def fit_profile(
    data: CalibrationData, base: ServiceProfile | None = None, config: FitConfig | None = None
) -> FitResult:
    """Fit ``base`` (default: :class:`ServiceProfile` defaults) to the ``fit`` points of ``data``."""
    from scipy.optimize import least_squares

    cfg = config or FitConfig()
    base = (base or ServiceProfile()).replace(cpu_quota_cores=data.cpu_quota_cores, cores_free=data.cpu_quota_cores)
    pts = [p for p in data.select("fit") if math.isfinite(p.p99_ms) and p.qps > 0]
    if len(pts) < 4:
        raise ConfigError(f"calibration needs at least 4 measured points with a finite P99, got {len(pts)}")
    chosen, fixed = choose_params(data, pts)
    names = cfg.params or chosen
    mem_ratio = cfg.mem_ratio if cfg.mem_ratio is not None else base.s_mem_ms / max(base.s_cpu_ms, 1e-9)
    direct, notes = direct_estimates(data, base) if cfg.use_direct else ({}, {})
    base = base.replace(**{k: v for k, v in direct.items() if k not in names})
    for name in ("gc_cpu_s_per_byte", "gc_fixed_cpu_s", "alloc_bytes_per_req"):
        if name in names and name in direct:
            logger.info("%s is both measured directly and fitted; the fit starts from the measurement", name)
    params = [FIT_PARAMS[n] for n in names]
    guess = {**{n: getattr(base, n) for n in names}, **_initial_guess(data, pts, base, mem_ratio)}
    x0 = np.array([p.to_x(guess.get(p.name, getattr(base, p.name))) for p in params])
    lo, hi = np.array([p.x_bounds() for p in params]).T
    cap = cfg.cap_ms or base.timeout_ms
    real99 = np.array([p.p99_ms for p in pts])
    real50 = np.array([p.p50_ms for p in pts])
    has50 = np.isfinite(real50)
    quota = data.cpu_quota_cores

    def residuals(x: Array) -> Array:
        prof = _apply(base, params, x, mem_ratio)
        p50, p99 = simulate_points(prof, pts, cpu_quota_cores=quota)
        r = [_log_residuals(p99, real99, cap)]
        if cfg.p50_weight > 0:
            r.append(cfg.p50_weight * _log_residuals(p50[has50], real50[has50], cap))
        return np.concatenate(r)

    rng = np.random.default_rng(cfg.seed)
    best = None
    started = time.perf_counter()
    for k in range(max(cfg.starts, 1)):
        start = x0 if k == 0 else np.clip(x0 + rng.normal(0.0, 0.5, x0.size) * np.maximum(hi - lo, 1e-9) * 0.1, lo, hi)
        start = np.clip(start, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        res = least_squares(residuals, start, bounds=(lo, hi), loss=cfg.loss, f_scale=cfg.f_scale,
                            max_nfev=cfg.max_nfev, x_scale="jac")  # fmt: skip
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    profile = _apply(base, params, best.x, mem_ratio)
    p50, p99 = simulate_points(profile, pts, cpu_quota_cores=quota)
    quality = fit_quality(p99, real99, cap)
    quality.update(
        repeat_disagreement_p99=repeat_disagreement(pts),
        cost=float(best.cost),
        nfev=int(best.nfev),
        success=bool(best.success),
        message=str(best.message),
        seconds=round(time.perf_counter() - started, 2),
        loss=cfg.loss,
        f_scale=cfg.f_scale,
        p50_weight=cfg.p50_weight,
        settings=[str(s) for s in sorted({p.setting for p in pts})],
    )
    fixed = {k: v for k, v in fixed.items() if k not in names}
    fixed["s_mem_ms"] = f"{fixed.get('s_mem_ms', 'tied')} (ratio {mem_ratio:.3g})"
    rows = [
        {**p.to_dict(), "sim_p99_ms": float(a), "sim_p50_ms": float(b)} for p, a, b in zip(pts, p99, p50, strict=True)
    ]
    return FitResult(
        profile=profile,
        fitted={p.name: getattr(profile, p.name) for p in params},
        stderr_rel=_stderr(best, params),
        fixed=fixed,
        direct={k: v for k, v in direct.items() if k not in names},
        direct_notes=notes,
        quality=quality,
        points=rows,
        cpu_quota_cores=quota,
    )


def _stderr(res: Any, params: Sequence[FitParam]) -> dict[str, float | None]:
    """Approximate standard errors from ``(J^T J)^-1 s^2`` (relative for log parameters)."""
    m, n = res.fun.size, len(params)
    out: dict[str, float | None] = {p.name: None for p in params}
    if m <= n:
        return out
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac) * (2.0 * res.cost / (m - n))
    except np.linalg.LinAlgError:
        return out
    for i, p in enumerate(params):
        sd = math.sqrt(max(float(cov[i, i]), 0.0))
        value = p.from_x(float(res.x[i]))
        out[p.name] = sd if p.log else (sd / value if value > 0 else None)
    return out


# ------------------------------------------------------------------------------ holdout


def curve_knee(points: Sequence[Point], slo_p99_ms: float) -> float | None:
    """Kneedle knee of measured P99 against load (the probe's method)."""
    from rlctl.boundary.knee import find_knee

    pts = sorted(points, key=lambda p: p.qps)
    return find_knee([p.qps for p in pts], [p.p99_ms for p in pts], slo_p99_ms=slo_p99_ms).knee_qps


def knee_report(
    profile: ServiceProfile, data: CalibrationData, role: str, *, slo_p99_ms: float
) -> list[dict[str, Any]]:
    """Measured vs simulated knee per setting of the ``role`` curves."""
    from rlctl.boundary.knee import find_knee

    rows = []
    for setting in data.settings(role):
        curve = sorted(data.select(role, setting), key=lambda p: p.qps)
        # Kneedle returns one of the loads it is given: on the measured levels alone both knees
        # land on the same level whenever the bend is within a level's spacing (10-15 % of the
        # knee), and the error reads 0. Both curves go onto one fine grid instead: the measured
        # P99 interpolated in log space, the simulated one simulated there.
        loads = np.array([p.qps for p in curve])
        ok = np.array([math.isfinite(p.p99_ms) and p.p99_ms > 0 for p in curve])
        real = None
        grid = np.linspace(loads[0], loads[-1], KNEE_GRID_PER_LEVEL * len(curve)) if len(curve) >= 3 else loads
        if ok.sum() >= 3:
            p99 = np.array([p.p99_ms for p in curve])
            measured = np.exp(np.interp(grid, loads[ok], np.log(p99[ok])))
            real = find_knee(list(grid), list(measured), slo_p99_ms=slo_p99_ms).knee_qps
        sim, _ = simulated_knee(profile, setting, list(grid), cpu_quota_cores=data.cpu_quota_cores,
                                slo_p99_ms=slo_p99_ms)  # fmt: skip
        err = abs(sim - real) / real if real and sim is not None else None
        rows.append({"setting": str(setting), "label": setting.label, "knee_qps": real, "sim_knee_qps": sim,
                     "knee_rel_error": err, "n_points": len(curve)})  # fmt: skip
    return rows


def holdout_report(
    profile: ServiceProfile,
    data: CalibrationData,
    *,
    slo_p99_ms: float,
    cap_ms: float | None = None,
) -> dict[str, Any] | None:
    """How well ``profile`` predicts settings and loads it was not fitted on.

    P99 at the ``holdout_level`` points (fractions of each holdout setting's measured
    knee) and the knee of the ``holdout_curve`` ramps. None without holdout data.
    """
    levels = data.select("holdout_level")
    if not levels and not data.select("holdout_curve"):
        return None
    cap = cap_ms or profile.timeout_ms
    rows: list[dict[str, Any]] = []
    if levels:
        _, sim = simulate_points(profile, levels, cpu_quota_cores=data.cpu_quota_cores)
        for p, s in zip(levels, sim, strict=True):
            rel = abs(min(s, cap) / min(p.p99_ms, cap) - 1.0) if math.isfinite(p.p99_ms) else None
            rows.append({"setting": str(p.setting), "label": p.setting.label, "knee_fraction": p.knee_fraction,
                         "qps": p.qps, "p99_ms": p.p99_ms, "sim_p99_ms": float(s), "abs_rel_error": rel,
                         "repeats": p.repeats})  # fmt: skip
    errors = [r["abs_rel_error"] for r in rows if r["abs_rel_error"] is not None]
    knees = knee_report(profile, data, "holdout_curve", slo_p99_ms=slo_p99_ms)
    knee_errors = [k["knee_rel_error"] for k in knees if k["knee_rel_error"] is not None]
    p99_err = float(np.median(errors)) if errors else None
    knee_err = max(knee_errors) if knee_errors else None
    return _strict_json(
        {
            "settings": [str(s) for s in data.settings("holdout_curve") or data.settings("holdout_level")],
            "p99_median_abs_rel_error": p99_err,
            "knee_rel_error": knee_err,
            "knee_rel_error_definition": "max over holdout settings of |sim knee - measured knee| / measured knee",
            "repeat_disagreement_p99": repeat_disagreement(levels),
            "goal": {
                "p99_median_abs_rel_error": GOAL_P99_MEDIAN_ABS_REL_ERROR,
                "knee_rel_error": GOAL_KNEE_REL_ERROR,
                "p99_met": p99_err is not None and p99_err <= GOAL_P99_MEDIAN_ABS_REL_ERROR,
                "knee_met": knee_err is not None and knee_err <= GOAL_KNEE_REL_ERROR,
            },
            "levels": rows,
            "knees": knees,
        }
    )


# ------------------------------------------------------------------------------ outputs


def calibration_report(
    result: FitResult,
    data: CalibrationData,
    *,
    slo_p99_ms: float,
) -> dict[str, Any]:
    """The JSON report: fit, in-sample knees, holdout scores and the measured data."""
    return _strict_json(
        {
            "schema": REPORT_SCHEMA,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": data.source,
            "slo_p99_ms": slo_p99_ms,
            "fit": result.to_dict(),
            "fit_knees": knee_report(result.profile, data, "fit", slo_p99_ms=slo_p99_ms),
            "holdout": holdout_report(result.profile, data, slo_p99_ms=slo_p99_ms),
            "data": data.to_dict(),
        }
    )


def profile_yaml(
    result: FitResult, *, holdout: dict[str, Any] | None = None, source: dict[str, Any] | None = None
) -> str:
    """The profile as YAML ``ServiceProfile.load`` reads: ``profile:`` plus ``fit:`` quality."""
    import yaml

    q = result.quality
    doc: dict[str, Any] = {
        "profile": {k: _round(v) for k, v in result.profile.to_dict().items()},
        "fit": {
            "rmse_log_p99": _round(q["rmse_log_p99"]),
            "median_abs_rel_error_p99": _round(q["median_abs_rel_error_p99"]),
            "n_points": q["n_points"],
            "settings": q["settings"],
            "fitted": sorted(result.fitted),
            "measured_directly": sorted(result.direct),
        },
    }
    if holdout:
        doc["fit"]["holdout"] = {
            "settings": holdout.get("settings"),
            "p99_median_abs_rel_error": _round(holdout.get("p99_median_abs_rel_error")),
            "knee_rel_error": _round(holdout.get("knee_rel_error")),
        }
    if source:
        doc["testbed"] = _strict_json(source)
    header = (
        "# rlctl calibrated ServiceProfile (envs.calibrate). Load with ServiceProfile.load(path);\n"
        "# only the `profile:` mapping is read, `fit:` and `testbed:` document where it came from.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def _round(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v != 0:
        return float(f"{v:.6g}")
    return v


def write_text_atomic(path: str | Path, text: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
