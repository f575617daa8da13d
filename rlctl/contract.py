"""The one contract between training and production.

Everything that crosses the line between the simulator/trainer and the live controller
goes through this module, which the simulator, the trainer, the controller and the
policy server all import:

- :class:`TelemetrySample`: one observation window of one service. The simulator emits
  exactly these records and the live collectors emit exactly these records. Units are
  in the field names.
- :class:`Knobs` and :class:`KnobBounds`: what the controller may change, with bounds.
- the action space (:data:`ACTION_NVEC`, :data:`NOOP_ACTION`) and :func:`apply`, the pure,
  clamped transition ``knobs x action -> knobs`` shared by simulator and controller.
- :func:`featurize`: the only way a policy ever sees telemetry.
- :data:`SCHEMA_VERSION` and :data:`SCHEMA_HASH`, written into every policy artifact and
  checked on load, so a policy cannot be fed features it was not trained on.

Arrays are the fast path: a window of samples is a ``(n, len(TELEMETRY_FIELDS))`` float64
array (or ``(batch, n, F)``); knobs are a ``(..., len(KNOB_FIELDS))`` array. The dataclasses
convert to and from these rows.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError

SCHEMA_VERSION = "1.0"

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


# ------------------------------------------------------------------------------- knobs

KNOB_FIELDS: tuple[str, ...] = (
    "replicas",
    "gomaxprocs",
    "gogc",
    "gomemlimit_mib",
    "object_pool_size",
    "conn_pool_size",
    "prefetch",
    "turbo",
)
KNOB_COL: dict[str, int] = {name: i for i, name in enumerate(KNOB_FIELDS)}

#: GOGC moves one rung at a time on this ladder (percent).
GOGC_LADDER: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
#: GOMEMLIMIT rungs in MiB; the top rung stands for "no practical limit".
GOMEMLIMIT_LADDER_MIB: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192)
#: sync.Pool capacity rungs (objects kept per replica).
OBJECT_POOL_LADDER: tuple[int, ...] = (0, 16, 64, 256, 1024, 4096)
#: Downstream connection-pool rungs (``MaxConnsPerHost``).
CONN_POOL_LADDER: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)

LADDERS: dict[str, tuple[int, ...]] = {
    "gogc": GOGC_LADDER,
    "gomemlimit_mib": GOMEMLIMIT_LADDER_MIB,
    "object_pool_size": OBJECT_POOL_LADDER,
    "conn_pool_size": CONN_POOL_LADDER,
}


@dataclass(frozen=True, slots=True)
class Knobs:
    """The knobs rlctl turns on one service. Runtime knobs apply to every replica."""

    replicas: int = 2
    gomaxprocs: int = 2
    gogc: int = 100
    gomemlimit_mib: int = 8192
    object_pool_size: int = 256
    conn_pool_size: int = 16
    prefetch: bool = True
    turbo: bool = True

    def to_array(self) -> FloatArray:
        """This setting as one row in :data:`KNOB_FIELDS` order."""
        return np.array([float(getattr(self, f)) for f in KNOB_FIELDS], dtype=np.float64)

    @classmethod
    def from_array(cls, row: npt.ArrayLike) -> Knobs:
        """Build knobs from one row in :data:`KNOB_FIELDS` order."""
        v = np.asarray(row, dtype=np.float64)
        return cls(
            replicas=int(v[0]),
            gomaxprocs=int(v[1]),
            gogc=int(v[2]),
            gomemlimit_mib=int(v[3]),
            object_pool_size=int(v[4]),
            conn_pool_size=int(v[5]),
            prefetch=bool(v[6] >= 0.5),
            turbo=bool(v[7] >= 0.5),
        )

    def to_dict(self) -> dict[str, int | bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class KnobBounds:
    """Inclusive bounds on every knob. Ladder knobs stay on their ladders.

    ``allow`` lists the knobs the controller may move at all; a knob not listed keeps
    its value whatever the action says (a platform team may, for example, forbid
    touching turbo).
    """

    min_replicas: int = 1
    max_replicas: int = 16
    min_gomaxprocs: int = 1
    max_gomaxprocs: int = 8
    min_gogc: int = 25
    max_gogc: int = 800
    min_gomemlimit_mib: int = 128
    max_gomemlimit_mib: int = 8192
    min_object_pool_size: int = 0
    max_object_pool_size: int = 4096
    min_conn_pool_size: int = 1
    max_conn_pool_size: int = 128
    allow: tuple[str, ...] = KNOB_FIELDS

    def __post_init__(self) -> None:
        for name in ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size"):
            lo, hi = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if lo > hi:
                raise ConfigError(f"knob bounds: min_{name}={lo} is above max_{name}={hi}; swap them")
        if self.min_replicas < 1 or self.min_gomaxprocs < 1:
            raise ConfigError("knob bounds: min_replicas and min_gomaxprocs must be at least 1")
        bad = set(self.allow) - set(KNOB_FIELDS)
        if bad:
            raise ConfigError(f"knob bounds: unknown knob(s) in allow: {sorted(bad)}; choose from {list(KNOB_FIELDS)}")

    def lows(self) -> FloatArray:
        return np.array(
            [self.min_replicas, self.min_gomaxprocs, self.min_gogc, self.min_gomemlimit_mib,
             self.min_object_pool_size, self.min_conn_pool_size, 0, 0],
            dtype=np.float64,
        )  # fmt: skip

    def highs(self) -> FloatArray:
        return np.array(
            [self.max_replicas, self.max_gomaxprocs, self.max_gogc, self.max_gomemlimit_mib,
             self.max_object_pool_size, self.max_conn_pool_size, 1, 1],
            dtype=np.float64,
        )  # fmt: skip

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        return np.array([f in self.allow for f in KNOB_FIELDS])

    def clamp(self, knobs: Knobs) -> Knobs:
        """``knobs`` moved inside the bounds (ladder knobs to the nearest allowed rung)."""
        return Knobs.from_array(clamp_array(knobs.to_array(), self))


# ------------------------------------------------------------------------ action space

#: MultiDiscrete sizes: replicas -2..+2; GOMAXPROCS -1/0/+1; GOGC, GOMEMLIMIT, object pool,
#: connection pool one rung down/keep/up; prefetch toggle; turbo toggle.
ACTION_NVEC: tuple[int, ...] = (5, 3, 3, 3, 3, 3, 2, 2)
ACTION_FIELDS: tuple[str, ...] = KNOB_FIELDS
#: The action that changes nothing.
NOOP_ACTION: tuple[int, ...] = (2, 1, 1, 1, 1, 1, 0, 0)
_ACTION_OFFSET = np.array([2, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)
_ACTION_MAX = np.asarray(ACTION_NVEC, dtype=np.int64) - 1
_LADDER_COLS = {KNOB_COL[k]: np.array(v, dtype=np.float64) for k, v in LADDERS.items()}
_TOGGLE_COLS = (KNOB_COL["prefetch"], KNOB_COL["turbo"])


def _snap_to_ladder(values: FloatArray, ladder: FloatArray) -> npt.NDArray[np.int64]:
    """Index of the nearest rung for each value."""
    if ladder.size == 1:
        return np.zeros(np.shape(values), dtype=np.int64)
    idx = np.minimum(np.maximum(np.searchsorted(ladder, values), 1), len(ladder) - 1)
    left, right = ladder[idx - 1], ladder[idx]
    return idx - (np.abs(values - left) <= np.abs(right - values))


#: Ladders whose bounds span at most this many integers get a value -> rung lookup table.
_MAX_RUNG_TABLE = 1 << 16


@functools.lru_cache(maxsize=64)
def _bounds_arrays(bounds: KnobBounds) -> tuple[FloatArray, FloatArray, FloatArray, dict[int, FloatArray]]:
    """lows, highs, allowed mask (as 0/1 floats) and each ladder's allowed rungs."""
    lows, highs = bounds.lows(), bounds.highs()
    ladders: dict[int, FloatArray] = {}
    for col, ladder in _LADDER_COLS.items():
        allowed = ladder[(ladder >= lows[col]) & (ladder <= highs[col])]
        ladders[col] = allowed if allowed.size else np.array([lows[col]])
    return lows, highs, bounds.allowed_mask().astype(np.float64), ladders


