"""The knee of a latency-against-load curve, found two independent ways.

1. **Kneedle** (Satopää et al., 2011, "Finding a 'Kneedle' in a Haystack") through the
   ``kneed`` package: normalise the curve to the unit square and take the point furthest
   below the chord (``curve='convex', direction='increasing', online=True``).
2. **Two-segment least squares**: the breakpoint ``x0`` of the continuous hinge
   ``y = a + b x + c max(0, x - x0)`` that minimises the squared error, scanned over the
   measured loads and refined with a bounded scalar search (scipy). It shares no step
   with Kneedle, so agreement between the two is evidence, not an echo.

:func:`max_qps_at_slo` is the highest measured load whose P99 is inside the SLO,
interpolated linearly to where the curve crosses the SLO.

Both knees are located on the curve's *lower monotone envelope* (each P99 replaced by the
lowest P99 measured at that load or above) unless told otherwise. Latency noise from
other tenants of a shared host only ever adds delay, and expected P99 does not fall as
load rises, so a spike at low load is interference, not the service: on the raw curve
it would pull Kneedle's normalisation and the hinge fit towards it. Points past the knee
are untouched (nothing above them can be lower for long).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError

#: Relative difference between the two knees under which they are said to agree.
DEFAULT_AGREEMENT = 0.10

#: The methods a report's ``knee_qps`` can come from (the other one is its cross-check).
KNEE_METHODS = ("kneedle", "two-segment", "crossing")
_METHOD_NAMES = {
    "kneedle": "kneedle",
    "two-segment": "two_segment_least_squares",
    "crossing": "p99_threshold_crossing",
}


@dataclass(frozen=True)
class KneeResult:
    """Both knees, how far apart they are, and the highest load inside the SLO.

    ``knee_qps`` comes from ``methods[0]`` (``method`` names it as ``--knee-method`` does)
    and ``knee_qps_second_method``, its cross-check, from ``methods[1]``. ``agreement`` is
    ``|knee - cross-check| / max(knee, cross-check)`` (0 = identical); ``agree`` is that
    being within ``tolerance``. A knee is None when its method found none.
    """

    knee_qps: float | None
    knee_p99_ms: float | None
    knee_qps_second_method: float | None
    agreement: float | None
    agree: bool
    tolerance: float
    max_qps_at_slo: float | None
    slo_p99_ms: float
    methods: tuple[str, str] = ("kneedle", "two_segment_least_squares")
    curve: str = "lower_envelope"
    method: str = "kneedle"
    """The :data:`KNEE_METHODS` name of ``methods[0]`` (what ``--knee-method`` takes)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "knee_qps": self.knee_qps,
            "knee_p99_ms": self.knee_p99_ms,
            "knee_qps_second_method": self.knee_qps_second_method,
            "knee_method": self.method,
            "knee_methods": list(self.methods),
            "knee_curve": self.curve,
            "knee_agreement": self.agreement,
            "knee_methods_agree": self.agree,
            "knee_agreement_tolerance": self.tolerance,
            "max_qps_at_slo": self.max_qps_at_slo,
            "slo_p99_ms": self.slo_p99_ms,
        }


