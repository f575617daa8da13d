"""The degradation-probability surface ``P(degradation | throughput per replica, RTT std)``.

Degradation is P99 over the SLO (or, for recorded telemetry, optionally the boundary
detector's rule holding). Two estimators, one output (:class:`rlctl.surface_trigger.Surface`):

- :func:`from_simulator`: a grid over offered load per replica and injected network jitter
  (the RTT standard deviation the telemetry reports is the profile's plus the jitter), with
  ``seeds`` domain-randomised profiles (:func:`envs.profile.randomize`) and a multiplicative
  log-normal measurement noise per seed. Every cell sees the same profiles and noise
  (common random numbers), so for each seed degradation is monotone in both axes and the
  estimated probability is too; the per-cell uncertainty is a Wilson score interval.
- :func:`from_telemetry`: JSON lines of :class:`~rlctl.contract.TelemetrySample` dicts,
  binned on the same axes. Cells with fewer than ``min_count`` samples take the prediction
  of a logistic regression ``logit P = b0 + b1 x/x_scale + b2 y`` (Newton/IRLS, standard
  errors from the inverse Fisher information), which is reported with the surface.

Wilson interval (Wilson 1927): for ``k`` of ``n`` with ``z = 1.96``,
``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; unlike the normal
approximation it stays inside [0, 1] and is sensible at ``k = 0`` or ``k = n``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.model.faults import E, neutral_effects
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile, randomize, stack_profiles
from envs.sim import nominal_capacity_qps
from rlctl.boundary.detector import BoundaryDetector
from rlctl.contract import COL, DEFAULT_SLO_P99_MS, Knobs, TelemetrySample
from rlctl.errors import ConfigError
from rlctl.surface_trigger import X_AXIS, Y_AXIS, Surface, sample_coordinates

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
Z95 = 1.959963984540054


def wilson_interval(k: npt.ArrayLike, n: npt.ArrayLike, z: float = Z95) -> tuple[Array, Array]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``(0, 1)`` where ``n == 0``)."""
    k_a, n_a = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe = np.maximum(n_a, 1.0)
    p = k_a / safe
    denom = 1.0 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo = np.where(n_a > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    hi = np.where(n_a > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lo, hi


def logistic_fit(features: Array, labels: Array, *, ridge: float = 1e-6, iterations: int = 50) -> dict[str, Any]:
    """Logistic regression by Newton's method (IRLS): coefficients, standard errors, convergence.

    ``features`` is ``(n, d)`` without the intercept (added here). A tiny ridge keeps the
    Newton step defined when the classes separate perfectly; the standard errors are then
    large, which is the honest answer.
    """
    x = np.column_stack([np.ones(len(features)), np.asarray(features, dtype=np.float64)])
    y = np.asarray(labels, dtype=np.float64)
    beta = np.zeros(x.shape[1])
    converged = False
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        w = p * (1 - p)
        hess = x.T @ (x * w[:, None]) + ridge * np.eye(x.shape[1])
        step = np.linalg.solve(hess, x.T @ (y - p) - ridge * beta)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            converged = True
            break
    p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
    hess = x.T @ (x * (p * (1 - p))[:, None]) + ridge * np.eye(x.shape[1])
    se = np.sqrt(np.clip(np.diag(np.linalg.pinv(hess)), 0.0, None))
    return {"coef": beta.tolist(), "stderr": se.tolist(), "converged": converged, "n": len(y)}


def logistic_predict(model: dict[str, Any], features: Array) -> Array:
    beta = np.asarray(model["coef"], dtype=np.float64)
    z = beta[0] + np.asarray(features, dtype=np.float64) @ beta[1:]
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), dtype=np.float64)


# ------------------------------------------------------------------------------ simulator


def simulate_p99(
    profiles: Sequence[ServiceProfile], knobs: Knobs, qps: Array, jitter_ms: Array, *, steps: int = 3
) -> Array:
    """Steady-state P99 for every (profile, load, jitter): an ``(S, X, Y)`` array, one replica each."""
    s, nx, ny = len(profiles), qps.size, jitter_ms.size
    n = s * nx * ny
    base = stack_profiles(list(profiles))
    prof = {k: np.repeat(v, nx * ny) for k, v in base.items()}
    load = np.tile(np.repeat(qps, ny), s)
    eff = neutral_effects(n)
    eff[:, E["jitter_ms"]] = np.tile(jitter_ms, s * nx)
    k = np.tile(dataclasses.replace(knobs, replicas=1).to_array(), (n, 1))
    serving = np.ones(n)
    state = ServiceState.initial(prof)
    cool = prof["t_amb_c"] + 20.0
    out = None
    for _ in range(steps):
        state.backlog[:] = 0.0
        state.temp_c[:] = cool
        out = step_services(prof, k, serving, load, eff, state, 0.0, 5.0)
    assert out is not None
    return out.telemetry[:, COL["p99_ms"]].reshape(s, nx, ny)


