"""Go garbage collector physics: the pacer's heap goal, GC frequency and GC CPU.

Source: the Go GC guide (go.dev/doc/gc-guide), "Understanding costs" and "Memory limit".
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rlctl.xp import NUMPY, Namespace

Array = npt.NDArray[np.float64]

#: Fraction of GOMAXPROCS the background mark workers take while marking (gc-guide).
GC_BACKGROUND_UTILIZATION = 0.25
#: The GC CPU limiter caps GC near 50% of CPU when the memory limit forces it (gc-guide).
GC_LIMITER_CAP = 0.5


def heap_goal_bytes(
    live: npt.ArrayLike, roots: npt.ArrayLike, gogc: npt.ArrayLike, memlimit: npt.ArrayLike, *, xp: Namespace = NUMPY
) -> tuple[Array, npt.NDArray[np.bool_]]:
    """The pacer's heap goal and whether the memory limit set it.

    ``G = live + (live + roots) * GOGC / 100`` (gc-guide, "GOGC"), capped by the memory
    limit: the runtime keeps the total heap under ``GOMEMLIMIT``. The goal never goes
    below ``1.05 * live``: there the GC runs back to back (a death spiral the limiter
    bounds). Returns ``(goal_bytes, memory_limited)``.
    """
    live_a = xp.asarray(live)
    goal = live_a + (live_a + xp.asarray(roots)) * xp.asarray(gogc) / 100.0
    cap = xp.asarray(memlimit)
    limited = goal > cap
    goal = xp.maximum(xp.minimum(goal, cap), 1.05 * live_a)
    return goal, limited


def gc_cycles_per_s(
    alloc_bytes_per_s: npt.ArrayLike, goal: npt.ArrayLike, live: npt.ArrayLike, *, xp: Namespace = NUMPY
) -> Array:
    """GC frequency: the heap grows from ``live`` to ``goal`` between cycles.

    ``f = alloc_rate / (G - live)`` (gc-guide, "Understanding costs"): doubling GOGC
    doubles the runway and halves the frequency.
    """
    runway = xp.maximum(xp.asarray(goal) - xp.asarray(live), 1.0)
    return xp.asarray(alloc_bytes_per_s) / runway


def gc_cpu_cores(
    cycles_per_s: npt.ArrayLike,
    live: npt.ArrayLike,
    roots: npt.ArrayLike,
    fixed_cpu_s: npt.ArrayLike,
    cpu_s_per_byte: npt.ArrayLike,
    speed: npt.ArrayLike = 1.0,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """CPU (in cores) the GC uses: frequency x cost per cycle.

    Each cycle costs a fixed part plus marking work proportional to the scannable heap
    (``live + roots``) (gc-guide: "GC CPU cost ... is proportional to the live heap").
    ``speed`` is the core frequency relative to the reference (turbo makes it faster).
    """
    per_cycle = xp.asarray(fixed_cpu_s) + xp.asarray(cpu_s_per_byte) * (xp.asarray(live) + xp.asarray(roots))
    return xp.asarray(cycles_per_s) * per_cycle / xp.asarray(speed)


def gc_cpu_fraction(
    gc_cores: npt.ArrayLike, cores: npt.ArrayLike, memory_limited: npt.ArrayLike, *, xp: Namespace = NUMPY
) -> Array:
    """GC CPU as a fraction of the usable cores, capped by the GC CPU limiter.

    Under the memory limit the limiter caps GC near 50% of CPU (gc-guide, "Memory
    limit"); otherwise the GC can take nearly all CPU (assists), capped here at 0.9.
    """
    frac = xp.asarray(gc_cores) / xp.maximum(xp.asarray(cores), 1e-9)
    return xp.minimum(frac, 0.9 - (0.9 - GC_LIMITER_CAP) * xp.asarray(memory_limited))


def pool_hit_rate(
    pool_size: npt.ArrayLike,
    inflight: npt.ArrayLike,
    lam: npt.ArrayLike,
    cycles_per_s: npt.ArrayLike,
    *,
    xp: Namespace = NUMPY,
) -> Array:
    """Fraction of object requests a bounded ``sync.Pool`` of capacity ``pool_size`` serves.

    Pooled objects survive one GC in the victim cache and are dropped at the second
    (Go 1.13+ ``sync.Pool``, runtime/mgc.go ``clearpools``), so every GC cycle costs
    about one refill of the objects in use: ``f_gc * min(K, inflight)`` misses per
    second out of ``lambda`` requests. A pool smaller than the in-flight demand misses
    the excess. Misses become allocations.
    """
    mx, mn = xp.maximum, xp.minimum
    k = xp.asarray(pool_size)
    lam_a = mx(xp.asarray(lam), 1e-9)
    demand = mx(xp.asarray(inflight), 1.0)
    cover = mn(1.0, k / demand)
    refill = xp.asarray(cycles_per_s) * mn(k, demand) / lam_a
    return cover * xp.clip(1.0 - refill, 0.0, 1.0)
