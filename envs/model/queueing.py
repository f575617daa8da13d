"""Queueing physics: Erlang C waits, their percentiles, and service-time percentiles.

All functions are pure and vectorised over numpy arrays (any broadcastable shapes).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from rlctl.xp import NUMPY, Namespace

Array = npt.NDArray[np.float64]

#: Erlang B values under this are treated as zero (see :func:`erlang_c`).
_NEGLIGIBLE_BLOCKING = 1e-30


def erlang_c(c: npt.ArrayLike, a: npt.ArrayLike, *, xp: Namespace = NUMPY) -> Array:
    """Probability that an arrival waits in an M/M/c queue (Erlang C).

    ``c`` servers, offered load ``a = lambda / mu`` in Erlangs. Computed through the
    Erlang B recurrence ``B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1))`` and
    ``C = B / (1 - rho (1 - B))`` with ``rho = a / c`` (Kleinrock, *Queueing Systems*
    vol. 1, 1975, sec. 3.5). Non-integer ``c`` is interpolated linearly between
    ``floor(c)`` and ``ceil(c)``. Where ``rho >= 1`` the queue has no steady state and
    the probability is 1. Example: ``erlang_c(2, 1) == 1/3``.
    """
    if xp.scalar:
        return _erlang_c_float(c, a)  # type: ignore[arg-type,return-value]
    c_arr = np.maximum(np.asarray(c, dtype=np.float64), 1.0)
    a_arr = np.maximum(np.asarray(a, dtype=np.float64), 0.0)
    if c_arr.shape != a_arr.shape:
        c_arr, a_arr = np.broadcast_arrays(c_arr, a_arr)
    lo = np.floor(c_arr)
    frac = c_arr - lo
    lo_i = lo.astype(np.int64)
    hi_i = np.ceil(c_arr).astype(np.int64)
    k_max = int(hi_i.max()) if hi_i.size else 1
    a_max = float(a_arr.max()) if a_arr.size else 0.0
    # Past k > a, B(k) falls faster than (a / k)^k; once every B is under 1e-30 the rows
    # left are zeros (C there is under 1e-29: no wait), which saves most of the
    # recurrence for large connection pools.
    blocking = np.zeros((k_max + 1, *a_arr.shape))
    b = np.ones_like(a_arr)
    blocking[0] = b
    for k in range(1, k_max + 1):
        ab = a_arr * b
        b = ab / (k + ab)
        blocking[k] = b
        if k > a_max and k % 4 == 0 and b.max() < _NEGLIGIBLE_BLOCKING:
            break
    flat = blocking.reshape(k_max + 1, -1)
    cols = np.arange(flat.shape[1])
    b_lo = flat[lo_i.ravel(), cols].reshape(a_arr.shape)
    b_hi = flat[hi_i.ravel(), cols].reshape(a_arr.shape)

    def _c(servers: Array, blk: Array) -> Array:
        rho = a_arr / servers
        denom = np.maximum(1.0 - rho * (1.0 - blk), 1e-300)
        return np.minimum(blk / denom + (rho >= 1.0), 1.0)

    c_lo = _c(lo, b_lo)
    if not frac.any():  # whole servers (a connection pool): the interpolation is the identity
        return c_lo
    return (1.0 - frac) * c_lo + frac * _c(hi_i.astype(np.float64), b_hi)


def _erlang_c_float(c: float, a: float) -> float:
    """:func:`erlang_c` for one queue: the same recurrence, stop and interpolation on floats."""
    c = max(float(c), 1.0)
    a = max(float(a), 0.0)
    lo = math.floor(c)
    hi = math.ceil(c)
    b = 1.0
    stopped = 0
    for k in range(1, lo + 1):
        ab = a * b
        b = ab / (k + ab)
        if b < _NEGLIGIBLE_BLOCKING and k > a and not k & 3:
            stopped = k
            break
    # Rows past the stop are zeros, as in the table.
    b_lo = 0.0 if 0 < stopped < lo else b
    if hi == lo:
        b_hi = b_lo
    elif stopped:
        b_hi = 0.0
    else:
        ab = a * b
        b_hi = ab / (hi + ab)
    rho = a / lo
    c_lo = min(b_lo / max(1.0 - rho * (1.0 - b_lo), 1e-300) + (rho >= 1.0), 1.0)
    frac = c - lo
    if not frac:
        return c_lo
    rho = a / hi
    c_hi = min(b_hi / max(1.0 - rho * (1.0 - b_hi), 1e-300) + (rho >= 1.0), 1.0)
    return (1.0 - frac) * c_lo + frac * c_hi


def wait_quantile_s(
    p_wait: npt.ArrayLike,
    servers: npt.ArrayLike,
    mu: npt.ArrayLike,
    lam: npt.ArrayLike,
    q: float,
    variability: npt.ArrayLike = 1.0,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """The ``q`` quantile of the M/M/c queueing delay, scaled for G/G/c, in seconds.

    In M/M/c, ``P(W > t) = C exp(-(c mu - lambda) t)``, so the quantile is 0 while the
    waiting probability ``C <= 1 - q`` and ``ln(C / (1 - q)) / (c mu - lambda)`` after:
    flat at low load, then growing like ``1/(c mu - lambda)`` near saturation. The
    Allen-Cunneen factor ``variability = (ca^2 + cs^2) / 2`` scales it for general
    arrival and service distributions (Allen, *Probability, Statistics and Queueing
    Theory*, 1990). Returns ``inf`` where ``lambda >= c mu`` (no steady state).
    """
    pw = xp.asarray(p_wait)
    slack = xp.asarray(servers) * xp.asarray(mu) - xp.asarray(lam)
    waits = pw > 1.0 - q
    t = xp.log(xp.maximum(pw, 1.0 - q) / (1.0 - q)) / xp.maximum(slack, 1e-12) * xp.asarray(variability)
    return xp.where(slack <= 0, math.inf, t * waits)


def service_quantile(mean: npt.ArrayLike, cs2: npt.ArrayLike, q: float, *, xp: Namespace = NUMPY) -> Array:
    """The ``q`` quantile of a service time with mean ``mean`` and squared CV ``cs2``.

    A Weibull-shaped family ``mean * (-ln(1 - q)) ** sqrt(cs2)`` that is exact for the
    exponential (``cs2 = 1``: P99 = 4.6 x mean) and deterministic (``cs2 = 0``) cases.
    """
    return xp.asarray(mean) * (-math.log(1.0 - q)) ** xp.sqrt(xp.asarray(cs2))
