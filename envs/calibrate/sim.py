"""The simulator's side of the fit: steady-state P99 of a profile at measured loads and knobs
(:func:`simulate_points`, the real physics of :func:`envs.model.service.step_services`) and the
knee of a simulated curve. Part of :mod:`envs.calibrate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from envs.calibrate.data import (
    ARRIVAL_CA2,
    NAN,
    Array,
    Point,
    Setting,
)
from envs.model.faults import neutral_effects
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile
from rlctl.boundary.knee import find_knee
from rlctl.contract import COL

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

    Steady state as ``tests/test_envs/test_physics.py``'s ``steady()`` evaluates it: a few steps at
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
    pts = [Point(setting, float(q), NAN, NAN) for q in loads]
    _, p99 = simulate_points(profile, pts, cpu_quota_cores=cpu_quota_cores)
    knee = find_knee(list(loads), list(p99), slo_p99_ms=slo_p99_ms)
    return knee.knee_qps, p99
