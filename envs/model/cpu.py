"""CPU physics: usable cores, CFS throttling, core frequency and the thermal RC model."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from envs.model import clip

Array = npt.NDArray[np.float64]


def usable_cores(
    gomaxprocs: npt.ArrayLike,
    quota: npt.ArrayLike,
    cores_free: npt.ArrayLike,
    stress_workers: npt.ArrayLike = 0.0,
    sched_overhead: npt.ArrayLike = 0.03,
) -> Array:
    """Cores a replica can use: ``min(GOMAXPROCS, quota, cores free) - stress workers``.

    More Ps than quota do not add capacity; they add scheduler and GC-worker overhead
    (context switches, per-P caches, 25% of GOMAXPROCS for background marking), modelled
    as a ``1 / (1 + sched_overhead * (P / quota - 1))`` efficiency loss. This reproduces
    the shape of uber-go/automaxprocs' README table: with quota 2, GOMAXPROCS 2 gives the
    best throughput and 8 or 24 give less. CPU-stress workers in the same cgroup take
    cores first (one worker at 100% load takes one core).
    """
    p = np.asarray(gomaxprocs, dtype=np.float64)
    q = np.asarray(quota, dtype=np.float64)
    c = np.minimum(np.minimum(p, q), np.asarray(cores_free, dtype=np.float64))
    excess = np.maximum(p / np.maximum(q, 1e-9) - 1.0, 0.0)
    c = c / (1.0 + np.asarray(sched_overhead) * excess)
    return np.maximum(c - np.asarray(stress_workers, dtype=np.float64), 0.05)


def cfs_throttled_fraction(
    gomaxprocs: npt.ArrayLike,
    quota: npt.ArrayLike,
    util: npt.ArrayLike,
    gc_duty: npt.ArrayLike = 0.0,
    *,
    service_s: npt.ArrayLike = 0.001,
    cs2: npt.ArrayLike = 1.0,
    period_s: npt.ArrayLike = 0.1,
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
    from scipy.special import ndtr

    p = np.asarray(gomaxprocs, dtype=np.float64)
    q = np.maximum(np.asarray(quota, dtype=np.float64), 1e-9)
    t = np.asarray(period_s, dtype=np.float64)
    u = clip(np.asarray(util, dtype=np.float64), 0.0, 1.0)
    m = u * q * t
    sd = np.sqrt(np.maximum(m * np.asarray(service_s, dtype=np.float64) * (1.0 + np.asarray(cs2)), 1e-18))
    tail = (1.0 - ndtr((q * t - m) / sd)) * (p > q)
    over = clip(1.0 - q / p, 0.0, 1.0)
    gc_burst = clip(np.asarray(gc_duty, dtype=np.float64), 0.0, 1.0) * (0.25 * p > q)
    return clip(tail + over * gc_burst, 0.0, 1.0)


def throttle_stall_ms(gomaxprocs: npt.ArrayLike, quota: npt.ArrayLike, period_ms: npt.ArrayLike = 100.0) -> Array:
    """How long a request caught in a throttled period waits: the rest of the period."""
    p = np.asarray(gomaxprocs, dtype=np.float64)
    q = np.asarray(quota, dtype=np.float64)
    return np.asarray(period_ms) * clip(1.0 - q / p, 0.0, 1.0)


def core_frequency_ghz(
    turbo: npt.ArrayLike,
    temp_c: npt.ArrayLike,
    t_trip_c: npt.ArrayLike,
    f_base: npt.ArrayLike,
    f_turbo: npt.ArrayLike,
    f_throttle: npt.ArrayLike,
) -> Array:
    """Turbo, base or thermally throttled frequency.

    Turbo when the turbo bit is on; the base frequency otherwise; the throttle
    frequency whenever the package is at or over its trip temperature (PROCHOT).
    """
    f = np.where(np.asarray(turbo) >= 0.5, f_turbo, f_base)
    return np.where(np.asarray(temp_c) >= np.asarray(t_trip_c), f_throttle, f).astype(np.float64)


def package_power_w(
    util: npt.ArrayLike, freq_ghz: npt.ArrayLike, f_base: npt.ArrayLike, p_idle_w: npt.ArrayLike, p_dyn_w: npt.ArrayLike
) -> Array:
    """Package power: idle plus dynamic power ~ utilisation x f^2 (CMOS ``P ~ C V^2 f``
    with voltage rising with frequency; a square law is the usual compromise)."""
    rel = np.asarray(freq_ghz, dtype=np.float64) / np.asarray(f_base, dtype=np.float64)
    return np.asarray(p_idle_w) + np.asarray(p_dyn_w) * clip(np.asarray(util), 0.0, 1.0) * rel**2


def thermal_step_c(
    temp_c: npt.ArrayLike,
    power_w: npt.ArrayLike,
    t_amb_c: npt.ArrayLike,
    r_c_per_w: npt.ArrayLike,
    tau_s: npt.ArrayLike,
    dt_s: float,
) -> Array:
    """One exact step of the thermal RC model ``C dT/dt = P - (T - T_amb) / R``.

    The solution relaxes to ``T_inf = T_amb + R P`` with time constant ``tau = R C``:
    ``T(t + dt) = T_inf + (T - T_inf) exp(-dt / tau)``. A failed fan multiplies R.
    """
    t_inf = np.asarray(t_amb_c) + np.asarray(r_c_per_w) * np.asarray(power_w)
    return t_inf + (np.asarray(temp_c, dtype=np.float64) - t_inf) * np.exp(-dt_s / np.asarray(tau_s))