@functools.lru_cache(maxsize=64)
def _rung_tables(bounds: KnobBounds) -> dict[int, npt.NDArray[np.int64]]:
    """For each ladder knob, :func:`_snap_to_ladder` of every integer in ``[0, high]``.

    Clamped knob values are integers inside the bounds, so a table lookup gives the same
    rung as the search, several times faster (``apply_array`` runs every simulator step).
    Ladders with negative, fractional or very large bounds are searched instead.
    """
    lows, highs, _, ladders = _bounds_arrays(bounds)
    tables: dict[int, npt.NDArray[np.int64]] = {}
    for col, allowed in ladders.items():
        lo, hi = float(lows[col]), float(highs[col])
        if lo >= 0 and hi <= _MAX_RUNG_TABLE and lo.is_integer() and hi.is_integer():
            tables[col] = _snap_to_ladder(np.arange(int(highs[col]) + 1, dtype=np.float64), allowed)
    return tables


def _clamp(knobs: npt.ArrayLike, bounds: KnobBounds) -> tuple[FloatArray, dict[int, npt.NDArray[np.int64]]]:
    """:func:`clamp_array` plus the rung index of each ladder knob."""
    lows, highs, _, ladders = _bounds_arrays(bounds)
    tables = _rung_tables(bounds)
    k = np.asarray(knobs, dtype=np.float64)
    finite = np.isfinite(k)
    if not finite.all():
        k = np.where(finite, k, lows)
    k = np.minimum(np.maximum(np.rint(k), lows), highs)
    rungs: dict[int, npt.NDArray[np.int64]] = {}
    for col, allowed in ladders.items():
        table = tables.get(col)
        idx = _snap_to_ladder(k[..., col], allowed) if table is None else table[k[..., col].astype(np.int64)]
        rungs[col] = idx
        k[..., col] = allowed[idx]
    return k, rungs


