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
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError
from rlctl.xp import NUMPY, SCALAR, Namespace

SCHEMA_VERSION = "1.0"

#: Version of the simulator's dynamics (:mod:`envs.go_service`) a policy was trained in. It lives
#: here, not in :mod:`envs`, so the artifact loader can check it without importing the simulator;
#: bump it when the simulator changes in a way that invalidates trained policies.
ENV_VERSION = "0"

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


#: Knobs with more legal values than this get no transition table (see :func:`row_applier`).
_MAX_TRANSITION_VALUES = 4096


@functools.lru_cache(maxsize=64)
def _transition_tables(bounds: KnobBounds) -> tuple[dict[tuple[float, int], float], ...] | None:
    """Per knob: ``(legal value, action component) -> next value``, computed by :func:`apply_array`.

    Each knob moves independently of the others under :func:`apply_array`, so one call
    over every legal value of every knob and every action component tabulates it; the
    table is ``apply_array`` itself, looked up. ``None`` when a knob has too many values.
    """
    lows, highs, _, ladders = _bounds_arrays(bounds)
    base = clamp_array(lows, bounds)
    tables: list[dict[tuple[float, int], float]] = []
    for col in range(len(KNOB_FIELDS)):
        if col in ladders:
            values = ladders[col]
        else:
            if highs[col] - lows[col] >= _MAX_TRANSITION_VALUES:
                return None
            values = np.arange(lows[col], highs[col] + 1.0)
        n_actions = ACTION_NVEC[col]
        rows = np.tile(base, (values.size * n_actions, 1))
        rows[:, col] = np.repeat(values, n_actions)
        actions = np.tile(np.asarray(NOOP_ACTION, dtype=np.int64), (rows.shape[0], 1))
        actions[:, col] = np.tile(np.arange(n_actions), values.size)
        nxt = apply_array(rows, actions, bounds)[:, col]
        keys = zip(rows[:, col].tolist(), actions[:, col].tolist(), strict=True)
        tables.append(dict(zip(keys, nxt.tolist(), strict=True)))
    return tuple(tables)


class RowApplier:
    """``f(knobs, action)``: :func:`apply_array` of one knob row of floats, as a list of floats.

    The simulator's single environment calls it every step: one table lookup per knob
    (tables built by ``apply_array`` for these bounds), falling back to ``apply_array``
    for rows the tables do not cover (knobs off their legal values, out-of-range actions).
    Pickles as its bounds.
    """

    __slots__ = ("_tables", "bounds")

    def __init__(self, bounds: KnobBounds) -> None:
        self.bounds = bounds
        self._tables = _transition_tables(bounds)

    def __reduce__(self) -> tuple[type[RowApplier], tuple[KnobBounds]]:
        return (RowApplier, (self.bounds,))

    def __call__(self, knobs: Sequence[float], action: Sequence[int]) -> list[float]:
        tables = self._tables
        if tables is not None and len(knobs) == len(tables) == len(action):
            try:
                return [t[k, a] for t, k, a in zip(tables, knobs, action, strict=True)]
            except (KeyError, TypeError):
                pass
        return [float(v) for v in apply_array(np.asarray(knobs, dtype=np.float64), action, self.bounds)]


def row_applier(bounds: KnobBounds) -> RowApplier:
    """:class:`RowApplier` for ``bounds``."""
    return RowApplier(bounds)


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
_INF = math.inf
#: Columns featurize reads over the whole window (the rest only from the last sample).
_HIST_COLS = [COL["offered_qps"], COL["p99_ms"], COL["cpu_util"], COL["goroutines"]]
_H_OFFERED, _H_P99, _H_CPU, _H_GOROUTINES = range(4)
_HIST_GET = operator.itemgetter(*_HIST_COLS)
_ROW_LENGTHS = {N_TELEMETRY}


def _clean(values: FloatArray, neutral: FloatArray) -> FloatArray:
    """Negative readings to 0, non-finite ones to the column's neutral value."""
    x = np.maximum(values, 0.0)
    bad = ~np.isfinite(values)
    if bad.any():
        x = np.where(bad, neutral, x)
    return x


class _WindowStats(NamedTuple):
    """What featurize reads from the whole window (per service: arrays, or floats)."""

    head_offered: Any
    tail_offered: Any
    head_p99: Any
    tail_p99: Any
    max_p99: Any
    max_cpu: Any
    goroutine_mean: Any
    goroutine_std: Any


