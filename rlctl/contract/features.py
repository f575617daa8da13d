"""The contract's features: :func:`featurize`, the only way a policy ever sees telemetry, written
against :mod:`rlctl.xp` so the batched simulator, the single environment and the live controller
run the same expressions. Part of :mod:`rlctl.contract`.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rlctl.contract.telemetry import (
    COL,
    DEFAULT_SLO_P99_MS,
    N_TELEMETRY,
    TELEMETRY_FIELDS,
    FloatArray,
    TelemetrySample,
    window_array,
)
from rlctl.errors import ConfigError
from rlctl.xp import NUMPY, SCALAR, Namespace

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