def clamp_array(knobs: npt.ArrayLike, bounds: KnobBounds) -> FloatArray:
    """Knob rows moved inside ``bounds``; non-finite values become the lower bound."""
    return _clamp(knobs, bounds)[0]


def apply_array(knobs: npt.ArrayLike, action: npt.ArrayLike, bounds: KnobBounds) -> FloatArray:
    """Vectorised :func:`apply`: ``(..., 8)`` knob rows and ``(..., 8)`` actions.

    Pure and clamped. Out-of-range action components are clipped to the action space,
    so a malformed action can never move a knob further than one legal step.
    """
    lows, highs, allowed_mask, ladders = _bounds_arrays(bounds)
    k, rungs = _clamp(knobs, bounds)
    a = np.asarray(action)
    if a.shape[-1] != len(ACTION_NVEC):
        raise ConfigError(f"action has {a.shape[-1]} components, expected {len(ACTION_NVEC)} ({ACTION_FIELDS})")
    a = np.minimum(np.maximum(a.astype(np.int64), 0), _ACTION_MAX)
    delta = (a - _ACTION_OFFSET) * allowed_mask
    out = np.minimum(np.maximum(k + delta, lows), highs)
    for col, allowed in ladders.items():
        idx = rungs[col] + delta[..., col].astype(np.int64)
        out[..., col] = allowed[np.minimum(np.maximum(idx, 0), allowed.size - 1)]
    for col in _TOGGLE_COLS:
        out[..., col] = np.where(delta[..., col] > 0, 1.0 - k[..., col], k[..., col])
    return out


def apply(knobs: Knobs, action: npt.ArrayLike, bounds: KnobBounds) -> Knobs:
    """The knobs after ``action``: pure, clamped, the same in simulator and controller."""
    return Knobs.from_array(apply_array(knobs.to_array(), action, bounds))


# --------------------------------------------------------------------------- features

FEATURE_NAMES: tuple[str, ...] = (
    "log_offered_qps",
    "log_offered_qps_per_replica",
    "offered_trend",
    "served_over_offered",
    "log_p50_over_slo",
    "log_p99_over_slo",
    "log_max_p99_over_slo",
    "error_rate",
    "cpu_util",
    "cpu_util_max",
    "cfs_throttled_fraction",
    "gc_cpu_fraction",
    "log_goroutines_per_replica",
    "goroutine_zscore",
    "log_alloc_rate",
    "heap_over_memlimit",
    "log2_replicas",
    "gomaxprocs",
    "log2_gogc",
    "log2_gomemlimit",
    "log2_object_pool",
    "log2_conn_pool",
    "prefetch_on",
    "turbo_on",
    "log_rtt_mean_ms",
    "log_rtt_std_ms",
    "cpu_temp",
    "cpu_freq_ghz",
    "numa_remote_fraction",
    "p99_trend",
)
N_FEATURES = len(FEATURE_NAMES)
FEATURE_LOW = -10.0
FEATURE_HIGH = 10.0


