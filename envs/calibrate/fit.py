"""Fitting a :class:`~envs.profile.ServiceProfile`: the parameters the data can identify
(:func:`choose_params`), direct estimates from the service's counters (:func:`direct_estimates`)
and least squares on log latency (:func:`fit_profile`), with its in-sample quality. Part of
:mod:`envs.calibrate`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.calibrate.data import (
    Array,
    CalibrationData,
    Point,
    ServerStats,
    Setting,
    _strict_json,
)
from envs.calibrate.sim import simulate_points
from envs.profile import ServiceProfile
from rlctl.errors import ConfigError

logger = logging.getLogger(__name__)

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