def _clean_curve(loads: npt.ArrayLike, p99s: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by load; P99s at the same load are averaged."""
    x = np.asarray(loads, dtype=np.float64)
    y = np.asarray(p99s, dtype=np.float64)
    if x.shape != y.shape:
        raise ConfigError(f"knee: {x.size} loads but {y.size} P99 values; pass one P99 per load")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    ux, inverse = np.unique(x, return_inverse=True)
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return ux, uy


def lower_envelope(loads: npt.ArrayLike, p99s: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Sorted loads and, for each, the lowest P99 at that load or any higher one."""
    x, y = _clean_curve(loads, p99s)
    return x, np.minimum.accumulate(y[::-1])[::-1]


def kneedle_knee(
    loads: npt.ArrayLike, p99s: npt.ArrayLike, *, sensitivity: float = 1.0, last: bool = False
) -> float | None:
    """Kneedle knee of P99 against load (None with fewer than 3 points or no knee).

    Kneedle can find several knees on one curve; kneed reports the first. With ``last``
    this returns the highest-load one before the curve's end instead, which is what a
    probe wants: its curve ends at the boundary it confirmed, and a regime change well
    below it is a knee too (the mutex-contended test-bed's P99 steps from 2.6 to 3.5 ms at
    about half its capacity; when a probe stopped one interval into the cliff, that step
    was the first knee). Curves that run well past the knee (calibration) keep the first.
    """
    from kneed import KneeLocator

    x, y = _clean_curve(loads, p99s)
    if x.size < 3 or np.ptp(y) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns "No knee/elbow found" instead of returning a status
        locator = KneeLocator(x, y, S=sensitivity, curve="convex", direction="increasing", online=True)
    # A knee needs points after it: kneed can list the curve's last point too.
    knees = sorted(float(k) for k in (locator.all_knees or ()) if k is not None and k < x[-1])
    if last and knees:
        return knees[-1]
    return None if locator.knee is None else float(locator.knee)


def _hinge_sse(x: np.ndarray, y: np.ndarray, x0: float) -> float:
    design = np.column_stack([np.ones_like(x), x, np.maximum(0.0, x - x0)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid)


def two_segment_knee(loads: npt.ArrayLike, p99s: npt.ArrayLike) -> float | None:
    """Breakpoint of the best continuous two-segment linear fit (None under 4 points).

    The slope after the breakpoint must exceed the slope before it (a knee, not an
    elbow) and the hinge must fit better than one straight line; otherwise None.
    """
    from scipy.optimize import minimize_scalar

    x, y = _clean_curve(loads, p99s)
    if x.size < 4 or np.ptp(y) == 0:
        return None
    # Breakpoints strictly inside the data, so each segment has at least two points.
    candidates = x[1:-1]
    sse = np.array([_hinge_sse(x, y, c) for c in candidates])
    i = int(np.argmin(sse))
    lo = candidates[max(i - 1, 0)] if i > 0 else x[0]
    hi = candidates[min(i + 1, candidates.size - 1)] if i < candidates.size - 1 else x[-1]
    best = float(candidates[i])
    if hi > lo:
        res = minimize_scalar(lambda c: _hinge_sse(x, y, c), bounds=(lo, hi), method="bounded")
        if res.success and res.fun <= sse[i]:
            best = float(res.x)
    design = np.column_stack([np.ones_like(x), x, np.maximum(0.0, x - best)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    line = np.polyfit(x, y, 1)
    line_sse = float(np.sum((y - np.polyval(line, x)) ** 2))
    # A straight line has no knee: the hinge must bend upwards and explain what a line cannot.
    if coef[2] <= 0 or not _hinge_sse(x, y, best) < (1.0 - 1e-6) * line_sse:
        return None
    return best


def threshold_crossing(loads: npt.ArrayLike, p99s: npt.ArrayLike, threshold_ms: float) -> float | None:
    """The load of the last upward crossing of ``threshold_ms``, interpolated (None if none).

    The crossing into the run of points over the threshold that ends the curve: a probe's
    curve ends at the boundary it confirmed, and an earlier point over the threshold that the
    curve came back from was a spike, not the boundary. None when the last point is not over
    the threshold or every point is.
    """
    x, y = _clean_curve(loads, p99s)
    if x.size < 2 or not y[-1] > threshold_ms:
        return None
    under = np.flatnonzero(y <= threshold_ms)
    if under.size == 0:
        return None
    i = int(under[-1])
    return float(x[i] + (x[i + 1] - x[i]) * (threshold_ms - y[i]) / (y[i + 1] - y[i]))


def max_qps_at_slo(loads: npt.ArrayLike, p99s: npt.ArrayLike, slo_p99_ms: float) -> float | None:
    """The highest measured load with P99 <= SLO, interpolated to the SLO crossing.

    When the next measured load is over the SLO, the load where the straight line
    between the two points meets the SLO is returned. None when no load met the SLO.
    """
    x, y = _clean_curve(loads, p99s)
    inside = np.flatnonzero(y <= slo_p99_ms)
    if inside.size == 0:
        return None
    i = int(inside[-1])
    if i == x.size - 1:
        return float(x[i])
    x0, x1, y0, y1 = x[i], x[i + 1], y[i], y[i + 1]
    return float(x0 + (x1 - x0) * (slo_p99_ms - y0) / (y1 - y0))


def interpolate_p99(loads: npt.ArrayLike, p99s: npt.ArrayLike, at: float | None) -> float | None:
    if at is None:
        return None
    x, y = _clean_curve(loads, p99s)
    return float(np.interp(at, x, y)) if x.size else None


def find_knee(
    loads: npt.ArrayLike,
    p99s: Sequence[float],
    *,
    slo_p99_ms: float,
    tolerance: float = DEFAULT_AGREEMENT,
    envelope: bool = True,
    last_knee: bool = False,
    method: str = "kneedle",
    crossing_ms: float | None = None,
) -> KneeResult:
    """Both knees of P99 against load, their agreement and the highest load in the SLO.

    With ``envelope`` (the default) the knees are found on :func:`lower_envelope`; the
    SLO figure always uses the measured curve. ``last_knee`` is :func:`kneedle_knee`'s ``last``.
    ``method`` (one of :data:`KNEE_METHODS`) picks the reported knee; the other method is
    its cross-check. Kneedle's point of greatest curvature suits a curve that runs past the
    cliff; on a curve that ends at the cliff's first interval (a probe confirming on
    intervals) it comes early when P99 rises gradually, where the two-segment breakpoint
    does not (see deploy/results/boundary-2026-11-28/). ``crossing`` reports
    :func:`threshold_crossing` of ``crossing_ms`` on the measured curve (a probe passes its
    detector's P99-rise threshold) with Kneedle as its cross-check.
    """
    if not (math.isfinite(slo_p99_ms) and slo_p99_ms > 0):
        raise ConfigError(f"slo_p99_ms={slo_p99_ms!r} must be a positive number of milliseconds")
    if method not in KNEE_METHODS:
        raise ConfigError(f"knee method {method!r} is not one of {', '.join(KNEE_METHODS)}")
    if method == "crossing" and not (crossing_ms is None or (math.isfinite(crossing_ms) and crossing_ms > 0)):
        raise ConfigError(f"crossing_ms={crossing_ms!r} must be a positive number of milliseconds")
    kx, ky = lower_envelope(loads, p99s) if envelope else _clean_curve(loads, p99s)
    first = kneedle_knee(kx, ky, last=last_knee)
    second = two_segment_knee(kx, ky)
    names = (_METHOD_NAMES["kneedle"], _METHOD_NAMES["two-segment"])
    if method == "two-segment":
        first, second, names = second, first, names[::-1]
    elif method == "crossing":
        # No threshold (a detector without the P99-rise rule): no crossing, and the report says so.
        crossing = None if crossing_ms is None else threshold_crossing(loads, p99s, crossing_ms)
        first, second, names = crossing, first, (_METHOD_NAMES["crossing"], names[0])
    agreement = None
    if first is not None and second is not None and max(first, second) > 0:
        agreement = abs(first - second) / max(first, second)
    return KneeResult(
        knee_qps=first,
        knee_p99_ms=crossing_ms if method == "crossing" and first is not None else interpolate_p99(kx, ky, first),
        knee_qps_second_method=second,
        agreement=agreement,
        agree=agreement is not None and agreement <= tolerance,
        tolerance=tolerance,
        max_qps_at_slo=max_qps_at_slo(loads, p99s, slo_p99_ms),
        slo_p99_ms=slo_p99_ms,
        methods=names,
        method=method,
        curve="lower_envelope" if envelope else "measured",
    )