# Neutral value per telemetry column where a reading is missing or non-finite.
_NEUTRAL = np.zeros(N_TELEMETRY)
for _name, _value in {
    "replicas": 1.0,
    "gomaxprocs": 1.0,
    "gogc": 100.0,
    "gomemlimit_bytes": 8192.0 * 2**20,
    "prefetch_on": 1.0,
    "turbo_on": 1.0,
    "cpu_temp_c": 60.0,
    "cpu_freq_ghz": 3.0,
}.items():
    _NEUTRAL[COL[_name]] = _value
_C = COL
_F = {name: i for i, name in enumerate(FEATURE_NAMES)}
# Feature groups for featurize: copied as they are; log over the SLO; log1p with a scale; log2 with a scale.
_COPY = ("error_rate", "cpu_util", "cfs_throttled_fraction", "gc_cpu_fraction", "prefetch_on", "turbo_on",
         "numa_remote_fraction")  # fmt: skip
_F_COPY = [_F[f] for f in _COPY]
_COPY_COLS = [COL[f] for f in _COPY]
_F_LOG_SLO = [_F["log_p50_over_slo"], _F["log_p99_over_slo"], _F["log_max_p99_over_slo"]]
_PER_REPLICA_COLS = [COL["offered_qps"], COL["goroutines"]]
_LOG1P_COLS = [COL["alloc_bytes_per_s"], COL["rtt_mean_ms"], COL["rtt_std_ms"]]
_F_LOG1P = [_F[f] for f in ("log_offered_qps", "log_offered_qps_per_replica", "log_goroutines_per_replica",
                            "log_alloc_rate", "log_rtt_mean_ms", "log_rtt_std_ms")]  # fmt: skip
_LOG1P_DIV = np.array([3.0, 3.0, 3.0, 10.0, 1.0, 1.0])
_F_LOG2 = [_F[f] for f in ("log2_replicas", "log2_gogc", "log2_gomemlimit", "log2_object_pool", "log2_conn_pool")]
_LOG2_DIV = np.array([1.0, 1.0, 1.0, 4.0, 4.0])
#: Columns featurize reads over the whole window (the rest only from the last sample).
_HIST_COLS = [COL["offered_qps"], COL["p99_ms"], COL["cpu_util"], COL["goroutines"]]
_H_OFFERED, _H_P99, _H_CPU, _H_GOROUTINES = range(4)


def _clean(values: FloatArray, neutral: FloatArray) -> FloatArray:
    """Negative readings to 0, non-finite ones to the column's neutral value."""
    x = np.maximum(values, 0.0)
    bad = ~np.isfinite(values)
    if bad.any():
        x = np.where(bad, neutral, x)
    return x