def _feature_values(last: Any, h: _WindowStats, log_slo: float, xp: Namespace) -> list[Any]:
    """Every feature, in :data:`FEATURE_NAMES` order, from the cleaned last sample and the window.

    ``last`` holds the last sample's columns in :data:`TELEMETRY_FIELDS` order (``(N,)``
    arrays with ``xp=NUMPY``, floats with ``xp=SCALAR``). The one place features are computed.
    """
    log, log1p, log2, mx = xp.log, xp.log1p, xp.log2, xp.maximum
    (_, _, offered, served, p50, p99, error_rate, goroutines, _, gc_cpu_fraction, alloc, heap, cpu_util, cfs_throttled,
     replicas, gomaxprocs, gogc, memlimit, object_pool, conn_pool, prefetch_on, turbo_on, rtt_mean, rtt_std, temp,
     freq, numa) = last  # fmt: skip
    replicas = mx(replicas, 1.0)
    memlimit = mx(memlimit, 2.0**20)
    return [
        log1p(offered) / 3.0,  # log_offered_qps
        log1p(offered / replicas) / 3.0,  # log_offered_qps_per_replica
        (h.tail_offered - h.head_offered) / mx(h.head_offered, 1.0),  # offered_trend
        served / mx(offered, 1.0),  # served_over_offered
        log(mx(p50, 1e-3)) - log_slo,  # log_p50_over_slo
        log(mx(p99, 1e-3)) - log_slo,  # log_p99_over_slo
        log(mx(h.max_p99, 1e-3)) - log_slo,  # log_max_p99_over_slo
        error_rate,
        cpu_util,
        h.max_cpu,  # cpu_util_max
        cfs_throttled,  # cfs_throttled_fraction
        gc_cpu_fraction,
        log1p(goroutines / replicas) / 3.0,  # log_goroutines_per_replica
        (goroutines - h.goroutine_mean) / mx(h.goroutine_std, 1.0),  # goroutine_zscore
        log1p(alloc) / 10.0,  # log_alloc_rate
        heap / memlimit,  # heap_over_memlimit
        log2(replicas),  # log2_replicas
        gomaxprocs / 4.0,
        log2(mx(gogc, 1.0) / 100.0),  # log2_gogc
        log2(memlimit / 2.0**30),  # log2_gomemlimit
        log2(object_pool + 1.0) / 4.0,  # log2_object_pool
        log2(conn_pool + 1.0) / 4.0,  # log2_conn_pool
        prefetch_on,
        turbo_on,
        log1p(rtt_mean),  # log_rtt_mean_ms
        log1p(rtt_std),  # log_rtt_std_ms
        (temp - 60.0) / 20.0,  # cpu_temp
        freq / 3.0,  # cpu_freq_ghz
        numa,  # numa_remote_fraction
        log(mx(h.tail_p99, 1e-3) / mx(h.head_p99, 1e-3)),  # p99_trend
    ]


# _feature_values unpacks the last sample in this order: a contract change must go there too.
if TELEMETRY_FIELDS[:8] + TELEMETRY_FIELDS[9:] != (
    "timestamp_s", "interval_s", "offered_qps", "served_qps", "p50_ms", "p99_ms", "error_rate", "goroutines",
    "gc_cpu_fraction", "alloc_bytes_per_s", "heap_bytes", "cpu_util", "cfs_throttled_fraction", "replicas",
    "gomaxprocs", "gogc", "gomemlimit_bytes", "object_pool_size", "conn_pool_size", "prefetch_on", "turbo_on",
    "rtt_mean_ms", "rtt_std_ms", "cpu_temp_c", "cpu_freq_ghz", "numa_remote_fraction",
):  # fmt: skip
    raise ImportError("featurize's unpacking order no longer matches TELEMETRY_FIELDS")


def _neutral(slo_p99_ms: float) -> FloatArray:
    neutral = _NEUTRAL.copy()
    neutral[_C["p99_ms"]] = slo_p99_ms
    neutral[_C["p50_ms"]] = slo_p99_ms / 4.0
    return neutral


@functools.lru_cache(maxsize=16)
def _neutral_list(slo_p99_ms: float) -> tuple[float, ...]:
    return tuple(_neutral(slo_p99_ms).tolist())


