"""The controller-side trigger on the degradation-probability surface.

A *surface* is ``P(degradation | throughput per replica, RTT standard deviation)`` on a
grid, estimated offline (:mod:`envs.surface`, from simulator rollouts or recorded
telemetry) and stored as JSON (schema ``rlctl.surface/v1``). Online, the controller looks
up the probability of every new :class:`~rlctl.contract.TelemetrySample` and acts when it
stays above a threshold: :class:`SurfaceTrigger` fires when the probability exceeds 0.15
on 5 consecutive intervals (both configurable).

Lookup is bilinear between grid centres and clamped at the grid's edges (beyond the
largest measured throughput the probability is the edge's, which is where it is highest).
This module is production code: numpy and the contract only, never the simulator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.contract import TelemetrySample
from rlctl.errors import ConfigError

SURFACE_SCHEMA = "rlctl.surface/v1"
#: Grid axes: throughput per replica (offered requests/s) and the RTT standard deviation (ms).
X_AXIS = "throughput_qps_per_replica"
Y_AXIS = "rtt_std_ms"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Surface:
    """A probability grid ``probability[i, j]`` at ``(x[i], y[j])``, with optional confidence bounds."""

    x: FloatArray
    y: FloatArray
    probability: FloatArray
    ci_low: FloatArray | None = None
    ci_high: FloatArray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x, y, p = np.asarray(self.x, float), np.asarray(self.y, float), np.asarray(self.probability, float)
        if x.ndim != 1 or y.ndim != 1 or x.size < 1 or y.size < 1:
            raise ConfigError(f"surface: x and y must be non-empty 1-d grids, got shapes {x.shape} and {y.shape}")
        if p.shape != (x.size, y.size):
            raise ConfigError(f"surface: probability has shape {p.shape}, expected ({x.size}, {y.size}) = (x, y)")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
            raise ConfigError("surface: x and y grids must be strictly increasing")
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ConfigError("surface: every probability must be a finite number in [0, 1]")

    # ---------------------------------------------------------------- lookup

    def probability_at(self, throughput_qps: float, rtt_std_ms: float) -> float:
        """Bilinear interpolation of the grid, clamped to its edges; NaN for a non-finite input."""
        if not (math.isfinite(throughput_qps) and math.isfinite(rtt_std_ms)):
            return math.nan
        i, fx = _bracket(self.x, throughput_qps)
        j, fy = _bracket(self.y, rtt_std_ms)
        p = self.probability
        i2, j2 = min(i + 1, self.x.size - 1), min(j + 1, self.y.size - 1)
        top = (1 - fx) * p[i, j] + fx * p[i2, j]
        bottom = (1 - fx) * p[i, j2] + fx * p[i2, j2]
        return float((1 - fy) * top + fy * bottom)

    def probability_of(self, sample: TelemetrySample | Mapping[str, Any]) -> float:
        """The probability for one sample: offered QPS per replica and its RTT standard deviation."""
        return self.probability_at(*sample_coordinates(sample))

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SURFACE_SCHEMA,
            "x": {"name": X_AXIS, "values": self.x.tolist()},
            "y": {"name": Y_AXIS, "values": self.y.tolist()},
            "probability": np.round(self.probability, 6).tolist(),
        }
        if self.ci_low is not None and self.ci_high is not None:
            out["ci_low"] = np.round(self.ci_low, 6).tolist()
            out["ci_high"] = np.round(self.ci_high, 6).tolist()
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "surface") -> Surface:
        if data.get("schema") != SURFACE_SCHEMA:
            raise ConfigError(
                f"{source}: schema {data.get('schema')!r} is not {SURFACE_SCHEMA!r}; "
                "write it with `rlctl limits surface --json`"
            )
        try:
            x = np.asarray(data["x"]["values"], dtype=np.float64)
            y = np.asarray(data["y"]["values"], dtype=np.float64)
            p = np.asarray(data["probability"], dtype=np.float64)
            lo = np.asarray(data["ci_low"], dtype=np.float64) if "ci_low" in data else None
            hi = np.asarray(data["ci_high"], dtype=np.float64) if "ci_high" in data else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed surface ({type(exc).__name__}: {exc})") from None
        known = {"schema", "x", "y", "probability", "ci_low", "ci_high"}
        meta = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(x, y, p, lo, hi, meta)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Surface:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the surface ({exc.strerror}); check the path") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, source=str(p))

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return out


def _bracket(grid: FloatArray, value: float) -> tuple[int, float]:
    """Index of the grid point at or below ``value`` and the fraction towards the next (clamped)."""
    if value <= grid[0] or grid.size == 1:
        return 0, 0.0
    if value >= grid[-1]:
        return grid.size - 1, 0.0
    i = int(np.searchsorted(grid, value, side="right") - 1)
    return i, float((value - grid[i]) / (grid[i + 1] - grid[i]))


def sample_coordinates(sample: TelemetrySample | Mapping[str, Any]) -> tuple[float, float]:
    """``(offered QPS per replica, RTT standard deviation ms)`` of a sample (served QPS if offered is missing)."""

    def get(name: str) -> float:
        raw = sample.get(name) if isinstance(sample, Mapping) else getattr(sample, name, math.nan)
        try:
            return math.nan if raw is None else float(raw)
        except (TypeError, ValueError):
            return math.nan

    qps = get("offered_qps")
    if not math.isfinite(qps):
        qps = get("served_qps")
    replicas = get("replicas")
    replicas = replicas if math.isfinite(replicas) and replicas >= 1 else 1.0
    return qps / replicas, get("rtt_std_ms")


class SurfaceTrigger:
    """Fires while the degradation probability stays above ``threshold`` for ``consecutive`` intervals.

    ``update(sample)`` returns True from the ``consecutive``-th interval in a row on which
    the probability exceeded the threshold, and keeps returning True while it stays over;
    one interval at or below it re-arms the trigger. A sample whose position on the
    surface cannot be read (NaN load or RTT) breaks the streak: the trigger never fires on
    what it cannot see.
    """

    def __init__(self, surface: Surface | str | Path, threshold: float = 0.15, consecutive: int = 5) -> None:
        self.surface = surface if isinstance(surface, Surface) else Surface.load(surface)
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"surface trigger: threshold={threshold!r} must be in [0, 1)")
        if consecutive < 1:
            raise ConfigError(f"surface trigger: consecutive={consecutive!r} must be at least 1")
        self.threshold = threshold
        self.consecutive = consecutive
        self.streak = 0
        self.probability = math.nan
        self.history: list[float] = []

    def update(self, sample: TelemetrySample | Mapping[str, Any]) -> bool:
        """Feed one interval's sample; True when the trigger fires."""
        p = self.surface.probability_of(sample)
        self.probability = p
        self.history.append(p)
        self.streak = self.streak + 1 if (math.isfinite(p) and p > self.threshold) else 0
        return self.streak >= self.consecutive

    def run(self, samples: Sequence[TelemetrySample | Mapping[str, Any]]) -> list[bool]:
        """:meth:`update` over ``samples`` in order."""
        return [self.update(s) for s in samples]

    def reset(self) -> None:
        self.streak = 0
        self.probability = math.nan
        self.history.clear()