def featurize(
    window: Sequence[TelemetrySample] | npt.ArrayLike,
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
) -> npt.NDArray[np.float32]:
    """The policy's view of a telemetry window: a float32 vector of :data:`FEATURE_NAMES`.

    ``window`` holds the most recent samples, oldest first (a sequence of
    :class:`TelemetrySample`, a ``(n, F)`` array, or a ``(batch, n, F)`` array for many
    services at once, giving ``(batch, N_FEATURES)``). Every feature is finite and inside
    ``[FEATURE_LOW, FEATURE_HIGH]`` whatever the input: NaN, inf and negative readings map
    to neutral values (a missing P99 reads as exactly the SLO, a missing temperature as
    60 °C), so a broken sensor cannot push the policy off its training range.
    """
    if not (math.isfinite(slo_p99_ms) and slo_p99_ms > 0):
        raise ConfigError(f"slo_p99_ms={slo_p99_ms!r} must be a positive number of milliseconds")
    arr = window_array(window)
    neutral = _NEUTRAL.copy()
    neutral[_C["p99_ms"]] = slo_p99_ms
    neutral[_C["p50_ms"]] = slo_p99_ms / 4.0
    # Clean only what is read: the last sample and the four columns read over the window.
    last = _clean(arr[..., -1, :], neutral)
    hist = _clean(arr[..., _HIST_COLS], neutral[_HIST_COLS])
    n = arr.shape[-2]
    k = max(1, min(3, n // 2))
    head = np.add.reduce(hist[..., :k, :], axis=-2) / k  # what .mean() computes, without its overhead
    tail = np.add.reduce(hist[..., -k:, :], axis=-2) / k
    # Features are computed in groups over gathered columns (one numpy call per group,
    # not per feature): the simulator calls this every step for every service.
    out = np.empty((*last.shape[:-1], N_FEATURES))
    offered = last[..., _C["offered_qps"]]
    replicas = np.maximum(last[..., _C["replicas"]], 1.0)
    memlimit = np.maximum(last[..., _C["gomemlimit_bytes"]], 2.0**20)
    out[..., _F_COPY] = last[..., _COPY_COLS]
    p_ms = np.stack([last[..., _C["p50_ms"]], last[..., _C["p99_ms"]], hist[..., _H_P99].max(axis=-1)], axis=-1)
    out[..., _F_LOG_SLO] = np.log(np.maximum(p_ms, 1e-3)) - math.log(slo_p99_ms)
    per_replica = last[..., _PER_REPLICA_COLS] / replicas[..., None]
    log1p_in = np.concatenate([offered[..., None], per_replica, last[..., _LOG1P_COLS]], axis=-1)
    out[..., _F_LOG1P] = np.log1p(log1p_in) / _LOG1P_DIV
    log2_in = np.stack([
        replicas, np.maximum(last[..., _C["gogc"]], 1.0) / 100.0, memlimit / 2.0**30,
        last[..., _C["object_pool_size"]] + 1.0, last[..., _C["conn_pool_size"]] + 1.0,
    ], axis=-1)  # fmt: skip
    out[..., _F_LOG2] = np.log2(log2_in) / _LOG2_DIV
    head_offered = head[..., _H_OFFERED]
    out[..., _F["offered_trend"]] = (tail[..., _H_OFFERED] - head_offered) / np.maximum(head_offered, 1.0)
    out[..., _F["served_over_offered"]] = last[..., _C["served_qps"]] / np.maximum(offered, 1.0)
    out[..., _F["cpu_util_max"]] = hist[..., _H_CPU].max(axis=-1)
    gor = hist[..., _H_GOROUTINES]
    out[..., _F["goroutine_zscore"]] = (last[..., _C["goroutines"]] - gor.mean(axis=-1)) / np.maximum(
        gor.std(axis=-1), 1.0
    )
    out[..., _F["heap_over_memlimit"]] = last[..., _C["heap_bytes"]] / memlimit
    out[..., _F["gomaxprocs"]] = last[..., _C["gomaxprocs"]] / 4.0
    out[..., _F["cpu_temp"]] = (last[..., _C["cpu_temp_c"]] - 60.0) / 20.0
    out[..., _F["cpu_freq_ghz"]] = last[..., _C["cpu_freq_ghz"]] / 3.0
    p99_tail = np.maximum(tail[..., _H_P99], 1e-3)
    p99_head = np.maximum(head[..., _H_P99], 1e-3)
    out[..., _F["p99_trend"]] = np.log(p99_tail / p99_head)
    np.copyto(out, 0.0, where=np.isnan(out))  # +-inf are clipped to the range below
    return np.minimum(np.maximum(out, FEATURE_LOW), FEATURE_HIGH).astype(np.float32)


# ------------------------------------------------------------------------ schema hash


def schema_description() -> dict[str, Any]:
    """Everything a trained policy depends on, in one JSON-able dict."""
    return {
        "version": SCHEMA_VERSION,
        "telemetry_fields": list(TELEMETRY_FIELDS),
        "knob_fields": list(KNOB_FIELDS),
        "ladders": {k: list(v) for k, v in LADDERS.items()},
        "action_nvec": list(ACTION_NVEC),
        "noop_action": list(NOOP_ACTION),
        "feature_names": list(FEATURE_NAMES),
        "feature_range": [FEATURE_LOW, FEATURE_HIGH],
        "window": DEFAULT_WINDOW,
    }


SCHEMA_HASH: str = hashlib.sha256(json.dumps(schema_description(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How a policy's features were computed, stored in its artifact manifest."""

    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    window: int = DEFAULT_WINDOW
    schema_hash: str = field(default=SCHEMA_HASH)
