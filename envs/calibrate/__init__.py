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

The package is split by concern: :mod:`~envs.calibrate.data` (settings, points, the data set),
:mod:`~envs.calibrate.measurements` (reading probe and test-bed suite reports),
:mod:`~envs.calibrate.sim` (the simulated side), :mod:`~envs.calibrate.fit` (direct estimates and
least squares), :mod:`~envs.calibrate.scoring` (holdout and knees) and
:mod:`~envs.calibrate.report` (JSON report, profile YAML). Every public name is re-exported here.
"""

from __future__ import annotations

from envs.calibrate.data import (
    ARRIVAL_CA2,
    DATA_SCHEMA,
    NAN,
    REPORT_SCHEMA,
    Array,
    CalibrationData,
    Point,
    ServerStats,
    Setting,
    host_cores,
)
from envs.calibrate.fit import (
    FIT_PARAMS,
    FitConfig,
    FitParam,
    FitResult,
    choose_params,
    direct_estimates,
    fit_profile,
    fit_quality,
    repeat_disagreement,
)
from envs.calibrate.measurements import (
    SUITE_BIN_QPS,
    SUITE_MIN_SECONDS,
    SUITE_REPLICA_SETTLE_S,
    SUITE_SETTLE_S,
    SUITE_WARMUP_S,
    load_probe_report,
    load_suite_reports,
)
from envs.calibrate.report import calibration_report, profile_yaml, write_text_atomic
from envs.calibrate.scoring import (
    GOAL_KNEE_REL_ERROR,
    GOAL_P99_MEDIAN_ABS_REL_ERROR,
    HOLDOUT_KNEE_FRACTIONS,
    KNEE_GRID_PER_LEVEL,
    curve_knee,
    holdout_report,
    knee_report,
)
from envs.calibrate.sim import simulate_points, simulated_knee

__all__ = [
    "ARRIVAL_CA2",
    "DATA_SCHEMA",
    "FIT_PARAMS",
    "GOAL_KNEE_REL_ERROR",
    "GOAL_P99_MEDIAN_ABS_REL_ERROR",
    "HOLDOUT_KNEE_FRACTIONS",
    "KNEE_GRID_PER_LEVEL",
    "NAN",
    "REPORT_SCHEMA",
    "SUITE_BIN_QPS",
    "SUITE_MIN_SECONDS",
    "SUITE_REPLICA_SETTLE_S",
    "SUITE_SETTLE_S",
    "SUITE_WARMUP_S",
    "Array",
    "CalibrationData",
    "FitConfig",
    "FitParam",
    "FitResult",
    "Point",
    "ServerStats",
    "Setting",
    "calibration_report",
    "choose_params",
    "curve_knee",
    "direct_estimates",
    "fit_profile",
    "fit_quality",
    "holdout_report",
    "host_cores",
    "knee_report",
    "load_probe_report",
    "load_suite_reports",
    "profile_yaml",
    "repeat_disagreement",
    "simulate_points",
    "simulated_knee",
    "write_text_atomic",
]
