"""The contract's telemetry: :class:`TelemetrySample`, one observation window of one service
(units in the field names), its array columns (:data:`TELEMETRY_FIELDS`, :data:`COL`) and the
window defaults (:data:`DEFAULT_WINDOW`, :data:`DEFAULT_SLO_P99_MS`). Part of :mod:`rlctl.contract`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError

#: Default service-level objective on P99 latency, milliseconds.
DEFAULT_SLO_P99_MS = 8.0

#: Samples in the window :func:`featurize` reads (12 x 5 s = one minute).
DEFAULT_WINDOW = 12

FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------- telemetry

#: Numeric telemetry fields, in array-column order. Units are in the names.
TELEMETRY_FIELDS: tuple[str, ...] = (
    "timestamp_s",
    "interval_s",
    "offered_qps",
    "served_qps",
    "p50_ms",
    "p99_ms",
    "error_rate",
    "goroutines",
    "gc_cycles_per_s",
    "gc_cpu_fraction",
    "alloc_bytes_per_s",
    "heap_bytes",
    "cpu_util",
    "cfs_throttled_fraction",
    "replicas",
    "gomaxprocs",
    "gogc",
    "gomemlimit_bytes",
    "object_pool_size",
    "conn_pool_size",
    "prefetch_on",
    "turbo_on",
    "rtt_mean_ms",
    "rtt_std_ms",
    "cpu_temp_c",
    "cpu_freq_ghz",
    "numa_remote_fraction",
)
COL: dict[str, int] = {name: i for i, name in enumerate(TELEMETRY_FIELDS)}
N_TELEMETRY = len(TELEMETRY_FIELDS)


@dataclass(frozen=True, slots=True)
class TelemetrySample:
    """One observation window (``interval_s`` long, ending at ``timestamp_s``) of one service.

    ``cpu_util`` is CPU used against the CPU quota of all replicas (1.0 = the quota is
    fully used). ``cfs_throttled_fraction`` is the fraction of CFS periods that were
    throttled. ``cpu_temp_c``, ``cpu_freq_ghz`` and ``numa_remote_fraction`` are NaN
    where a live host cannot read them; :func:`featurize` maps NaN to a neutral value.
    """

    timestamp_s: float
    interval_s: float
    offered_qps: float
    served_qps: float
    p50_ms: float
    p99_ms: float
    error_rate: float
    goroutines: float
    gc_cycles_per_s: float
    gc_cpu_fraction: float
    alloc_bytes_per_s: float
    heap_bytes: float
    cpu_util: float
    cfs_throttled_fraction: float
    replicas: float
    gomaxprocs: float
    gogc: float
    gomemlimit_bytes: float
    object_pool_size: float
    conn_pool_size: float
    prefetch_on: float
    turbo_on: float
    rtt_mean_ms: float
    rtt_std_ms: float
    cpu_temp_c: float
    cpu_freq_ghz: float
    numa_remote_fraction: float
    service: str = "default"

    def to_array(self) -> FloatArray:
        """This sample as one row in :data:`TELEMETRY_FIELDS` order."""
        return np.array([getattr(self, f) for f in TELEMETRY_FIELDS], dtype=np.float64)

    @classmethod
    def from_array(cls, row: npt.ArrayLike, service: str = "default") -> TelemetrySample:
        """Build a sample from one row in :data:`TELEMETRY_FIELDS` order."""
        values = np.asarray(row, dtype=np.float64)
        if values.shape != (N_TELEMETRY,):
            raise ConfigError(
                f"telemetry row has shape {values.shape}, expected ({N_TELEMETRY},): "
                "build rows with TelemetrySample.to_array()"
            )
        return cls(**{f: float(v) for f, v in zip(TELEMETRY_FIELDS, values, strict=True)}, service=service)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (NaN stays NaN; callers that need strict JSON map it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "telemetry") -> TelemetrySample:
        """Build a sample from a mapping; missing numeric fields become NaN.

        Unknown keys are an error naming ``source``, because a typo in a collector would
        otherwise silently feed NaN to the policy.
        """
        unknown = set(data) - set(TELEMETRY_FIELDS) - {"service"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown telemetry field(s) {sorted(unknown)}; expected a subset of {list(TELEMETRY_FIELDS)}"
            )
        values: dict[str, float] = {}
        for name in TELEMETRY_FIELDS:
            raw = data.get(name)
            try:
                values[name] = float("nan") if raw is None else float(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: field {name}={raw!r} is not a number") from exc
        return cls(**values, service=str(data.get("service", "default")))


def window_array(window: Sequence[TelemetrySample] | npt.ArrayLike) -> FloatArray:
    """A window as a ``(n, F)`` (or ``(batch, n, F)``) float64 array."""
    if isinstance(window, Sequence) and window and isinstance(window[0], TelemetrySample):
        return np.stack([s.to_array() for s in window])  # type: ignore[union-attr]
    arr = np.asarray(window, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.shape[-1] != N_TELEMETRY or arr.ndim not in (2, 3) or arr.shape[-2] == 0:
        raise ConfigError(
            f"telemetry window has shape {arr.shape}; expected (n, {N_TELEMETRY}) or "
            f"(batch, n, {N_TELEMETRY}) with n >= 1"
        )
    return arr