def from_simulator(
    profile: ServiceProfile | None = None,
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    knobs: Knobs | None = None,
    qps: Sequence[float] | None = None,
    jitter_ms: Sequence[float] | None = None,
    seeds: int = 200,
    randomize_scale: float = 0.5,
    noise_sd: float = 0.15,
    seed: int = 0,
) -> Surface:
    """The surface from simulator rollouts over a (load, jitter) grid with randomised profiles and noise."""
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} must be at least 1")
    profile = profile or ServiceProfile()
    knobs = knobs or Knobs(replicas=1, gomaxprocs=max(1, int(profile.cpu_quota_cores)))
    cap = nominal_capacity_qps(profile, knobs.gomaxprocs) / 0.8
    x = np.asarray(qps if qps is not None else np.linspace(0.05, 1.3, 26) * cap, dtype=np.float64)
    jit = np.asarray(jitter_ms if jitter_ms is not None else np.linspace(0.0, 0.5 * slo_p99_ms, 21), dtype=np.float64)
    if np.any(np.diff(x) <= 0) or np.any(np.diff(jit) <= 0) or jit.min() < 0:
        raise ConfigError("qps and jitter_ms grids must be strictly increasing and jitter non-negative")
    rng = np.random.default_rng(seed)
    profiles = [randomize(profile, rng, randomize_scale) for _ in range(seeds)]
    noise = np.exp(rng.normal(0.0, noise_sd, seeds))[:, None, None]
    p99 = simulate_p99(profiles, knobs, x, jit) * noise
    degraded = p99 > slo_p99_ms
    k = degraded.sum(axis=0).astype(np.float64)
    lo, hi = wilson_interval(k, seeds)
    y = profile.rtt_std_ms + jit
    meta = {
        "source": "simulator",
        "slo_p99_ms": slo_p99_ms,
        "degradation": "p99_ms > slo_p99_ms",
        "n": np.full_like(k, seeds).astype(int).tolist(),
        "k": k.astype(int).tolist(),
        "injected_jitter_ms": jit.tolist(),
        "seeds": seeds,
        "randomize_scale": randomize_scale,
        "noise_sd": noise_sd,
        "seed": seed,
        "knobs": knobs.to_dict(),
        "profile": profile.to_dict(),
        "nominal_capacity_qps": cap,
        "interval": "wilson 95%",
    }
    return Surface(x, y, k / seeds, lo, hi, meta)


# ------------------------------------------------------------------------------ telemetry


def read_telemetry(path: str | Path) -> list[TelemetrySample]:
    """JSON lines of :class:`TelemetrySample` dicts (blank and ``#`` lines skipped)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--from-telemetry {p}: cannot read it ({exc.strerror})") from None
    out = []
    for i, raw in enumerate(lines, start=1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--from-telemetry {p}:{i}: not JSON ({exc.msg}); one TelemetrySample dict per line"
            ) from None
        out.append(TelemetrySample.from_dict(data, source=f"{p}:{i}"))
    if not out:
        raise ConfigError(f"--from-telemetry {p}: no samples; write one TelemetrySample dict per line")
    return out


def degradation_labels(samples: Sequence[TelemetrySample], *, slo_p99_ms: float, mode: str = "slo") -> Array:
    """1.0 where a sample is degraded: P99 over the SLO (``slo``), the detector's rule (``detector``), or either."""
    if mode not in ("slo", "detector", "either"):
        raise ConfigError(f"degradation mode {mode!r}: choose slo, detector or either")
    slo = np.array([s.p99_ms > slo_p99_ms for s in samples], dtype=np.float64)
    if mode == "slo":
        return slo

    det = BoundaryDetector()
    fired = []
    for s in samples:
        det.update(s)
        fired.append(det.rule_holds(det.last_signals))
    d = np.array(fired, dtype=np.float64)
    return d if mode == "detector" else np.maximum(d, slo)


def _edges(values: Array, bins: int) -> Array:
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.1, 1e-3)
    return np.linspace(lo, hi, bins + 1)


