"""Scoring a fitted profile on what it was not fitted on: P99 at fractions of the measured knee and
the knee itself, measured against simulated (:func:`holdout_report`, :func:`knee_report`), and the
goals they are held to. Part of :mod:`envs.calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.calibrate.data import (
    CalibrationData,
    Point,
    _strict_json,
)
from envs.calibrate.fit import (
    repeat_disagreement,
)
from envs.calibrate.sim import simulate_points, simulated_knee
from envs.profile import ServiceProfile
from rlctl.boundary.knee import find_knee

#: Goal of the holdout check (the issue "Close the sim-to-real gap").
GOAL_P99_MEDIAN_ABS_REL_ERROR = 0.25
GOAL_KNEE_REL_ERROR = 0.10
#: Points per measured level of the fine load grid both knees are located on (:func:`knee_report`).
KNEE_GRID_PER_LEVEL = 16
#: Fractions of the measured knee at which holdout P99 is compared.
HOLDOUT_KNEE_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.1)


# ------------------------------------------------------------------------------ holdout


def curve_knee(points: Sequence[Point], slo_p99_ms: float) -> float | None:
    """Kneedle knee of measured P99 against load (the probe's method)."""
    pts = sorted(points, key=lambda p: p.qps)
    return find_knee([p.qps for p in pts], [p.p99_ms for p in pts], slo_p99_ms=slo_p99_ms).knee_qps


def knee_report(
    profile: ServiceProfile, data: CalibrationData, role: str, *, slo_p99_ms: float
) -> list[dict[str, Any]]:
    """Measured vs simulated knee per setting of the ``role`` curves."""
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
