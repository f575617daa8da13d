"""Offered-load generators: constant, diurnal, ramp, step, flash crowd, trace replay.

Each returns requests/s for every step of an episode as one numpy array; Poisson noise
on the per-step request count is added on request.
"""

from __future__ import annotations

import os
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from chaos.spec import LoadSpec
from rlctl.errors import ConfigError
from rlctl.inputs import MAX_TRACE_BYTES, decode_utf8, read_bytes

Array = npt.NDArray[np.float64]
#: Largest request count one trace interval may hold (a trace is requests per interval, not bytes).
MAX_TRACE_VALUE = 1e9


def _trace_text(p: Path) -> str:
    """The trace's text: size-limited, gunzipped without a decompression bomb, UTF-8 decoded."""
    data = read_bytes(p, what="trace", max_bytes=MAX_TRACE_BYTES)
    if p.suffix == ".gz":
        try:
            unzip = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
            raw = unzip.decompress(data, MAX_TRACE_BYTES)
        except zlib.error as exc:
            raise ConfigError(f"{p}: not a gzip file ({exc}); drop the .gz suffix if it is plain text") from None
        if unzip.unconsumed_tail:
            raise ConfigError(f"{p}: the trace unpacks to more than {MAX_TRACE_BYTES:,} bytes; is this the right file?")
        data = raw
    return decode_utf8(data, source=str(p), what="trace")


@lru_cache(maxsize=16)
def _read_trace_cached(path: str, mtime: float) -> Array:
    p = Path(path)
    values: list[float] = []
    for lineno, line in enumerate(_trace_text(p).splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            v = float(text.split()[-1])
        except ValueError:
            raise ConfigError(
                f"{p}:{lineno}: {text[:80]!r} is not a number; a trace has one request count per line "
                "('#' starts a comment)"
            ) from None
        if not np.isfinite(v) or v < 0 or v > MAX_TRACE_VALUE:
            raise ConfigError(f"{p}:{lineno}: request count {v!r} must be a finite number in 0..{MAX_TRACE_VALUE:g}")
        values.append(v)
    if not values:
        raise ConfigError(f"{p}: the trace has no values; it needs one request count per line")
    # Parsed once per (path, mtime) and shared read-only: every training reset replays it.
    arr = np.array(values, dtype=np.float64)
    arr.flags.writeable = False
    return arr


def read_trace(path: str | Path) -> Array:
    """One value per line (requests per interval), ``#`` comments, ``.gz`` allowed.

    The array is read-only (parsed once per file version and shared); copy it to change it.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read trace ({exc.strerror}); check the path") from None
    return _read_trace_cached(os.path.realpath(p), st.st_mtime)


def trace_qps(
    path: str | Path,
    n_steps: int,
    dt_s: float,
    *,
    interval_s: float = 60.0,
    peak_qps: float = 1000.0,
    offset_s: float = 0.0,
    time_scale: float = 1.0,
) -> Array:
    """A trace replayed at ``dt_s`` resolution, scaled so its peak is ``peak_qps``.

    ``time_scale`` > 1 plays the trace faster (one trace interval lasts
    ``interval_s / time_scale`` seconds). The trace wraps around at its end.
    """
    values = read_trace(path)
    peak = values.max()
    if peak <= 0:
        raise ConfigError(f"{path}: the trace is all zeros; it cannot be scaled to a peak")
    t = offset_s + np.arange(n_steps) * dt_s * time_scale
    pos = (t / interval_s) % len(values)
    idx = np.floor(pos).astype(np.int64)
    nxt = (idx + 1) % len(values)
    frac = pos - idx
    rate = (1.0 - frac) * values[idx] + frac * values[nxt]
    return rate / peak * peak_qps


def load_qps(spec: LoadSpec, n_steps: int, dt_s: float, rng: np.random.Generator | None = None) -> Array:
    """Requests/s for each of ``n_steps`` steps of ``dt_s`` seconds."""
    t = np.arange(n_steps) * dt_s
    if spec.kind == "constant":
        q = np.full(n_steps, spec.qps)
    elif spec.kind == "diurnal":
        phase = 2 * np.pi * (t + spec.phase_s) / spec.period_s
        q = spec.base_qps + (spec.peak_qps - spec.base_qps) * 0.5 * (1 - np.cos(phase))
    elif spec.kind == "ramp":
        span = max(t[-1], dt_s) if n_steps else dt_s
        q = spec.start_qps + (spec.end_qps - spec.start_qps) * t / span
    elif spec.kind == "step":
        q = np.where(t >= spec.at_s, spec.step_qps, spec.base_qps)
    elif spec.kind == "flash":
        dt_flash = t - spec.at_s
        rise = np.clip(dt_flash / spec.rise_s, 0.0, 1.0)
        decay = np.exp(-np.maximum(dt_flash - spec.rise_s, 0.0) / spec.decay_s)
        q = spec.base_qps + (spec.peak_qps - spec.base_qps) * rise * decay * (dt_flash >= 0)
    elif spec.kind == "trace":
        assert spec.path is not None
        q = trace_qps(
            spec.path,
            n_steps,
            dt_s,
            interval_s=spec.interval_s,
            peak_qps=spec.peak_qps,
            offset_s=spec.offset_s,
            time_scale=spec.time_scale,
        )
    else:  # pragma: no cover - LoadSpec validates kind
        raise ConfigError(f"unknown load kind {spec.kind!r}")
    q = np.maximum(q, 0.0)
    if spec.noise and rng is not None:
        q = rng.poisson(q * dt_s) / dt_s
    return q.astype(np.float64)
