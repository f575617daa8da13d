"""CPU physics: usable cores, CFS throttling, core frequency and the thermal RC model."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rlctl.xp import NUMPY, Namespace

Array = npt.NDArray[np.float64]


def usable_cores(
    gomaxprocs: npt.ArrayLike,
    quota: npt.ArrayLike,
    cores_free: npt.ArrayLike,
    stress_workers: npt.ArrayLike = 0.0,
    sched_overhead: npt.ArrayLike = 0.03,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """Cores a replica can use: ``min(GOMAXPROCS, quota, cores free) - stress workers``.

    More Ps than quota do not add capacity; they add scheduler and GC-worker overhead
    (context switches, per-P caches, 25% of GOMAXPROCS for background marking), modelled
    as a ``1 / (1 + sched_overhead * (P / quota - 1))`` efficiency loss. This reproduces
    the shape of uber-go/automaxprocs' README table: with quota 2, GOMAXPROCS 2 gives the
    best throughput and 8 or 24 give less. CPU-stress workers in the same cgroup take
    cores first (one worker at 100% load takes one core).
    """
    mx, mn = xp.maximum, xp.minimum
    p = xp.asarray(gomaxprocs)
    q = xp.asarray(quota)
    c = mn(mn(p, q), xp.asarray(cores_free))
    excess = mx(p / mx(q, 1e-9) - 1.0, 0.0)
    c = c / (1.0 + xp.asarray(sched_overhead) * excess)
    return mx(c - xp.asarray(stress_workers), 0.05)


def cfs_throttled_fraction(
    gomaxprocs: npt.ArrayLike,
    quota: npt.ArrayLike,
    util: npt.ArrayLike,
    gc_duty: npt.ArrayLike = 0.0,
    *,
    service_s: npt.ArrayLike = 0.001,
    cs2: npt.ArrayLike = 1.0,
    period_s: npt.ArrayLike = 0.1,
    xp: Namespace = NUMPY,
) -> Array:
    """Fraction of CFS periods in which the replica is throttled.

    CFS bandwidth control (Documentation/scheduler/sched-bwc.rst) gives a group ``quota x
    period`` of CPU time per period across all CPUs. With ``P <= quota`` threads it cannot
    run out. With ``P > quota`` it runs out in a period whose work exceeds ``quota x
    period``. Requests arrive as a Poisson stream, so the work of one period is compound
    Poisson: mean ``m = util x quota x period``, variance ``m x s x (1 + cs2)`` for mean
    service time ``s``; the tail is taken as normal, ``P(W > q T) = 1 - Phi((q T - m) / sd)``.
    (The first version used ``(1 - q / P) x util^2``, which on the real test-bed, a 0.25-core
    replica at GOMAXPROCS 1 and 37 % of its quota, predicted 14 % throttled periods and a
    116 ms P99 where the replica measured 4 ms: a period rarely holds 2.4x its mean work.)
    GC mark phases wake ``0.25 x P`` workers at once and throttle while they run when that
    is more than the quota.
    """
    clip = xp.clip
    p = xp.asarray(gomaxprocs)
    q = xp.maximum(xp.asarray(quota), 1e-9)
    t = xp.asarray(period_s)
    u = clip(xp.asarray(util), 0.0, 1.0)
    m = u * q * t
    sd = xp.sqrt(xp.maximum(m * xp.asarray(service_s) * (1.0 + xp.asarray(cs2)), 1e-18))
    tail = (1.0 - xp.ndtr((q * t - m) / sd)) * (p > q)
    over = clip(1.0 - q / p, 0.0, 1.0)
    gc_burst = clip(xp.asarray(gc_duty), 0.0, 1.0) * (0.25 * p > q)
    return clip(tail + over * gc_burst, 0.0, 1.0)


def throttle_stall_ms(
    gomaxprocs: npt.ArrayLike, quota: npt.ArrayLike, period_ms: npt.ArrayLike = 100.0, *, xp: Namespace = NUMPY
) -> Array:
    """How long a request caught in a throttled period waits: the rest of the period."""
    p = xp.asarray(gomaxprocs)
    q = xp.asarray(quota)
    return xp.asarray(period_ms) * xp.clip(1.0 - q / p, 0.0, 1.0)


def core_frequency_ghz(
    turbo: npt.ArrayLike,
    temp_c: npt.ArrayLike,
    t_trip_c: npt.ArrayLike,
    f_base: npt.ArrayLike,
    f_turbo: npt.ArrayLike,
    f_throttle: npt.ArrayLike,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """Turbo, base or thermally throttled frequency.

    Turbo when the turbo bit is on; the base frequency otherwise; the throttle
    frequency whenever the package is at or over its trip temperature (PROCHOT).
    """
    f = xp.where(xp.asarray(turbo) >= 0.5, f_turbo, f_base)
    return xp.asarray(xp.where(xp.asarray(temp_c) >= xp.asarray(t_trip_c), f_throttle, f))


def package_power_w(
    util: npt.ArrayLike,
    freq_ghz: npt.ArrayLike,
    f_base: npt.ArrayLike,
    p_idle_w: npt.ArrayLike,
    p_dyn_w: npt.ArrayLike,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """Package power: idle plus dynamic power ~ utilisation x f^2 (CMOS ``P ~ C V^2 f``
    with voltage rising with frequency; a square law is the usual compromise)."""
    rel = xp.asarray(freq_ghz) / xp.asarray(f_base)
    return xp.asarray(p_idle_w) + xp.asarray(p_dyn_w) * xp.clip(xp.asarray(util), 0.0, 1.0) * rel**2


def thermal_step_c(
    temp_c: npt.ArrayLike,
    power_w: npt.ArrayLike,
    t_amb_c: npt.ArrayLike,
    r_c_per_w: npt.ArrayLike,
    tau_s: npt.ArrayLike,
    dt_s: float,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """One exact step of the thermal RC model ``C dT/dt = P - (T - T_amb) / R``.

    The solution relaxes to ``T_inf = T_amb + R P`` with time constant ``tau = R C``:
    ``T(t + dt) = T_inf + (T - T_inf) exp(-dt / tau)``. A failed fan multiplies R.
    """
    t_inf = xp.asarray(t_amb_c) + xp.asarray(r_c_per_w) * xp.asarray(power_w)
    return t_inf + (xp.asarray(temp_c) - t_inf) * xp.exp(-dt_s / xp.asarray(tau_s))
