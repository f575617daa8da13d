"""How a run is scored: one module for ``rlctl eval``, every ``chaos run`` backend and ``validate-real``.

Scores were computed by two copies (``policies/evaluate.py`` and ``chaos/runner.py``) that
disagreed on units, on a missing P99 and on what an action is, so a simulated ``chaos run``
and ``rlctl eval`` of the same scenario reported different figures. Everything that turns a
run into numbers now lives here. It imports numpy only, so the simulator's evaluation, the
chaos runner and the online path can all use it.

A run is a series of intervals; interval ``i`` ends at ``t_s[i]`` and lasts ``dt_s[i]``.

==================  ========================================================================
score               definition
==================  ========================================================================
slo_violation_s     seconds of intervals that missed the SLO (:func:`violated`): P99 over it
                    (``>``: a P99 equal to the SLO meets it), or no P99 while load was offered
steady_violation_s  the same outside every fault window and the ``steady_margin_s`` after it
replica_seconds     replicas x seconds, integrated over the intervals
core_seconds        CPU core-seconds used: the per-interval ``cores`` x seconds, or the
                    backend's measured total (``/proc``), or None when neither is known
actions             decisions that changed at least one knob (several knobs changed at once
                    are one action); ``actions_per_hour`` over the run's duration
flaps               replica changes that reverse the previous one (up then down, or down
                    then up): a change of direction of the replica count; ``flaps_per_hour``
recovery            per fault window: seconds from the window's end to the start of the
                    first interval that met the SLO (``recovery_s``, None if none did);
                    ``bound_s`` is that, or the seconds observed after the window without
                    recovering (a lower bound), which is what ``recovery_seconds`` lists
p99_ms_median       median of the intervals' finite P99s (None if there is none)
error_rate_mean     error rate averaged over time
==================  ========================================================================

Why a missing P99 under load is a miss: the promise is a P99 under the SLO, and a service
that answered nothing in an interval while clients asked (every request failed or timed
out) did not keep it. An interval with no load and no P99 has nothing to answer and is not
a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Seconds after a fault window that still count as the fault's, not as the steady part.
STEADY_MARGIN_S = 60.0
#: Recovery times and window edges within this many seconds are equal (float step sums).
_EPS_S = 1e-6


def violated(p99_ms: npt.ArrayLike, offered_qps: npt.ArrayLike, slo_p99_ms: float) -> BoolArray:
    """Per interval: did it miss the SLO? P99 over the SLO, or no P99 (NaN) while load was offered."""
    p99 = np.asarray(p99_ms, dtype=np.float64)
    offered = np.asarray(offered_qps, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out: BoolArray = (p99 > slo_p99_ms) | (~np.isfinite(p99) & (offered > 0))
    return out


def replica_moves(changes: Iterable[Mapping[str, Any]]) -> FloatArray:
    """The signs (+1 up, -1 down) of the replica changes in ``changes``, in order."""
    moves = [float(np.sign(c["to"] - c["from"])) for c in changes if c["knob"] == "replicas"]
    return np.asarray([m for m in moves if m != 0], dtype=np.float64)


def count_flaps(moves: npt.ArrayLike) -> int:
    """Direction changes in a sequence of replica moves (zeros, i.e. no move, are skipped)."""
    m = np.sign(np.asarray(moves, dtype=np.float64))
    m = m[m != 0]
    return int(np.sum(m[1:] != m[:-1])) if m.size > 1 else 0


def knob_changes(
    knobs: npt.ArrayLike, initial: npt.ArrayLike, dt_s: float, fields: Sequence[str]
) -> list[dict[str, Any]]:
    """The knob changes of a run given the knobs in force in each interval, ``(steps, len(fields))``.

    The decision of interval ``i`` is made at its start, ``i * dt_s``; the first compares
    against ``initial``. The result has the shape the live backends record
    (``{"t_s", "knob", "from", "to"}``), so every backend counts actions from the same list.
    """
    k = np.asarray(knobs, dtype=np.float64)
    before = np.vstack([np.asarray(initial, dtype=np.float64)[None, :], k[:-1]])
    out = []
    for i, j in zip(*np.nonzero(k != before), strict=True):
        out.append({"t_s": float(i * dt_s), "knob": fields[j], "from": _num(before[i, j]), "to": _num(k[i, j])})
    return out


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def score_run(
    *,
    t_s: npt.ArrayLike,
    dt_s: npt.ArrayLike | float,
    offered_qps: npt.ArrayLike,
    p99_ms: npt.ArrayLike,
    replicas: npt.ArrayLike,
    slo_p99_ms: float,
    changes: Sequence[Mapping[str, Any]] = (),
    windows: Sequence[tuple[float, float]] = (),
    cores: npt.ArrayLike | None = None,
    core_seconds: float | None = None,
    error_rate: npt.ArrayLike | None = None,
    steady_margin_s: float = STEADY_MARGIN_S,
) -> dict[str, Any]:
    """The scores of one run (see the module docstring for every key).

    ``changes`` lists the knobs the controller changed (``{"t_s", "knob", "from", "to"}``,
    see :func:`knob_changes`); ``windows`` the fault windows as ``(start_s, end_s)``;
    ``cores`` the cores used per interval, else ``core_seconds`` a measured total.
    """
    t = np.asarray(t_s, dtype=np.float64)
    dt = np.broadcast_to(np.asarray(dt_s, dtype=np.float64), t.shape)
    p99 = np.asarray(p99_ms, dtype=np.float64)
    reps = np.asarray(replicas, dtype=np.float64)
    if not (p99.shape == reps.shape == t.shape and np.shape(offered_qps) == t.shape):
        raise ConfigError(
            f"score_run: t_s, offered_qps, p99_ms and replicas need one value per interval, got shapes "
            f"{t.shape}, {np.shape(offered_qps)}, {p99.shape}, {reps.shape}"
        )
    miss = violated(p99, offered_qps, slo_p99_ms)
    duration = float(dt.sum())
    hours = duration / 3600.0
    starts = t - dt
    end = float(t[-1]) if t.size else 0.0
    recovery = []
    steady = np.ones(t.shape, dtype=bool)
    for start_s, end_s in windows:
        during = (starts < end_s) & (t > start_s)
        steady &= ~((starts < end_s + steady_margin_s) & (t > start_s))
        after = np.flatnonzero(starts >= end_s - _EPS_S)
        ok = after[~miss[after]]
        rec = round(max(0.0, float(starts[ok[0]] - end_s)), 3) if ok.size else None
        recovery.append({
            "start_s": float(start_s),
            "end_s": float(end_s),
            "violation_s_during": float(dt[during & miss].sum()),
            "recovered": bool(ok.size),
            "recovery_s": rec,
            "bound_s": rec if rec is not None else round(max(0.0, end - end_s), 3),
        })  # fmt: skip
    decisions = {float(c["t_s"]) for c in changes}
    flaps = count_flaps(replica_moves(changes))
    if cores is not None:
        core_seconds = float((np.asarray(cores, dtype=np.float64) * dt).sum())
    finite = p99[np.isfinite(p99)]
    errors = np.asarray(error_rate, dtype=np.float64) if error_rate is not None else None
    return {
        "duration_s": duration,
        "slo_violation_s": float(dt[miss].sum()),
        "steady_s": float(dt[steady].sum()),
        "steady_violation_s": float(dt[steady & miss].sum()),
        "replica_seconds": float((reps * dt).sum()),
        "core_seconds": None if core_seconds is None else float(core_seconds),
        "actions": len(decisions),
        "actions_per_hour": len(decisions) / hours if hours > 0 else 0.0,
        "flaps": flaps,
        "flaps_per_hour": flaps / hours if hours > 0 else 0.0,
        "recovery": recovery,
        "recovery_seconds": [r["bound_s"] for r in recovery],
        "p99_ms_median": float(np.median(finite)) if finite.size else None,
        "error_rate_mean": float(np.average(errors, weights=dt)) if errors is not None and duration > 0 else None,
    }