def from_telemetry(
    samples: Sequence[TelemetrySample],
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    mode: str = "slo",
    x_bins: int = 12,
    y_bins: int = 8,
    min_count: int = 10,
) -> Surface:
    """The surface from recorded telemetry: binned frequencies, logistic regression where cells are thin."""
    coords = np.array([sample_coordinates(s) for s in samples], dtype=np.float64)
    labels = degradation_labels(samples, slo_p99_ms=slo_p99_ms, mode=mode)
    ok = np.all(np.isfinite(coords), axis=1)
    if ok.sum() < 3:
        raise ConfigError(
            f"only {int(ok.sum())} samples have a finite offered_qps and rtt_std_ms; the surface needs at least 3"
        )
    xy, lab = coords[ok], labels[ok]
    ex, ey = _edges(xy[:, 0], x_bins), _edges(xy[:, 1], y_bins)
    ix = np.clip(np.searchsorted(ex, xy[:, 0], side="right") - 1, 0, x_bins - 1)
    iy = np.clip(np.searchsorted(ey, xy[:, 1], side="right") - 1, 0, y_bins - 1)
    n = np.zeros((x_bins, y_bins))
    k = np.zeros((x_bins, y_bins))
    np.add.at(n, (ix, iy), 1.0)
    np.add.at(k, (ix, iy), lab)
    x_scale = max(float(np.median(np.abs(xy[:, 0]))), 1e-9)
    model = logistic_fit(np.column_stack([xy[:, 0] / x_scale, xy[:, 1]]), lab)
    cx, cy = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
    gx, gy = np.meshgrid(cx, cy, indexing="ij")
    fitted = logistic_predict(model, np.column_stack([gx.ravel() / x_scale, gy.ravel()])).reshape(x_bins, y_bins)
    empirical = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    prob = np.where(n >= min_count, empirical, fitted)
    lo, hi = wilson_interval(k, n)
    meta = {
        "source": "telemetry",
        "slo_p99_ms": slo_p99_ms,
        "degradation": {
            "slo": "p99_ms > slo_p99_ms",
            "detector": "boundary detector rule holds",
            "either": "p99_ms > slo_p99_ms or the boundary detector rule holds",
        }[mode],
        "n": n.astype(int).tolist(),
        "k": k.astype(int).tolist(),
        "x_edges": ex.tolist(),
        "y_edges": ey.tolist(),
        "min_count": min_count,
        "cells_from_model": int((n < min_count).sum()),
        "logistic": {**model, "features": ["intercept", f"{X_AXIS} / {x_scale:.6g}", Y_AXIS], "x_scale": x_scale},
        "samples": len(samples),
        "samples_used": int(ok.sum()),
        "interval": "wilson 95% (cells with n = 0: [0, 1])",
    }
    return Surface(cx, cy, prob, lo, hi, meta)


# ------------------------------------------------------------------------------ plot


def plot_surface(surface: Surface, path: str | Path, *, threshold: float = 0.15) -> Path:
    """The surface as a heatmap PNG with the trigger threshold's contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    p = surface.probability.T
    mesh = ax.pcolormesh(surface.x, surface.y, p, shading="nearest", cmap="magma", vmin=0.0, vmax=1.0)
    fig.colorbar(mesh, ax=ax, label="P(degradation)")
    if surface.x.size > 1 and surface.y.size > 1 and p.min() < threshold < p.max():
        cs = ax.contour(surface.x, surface.y, p, levels=[threshold], colors="cyan", linewidths=1.5)
        ax.clabel(cs, fmt={threshold: f"P = {threshold:g}"}, fontsize=8)
    slo = surface.meta.get("slo_p99_ms")
    src = surface.meta.get("source", "?")
    ax.set_title(f"P(P99 > {slo:g} ms | load, RTT std) — {src}" if slo else f"P(degradation) — {src}")
    ax.set_xlabel("offered load per replica (requests/s)")
    ax.set_ylabel("RTT standard deviation (ms)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def monotone_violations(probability: Array, tol: float = 1e-12) -> int:
    """Cells where the probability decreases with load or with RTT std (0 for a monotone surface)."""
    p = np.asarray(probability)
    return int((np.diff(p, axis=0) < -tol).sum() + (np.diff(p, axis=1) < -tol).sum())


def samples_to_jsonl(samples: Iterable[TelemetrySample], path: str | Path) -> Path:
    """Write samples as JSON lines (NaN as null) — the input format of :func:`read_telemetry`."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for s in samples:
            d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.to_dict().items()}
            f.write(json.dumps(d) + "\n")
    return out
