"""Online detection of a service crossing its performance boundary.

The detector keeps a rolling window of *calm* telemetry samples as its baseline and
tests every new sample against it with four signals:

===========  =========================================================================
signal       fires when
===========  =========================================================================
p99_rise     P99 > (1 + ``p99_rise``) x the baseline median P99 (default: up 300 %, > 4x)
p99_mad      P99 > median + ``k_mad`` x MAD (robust: one spike in the window does not
             move the median or the MAD the way it moves a mean and a standard deviation)
alloc_rate   allocation rate > median + ``k_mad`` x MAD of the baseline allocation rate
goroutines   goroutines > baseline mean + ``k_sigma`` x standard deviation
===========  =========================================================================

MAD is scaled by 1.4826 so that it estimates the standard deviation of normal data
(Rousseeuw & Croux, 1993). A boundary *event* is emitted when every ``require`` signal
and at least one ``any_of`` signal fire on ``consecutive`` samples in a row; by default
that is "P99 up 300 % and (goroutines or allocation rate or P99-MAD)" on two samples.
Only samples on which no signal fired are learned, so the baseline cannot drift into the
saturated regime it is meant to detect. One event is emitted per excursion: the detector
re-arms after a sample on which the rule does not hold.

:func:`saturation_forecast` extrapolates how close the service is to the boundary 60 s
ahead (1.0 = at it); the online controller exports it as ``rlctl_boundary_saturation_ratio``.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlctl.contract import TelemetrySample
from rlctl.errors import ConfigError

logger = logging.getLogger(__name__)

#: Every signal the detector computes, in report order.
SIGNALS: tuple[str, ...] = ("p99_rise", "p99_mad", "alloc_rate", "goroutines")

#: Scale that makes the median absolute deviation estimate a normal standard deviation.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class DetectorConfig:
    """Every rule and constant of :class:`BoundaryDetector`."""

    window: int = 30
    """Calm samples kept as the baseline (30 x 5 s = the last 2.5 calm minutes)."""
    interval_s: float = 5.0
    """Expected spacing of samples; documents the window's span, not enforced."""
    warmup: int = 5
    """Samples learned before any signal may fire; fewer make the MAD meaningless."""
    k_mad: float = 3.0
    """Robust threshold: median + k_mad x scaled MAD, for P99 and allocation rate."""
    k_sigma: float = 2.5
    """Goroutine threshold: baseline mean + k_sigma x standard deviation."""
    p99_rise: float = 3.0
    """Relative P99 rise over the baseline median: 3.0 = up 300 % (P99 > 4x median)."""
    min_rel_spread: float = 0.05
    """Floor on the MAD as a fraction of the median: a perfectly flat baseline would
    otherwise make the smallest wiggle fire."""
    min_sigma: float = 1.0
    """Floor on the goroutine standard deviation, in goroutines, for the same reason."""
    require: tuple[str, ...] = ("p99_rise",)
    """Signals that must all fire."""
    any_of: tuple[str, ...] = ("goroutines", "alloc_rate", "p99_mad")
    """At least one of these must fire too (empty: no extra condition)."""
    consecutive: int = 2
    """Samples in a row the rule must hold before an event; 1 reacts to single spikes."""
    learn_after_warmup: bool = True
    """Keep learning calm samples after warm-up (online). False freezes the baseline on the
    warm-up samples, which is what a load ramp wants: its first steps are the baseline."""
    forecast_points: int = 12
    """Most recent samples the saturation forecast fits its trend to."""
    warmup_outlier_ratio: float = 0.0
    """When > 0, a warm-up sample whose P99 is more than this many times the lowest warm-up
    P99 is not learned (and learned ones above it are dropped when a lower one arrives).
    Latency noise from other tenants on a shared host only ever adds delay, so the lowest
    warm-up P99s are the service's own; 0 keeps every calm warm-up sample."""
    warmup_max_samples: int = 0
    """Arm after this many warm-up samples even if fewer than ``warmup`` were consistent,
    with the ``warmup`` samples of lowest P99 as the baseline (0: three times ``warmup``).
    Only matters with ``warmup_outlier_ratio``."""

    def __post_init__(self) -> None:
        unknown = (set(self.require) | set(self.any_of)) - set(SIGNALS)
        if unknown:
            raise ConfigError(f"detector config: unknown signal(s) {sorted(unknown)}; choose from {list(SIGNALS)}")
        if not self.require and not self.any_of:
            raise ConfigError("detector config: require and any_of are both empty, so nothing could ever fire")
        if self.warmup < 3:
            raise ConfigError(f"detector config: warmup={self.warmup} is below 3; a median and MAD need 3 samples")
        if self.window < self.warmup:
            raise ConfigError(f"detector config: window={self.window} is smaller than warmup={self.warmup}")
        if self.consecutive < 1:
            raise ConfigError(f"detector config: consecutive={self.consecutive} must be at least 1")
        if self.warmup_outlier_ratio and self.warmup_outlier_ratio <= 1:
            raise ConfigError(
                f"detector config: warmup_outlier_ratio={self.warmup_outlier_ratio} must be above 1 (or 0 for off)"
            )
        for name in ("k_mad", "k_sigma", "p99_rise", "interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"detector config: {name}={getattr(self, name)!r} must be positive")


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal on one sample: its value, the threshold it was held to, and the verdict."""

    name: str
    value: float
    threshold: float
    fired: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _json_num(self.value), "threshold": _json_num(self.threshold),
                "fired": self.fired}  # fmt: skip


@dataclass(frozen=True)
class Baseline:
    """The statistics of the calm window that thresholds are computed from."""

    n: int
    p99_median: float
    p99_spread: float
    alloc_median: float
    alloc_spread: float
    goroutines_mean: float
    goroutines_std: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_num(getattr(self, k)) if k != "n" else self.n for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class BoundaryEvent:
    """The boundary was crossed: when, which signals said so, on which sample.

    ``profiles`` maps a pprof profile kind to the file it was saved in; failures to
    capture are in ``profile_errors`` (a capture failure never hides the event).
    """

    time_s: float
    signals: tuple[Signal, ...]
    sample: TelemetrySample
    baseline: Baseline
    profiles: dict[str, str] = field(default_factory=dict)
    profile_errors: dict[str, str] = field(default_factory=dict)

    @property
    def fired(self) -> list[str]:
        return [s.name for s in self.signals if s.fired]

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "fired": self.fired,
            "signals": [s.to_dict() for s in self.signals],
            "baseline": self.baseline.to_dict(),
            "sample": {k: _json_num(v) if isinstance(v, float) else v for k, v in self.sample.to_dict().items()},
            "profiles": dict(self.profiles),
            "profile_errors": dict(self.profile_errors),
        }


def _json_num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _median_spread(values: np.ndarray, min_rel_spread: float) -> tuple[float, float]:
    """Median and scaled MAD of the finite values (NaN, NaN with fewer than three)."""
    v = values[np.isfinite(values)]
    if v.size < 3:
        return math.nan, math.nan
    med = float(np.median(v))
    mad = MAD_TO_SIGMA * float(np.median(np.abs(v - med)))
    return med, max(mad, min_rel_spread * abs(med))


class BoundaryDetector:
    """Online boundary detector over a rolling window of :class:`TelemetrySample`.

    Feed samples in time order to :meth:`update`; it returns a :class:`BoundaryEvent`
    when the boundary is crossed, else None. With ``pprof_url`` (e.g.
    ``http://127.0.0.1:9091/debug/pprof``, gosvc's admin listener) it saves a goroutine dump
    (``goroutine?debug=1``) and a heap profile into ``profile_dir`` at that moment, sending
    ``pprof_token`` as a bearer token when given (gosvc's pprof needs its admin token).
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        pprof_url: str | None = None,
        pprof_token: str | None = None,
        profile_dir: str | Path | None = None,
        profile_timeout_s: float = 5.0,
    ) -> None:
        self.config = config or DetectorConfig()
        self.pprof_url = pprof_url.rstrip("/") if pprof_url else None
        self.pprof_token = pprof_token
        self.profile_dir = Path(profile_dir) if profile_dir is not None else Path("boundary-profiles")
        self.profile_timeout_s = profile_timeout_s
        self._calm: deque[TelemetrySample] = deque(maxlen=self.config.window)
        self._recent: deque[TelemetrySample] = deque(maxlen=max(self.config.forecast_points, 2))
        self._armed = False
        self._warmup_samples: list[TelemetrySample] = []
        self._streak = 0
        self.events: list[BoundaryEvent] = []
        self.last_signals: tuple[Signal, ...] = ()

    # ------------------------------------------------------------------ state

    @property
    def warmed_up(self) -> bool:
        return self._armed

    @property
    def streak(self) -> int:
        """Consecutive samples on which the rule held (the current excursion's length)."""
        return self._streak

    def baseline(self) -> Baseline:
        """Statistics of the calm window now (NaN fields while it has under three samples)."""
        cfg = self.config
        p99 = np.array([s.p99_ms for s in self._calm], dtype=np.float64)
        alloc = np.array([s.alloc_bytes_per_s for s in self._calm], dtype=np.float64)
        gor = np.array([s.goroutines for s in self._calm], dtype=np.float64)
        gor = gor[np.isfinite(gor)]
        p99_med, p99_spread = _median_spread(p99, cfg.min_rel_spread)
        alloc_med, alloc_spread = _median_spread(alloc, cfg.min_rel_spread)
        g_mean = float(gor.mean()) if gor.size >= 3 else math.nan
        g_std = max(float(gor.std(ddof=1)), cfg.min_sigma) if gor.size >= 3 else math.nan
        return Baseline(len(self._calm), p99_med, p99_spread, alloc_med, alloc_spread, g_mean, g_std)

    # ------------------------------------------------------------------ rule

    def evaluate(self, sample: TelemetrySample) -> tuple[Signal, ...]:
        """The four signals on ``sample`` against the current baseline; no state changes.

        Before warm-up, and for a value or threshold that is NaN, a signal does not fire.
        """
        cfg, b = self.config, self.baseline()
        thresholds = {
            "p99_rise": (sample.p99_ms, (1.0 + cfg.p99_rise) * b.p99_median),
            "p99_mad": (sample.p99_ms, b.p99_median + cfg.k_mad * b.p99_spread),
            "alloc_rate": (sample.alloc_bytes_per_s, b.alloc_median + cfg.k_mad * b.alloc_spread),
            "goroutines": (sample.goroutines, b.goroutines_mean + cfg.k_sigma * b.goroutines_std),
        }
        armed = self.warmed_up
        return tuple(
            Signal(name, value, threshold, bool(armed and value > threshold))  # NaN compares False
            for name, (value, threshold) in thresholds.items()
        )

    def rule_holds(self, signals: Sequence[Signal]) -> bool:
        fired = {s.name for s in signals if s.fired}
        cfg = self.config
        return set(cfg.require) <= fired and (not cfg.any_of or bool(fired & set(cfg.any_of)))

    def update(self, sample: TelemetrySample) -> BoundaryEvent | None:
        """Test ``sample``, learn it if calm, and return an event when the boundary is crossed."""
        signals = self.evaluate(sample)
        self.last_signals = signals
        self._recent.append(sample)
        holds = self.rule_holds(signals)
        self._streak = self._streak + 1 if holds else 0
        calm = not any(s.fired for s in signals)
        if not self._armed:
            self._warm_up(sample)
        elif calm and self.config.learn_after_warmup:
            self._calm.append(sample)
        if self._streak != self.config.consecutive:
            return None
        return self.emit(sample, signals)

    def emit(self, sample: TelemetrySample, signals: tuple[Signal, ...]) -> BoundaryEvent:
        """Record a boundary event at ``sample`` (with profiles when ``pprof_url`` is set).

        :meth:`update` calls this when the rule held on ``consecutive`` samples; a caller
        confirming on finer evidence (the probe, on consecutive intervals) calls it directly.
        """
        event = BoundaryEvent(time_s=sample.timestamp_s, signals=signals, sample=sample, baseline=self.baseline())
        if self.pprof_url:
            profiles, errors = capture_profiles(
                self.pprof_url,
                self.profile_dir,
                stamp=sample.timestamp_s,
                timeout_s=self.profile_timeout_s,
                token=self.pprof_token,
            )
            event = BoundaryEvent(event.time_s, signals, sample, event.baseline, profiles, errors)
        logger.info("boundary crossed at %.1f: %s", event.time_s, ", ".join(event.fired))
        self.events.append(event)
        return event

    def _warm_up(self, sample: TelemetrySample) -> None:
        cfg = self.config
        self._warmup_samples.append(sample)
        ratio, p99 = cfg.warmup_outlier_ratio, sample.p99_ms
        if ratio > 0 and math.isfinite(p99):
            lowest = min([p99] + [s.p99_ms for s in self._calm if math.isfinite(s.p99_ms)])
            kept = [s for s in self._calm if not s.p99_ms > ratio * lowest]
            self._calm.clear()
            self._calm.extend(kept)
            if p99 <= ratio * lowest:
                self._calm.append(sample)
        else:
            self._calm.append(sample)
        limit = cfg.warmup_max_samples or 3 * cfg.warmup
        if len(self._calm) >= cfg.warmup:
            self._armed = True
        elif len(self._warmup_samples) >= limit:
            # Never consistent enough: take the least disturbed warm-up samples as they are.
            finite = [s for s in self._warmup_samples if math.isfinite(s.p99_ms)]
            self._calm.clear()
            self._calm.extend(sorted(finite, key=lambda s: s.p99_ms)[: cfg.warmup])
            self._armed = True
        if self._armed:
            logger.debug("detector armed after %d warm-up samples: %s", len(self._warmup_samples), self.baseline())
            self._warmup_samples.clear()

    def forecast(self, horizon_s: float = 60.0) -> float:
        """:func:`saturation_forecast` over the recent samples against this baseline."""
        return saturation_forecast(
            list(self._recent), horizon_s, baseline_p99_ms=self.baseline().p99_median, p99_rise=self.config.p99_rise
        )


# ---------------------------------------------------------------------- profiles

#: pprof endpoints saved at a boundary event: kind -> (path under /debug/pprof, file suffix).
PROFILES: dict[str, tuple[str, str]] = {
    "goroutine": ("goroutine?debug=1", "txt"),
    "heap": ("heap", "pb.gz"),
}


#: What a pprof HTTP error most likely means, and the fix.
_PPROF_HINTS = {
    401: "the pprof endpoint wants a bearer token: pass gosvc's admin token (--pprof-token-file)",
    403: "the service has no admin token configured, so its pprof is off: start it with --admin-token-file",
    404: "no pprof there: gosvc serves it on its admin listener only (--pprof-url http://ADMIN_ADDR/debug/pprof, "
    "ADMIN_ADDR from the admin_addr of its startup line)",
}


def capture_profiles(
    pprof_url: str,
    out_dir: str | Path,
    *,
    stamp: float | None = None,
    timeout_s: float = 5.0,
    token: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Save the goroutine and heap profiles from ``pprof_url`` into ``out_dir``.

    ``token`` goes along as ``Authorization: Bearer`` (gosvc's pprof needs its admin token).
    Returns ``(paths, errors)`` keyed by profile kind; a profile that cannot be fetched
    goes to ``errors`` with the reason instead of raising.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    when = stamp if stamp is not None and math.isfinite(stamp) else time.time()
    tag = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
    paths: dict[str, str] = {}
    errors: dict[str, str] = {}
    for kind, (endpoint, suffix) in PROFILES.items():
        url = f"{pprof_url.rstrip('/')}/{endpoint}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            hint = _PPROF_HINTS.get(exc.code)
            errors[kind] = f"{url}: HTTP {exc.code} {exc.reason}" + (f"; {hint}" if hint else "")
            logger.warning("could not capture %s profile: %s", kind, errors[kind])
            continue
        except (urllib.error.URLError, OSError) as exc:
            errors[kind] = f"{url}: {getattr(exc, 'reason', exc)}"
            logger.warning("could not capture %s profile: %s", kind, errors[kind])
            continue
        path = out / f"boundary-{tag}-{kind}.{suffix}"
        path.write_bytes(body)
        paths[kind] = str(path)
    return paths, errors


# ---------------------------------------------------------------------- forecast


def saturation_forecast(
    samples: Sequence[TelemetrySample],
    horizon_s: float = 60.0,
    *,
    baseline_p99_ms: float | None = None,
    p99_rise: float = 3.0,
    util_boundary: float = 1.0,
) -> float:
    """How close the service will be to its boundary ``horizon_s`` from now (1.0 = at it).

    Per sample the saturation ratio is the larger of ``cpu_util / util_boundary`` and
    ``p99 / ((1 + p99_rise) x baseline P99)`` (the detector's P99-rise threshold), so
    either running out of CPU or latency climbing towards the threshold counts. A
    least-squares line through the ratios against time is extrapolated to ``horizon_s``
    after the last sample; the result is never negative. With one usable sample its
    ratio is returned as is; with none, NaN. ``baseline_p99_ms`` defaults to the median
    P99 of ``samples`` (pass the detector's baseline for a meaningful number).
    """
    if not samples:
        return math.nan
    t = np.array([s.timestamp_s for s in samples], dtype=np.float64)
    p99 = np.array([s.p99_ms for s in samples], dtype=np.float64)
    util = np.array([s.cpu_util for s in samples], dtype=np.float64)
    base = baseline_p99_ms
    if base is None or not math.isfinite(base):
        finite = p99[np.isfinite(p99)]
        base = float(np.median(finite)) if finite.size else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        p99_ratio = p99 / ((1.0 + p99_rise) * base) if base and base > 0 else np.full_like(p99, np.nan)
        ratio = np.fmax(util / util_boundary, p99_ratio)  # fmax ignores a NaN on one side
    ok = np.isfinite(ratio) & np.isfinite(t)
    if not ok.any():
        return math.nan
    if ok.sum() == 1 or np.ptp(t[ok]) == 0:
        return float(max(ratio[ok][-1], 0.0))
    slope, intercept = np.polyfit(t[ok] - t[ok][-1], ratio[ok], 1)
    return float(max(intercept + slope * horizon_s, 0.0))