def featurize(
    window: Sequence[TelemetrySample] | npt.ArrayLike,
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    xp: Namespace = NUMPY,
) -> npt.NDArray[np.float32]:
    """The policy's view of a telemetry window: a float32 vector of :data:`FEATURE_NAMES`.

    ``window`` holds the most recent samples, oldest first (a sequence of
    :class:`TelemetrySample`, a ``(n, F)`` array, or a ``(batch, n, F)`` array for many
    services at once, giving ``(batch, N_FEATURES)``). Every feature is finite and inside
    ``[FEATURE_LOW, FEATURE_HIGH]`` whatever the input: NaN, inf and negative readings map
    to neutral values (a missing P99 reads as exactly the SLO, a missing temperature as
    60 °C), so a broken sensor cannot push the policy off its training range.

    With ``xp=SCALAR`` (:mod:`rlctl.xp`) ``window`` is a sequence of rows of
    :data:`N_TELEMETRY` floats and the same features come out, computed on floats (the
    single simulated environment's fast path).
    """
    if not (math.isfinite(slo_p99_ms) and slo_p99_ms > 0):
        raise ConfigError(f"slo_p99_ms={slo_p99_ms!r} must be a positive number of milliseconds")
    if xp.scalar:
        return _featurize_rows(window, slo_p99_ms)  # type: ignore[arg-type]
    arr = window_array(window)
    neutral = _neutral(slo_p99_ms)
    # Clean only what is read: the last sample and the four columns read over the window.
    last = _clean(arr[..., -1, :], neutral)
    hist = _clean(arr[..., _HIST_COLS], neutral[_HIST_COLS])
    n = arr.shape[-2]
    k = max(1, min(3, n // 2))
    head = np.add.reduce(hist[..., :k, :], axis=-2) / k  # what .mean() computes, without its overhead
    tail = np.add.reduce(hist[..., -k:, :], axis=-2) / k
    peak = hist.max(axis=-2)
    gor = hist[..., _H_GOROUTINES]
    stats = _WindowStats(
        head_offered=head[..., _H_OFFERED],
        tail_offered=tail[..., _H_OFFERED],
        head_p99=head[..., _H_P99],
        tail_p99=tail[..., _H_P99],
        max_p99=peak[..., _H_P99],
        max_cpu=peak[..., _H_CPU],
        goroutine_mean=gor.mean(axis=-1),
        goroutine_std=gor.std(axis=-1),
    )
    columns = np.moveaxis(last, -1, 0)  # columns[col] is that column for every service
    values = _feature_values(columns, stats, math.log(slo_p99_ms), NUMPY)
    out = np.stack(values, axis=-1)
    np.copyto(out, 0.0, where=np.isnan(out))  # +-inf are clipped to the range below
    return np.minimum(np.maximum(out, FEATURE_LOW), FEATURE_HIGH).astype(np.float32)


def _clean_floats(values: Sequence[float], neutral: Sequence[float] | float) -> list[float]:
    """:func:`_clean` on floats: finite positive stays, finite non-positive is 0, the rest neutral.

    ``neutral`` is one value per reading or one value for all. A window the simulator
    wrote is clean already: one ``sum`` (NaN or infinite if any reading is) and one
    ``min`` show it, and the readings pass through.
    """
    total = sum(values)
    if -_INF < total < _INF and min(values) >= 0.0:
        return list(values)
    inf = _INF
    pairs = zip(values, neutral, strict=True) if isinstance(neutral, Sequence) else ((v, neutral) for v in values)
    return [v if 0.0 < v < inf else (0.0 if -inf < v <= 0.0 else d) for v, d in pairs]


def _featurize_rows(rows: Sequence[Sequence[float]], slo_p99_ms: float) -> npt.NDArray[np.float32]:
    """:func:`featurize` of one service's window given as rows of floats (``xp=SCALAR``)."""
    n = len(rows)
    if n == 0 or set(map(len, rows)) != _ROW_LENGTHS:
        raise ConfigError(f"telemetry window has {n} rows; expected n >= 1 rows of {N_TELEMETRY} floats")
    neutral = _neutral_list(slo_p99_ms)
    last = _clean_floats(rows[-1], neutral)
    cols = list(zip(*map(_HIST_GET, rows), strict=True))
    offered = _clean_floats(cols[_H_OFFERED], neutral[_HIST_COLS[_H_OFFERED]])
    p99 = _clean_floats(cols[_H_P99], neutral[_HIST_COLS[_H_P99]])
    cpu = _clean_floats(cols[_H_CPU], neutral[_HIST_COLS[_H_CPU]])
    gor = _clean_floats(cols[_H_GOROUTINES], neutral[_HIST_COLS[_H_GOROUTINES]])
    k = max(1, min(3, n // 2))
    mean = sum(gor) / n
    stats = _WindowStats(
        head_offered=sum(offered[:k]) / k,
        tail_offered=sum(offered[-k:]) / k,
        head_p99=sum(p99[:k]) / k,
        tail_p99=sum(p99[-k:]) / k,
        max_p99=max(p99),
        max_cpu=max(cpu),
        goroutine_mean=mean,
        goroutine_std=math.sqrt(sum(map(operator.mul, dev := [g - mean for g in gor], dev)) / n),
    )
    values = _feature_values(last, stats, math.log(slo_p99_ms), SCALAR)
    lo, hi = FEATURE_LOW, FEATURE_HIGH
    total = sum(values)  # finite: no NaN and no infinity among the features
    if not (-_INF < total < _INF and lo <= min(values) and max(values) <= hi):
        values = [0.0 if v != v else (lo if v < lo else (hi if v > hi else v)) for v in values]
    return np.array(values, dtype=np.float32)


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
