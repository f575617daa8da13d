"""The probe's configuration: the load :class:`Ramp`, :class:`ProbeConfig` (the ramp, the detector's
settings, the stop rule's parameters) and where the load target, ``/metrics``, pprof and the
``gosvc`` binary are. Part of :mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from rlctl.boundary.detector import DetectorConfig
from rlctl.boundary.knee import KNEE_METHODS
from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.errors import ConfigError
from rlctl.harness.process import find_gosvc

REPORT_SCHEMA = "rlctl.probe/v1"


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class Ramp:
    """A stepped ramp: ``start_qps + k * step_qps`` during step ``k`` of ``step_s`` seconds."""

    start_qps: float = 100.0
    step_qps: float = 100.0
    step_s: float = 5.0

    @classmethod
    def parse(cls, text: str, *, source: str = "--ramp") -> Ramp:
        parts = [p.strip().removesuffix("s") for p in text.split(",")]
        try:
            start, step, seconds = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"{source} {text!r}: want start,step,step-seconds as three numbers, e.g. 100,100,5"
            ) from None
        ramp = cls(start, step, seconds)
        ramp.validate(source)
        return ramp

    def validate(self, source: str = "ramp") -> None:
        values = (self.start_qps, self.step_qps, self.step_s)
        if not all(math.isfinite(v) for v in values) or self.start_qps < 0 or self.step_qps <= 0 or self.step_s <= 0:
            raise ConfigError(
                f"{source} {self.start_qps:g},{self.step_qps:g},{self.step_s:g}: need start >= 0, step > 0 and "
                "step-seconds > 0, e.g. 100,100,5"
            )

    def target(self, step: int) -> float:
        return self.start_qps + step * self.step_qps

    def steps_to(self, max_qps: float) -> int:
        """Number of steps up to and including the highest rate <= ``max_qps``."""
        return math.floor((max_qps - self.start_qps) / self.step_qps + 1e-9) + 1

    def __str__(self) -> str:
        return f"{self.start_qps:g},{self.step_qps:g},{self.step_s:g}"


@dataclass(frozen=True)
class ProbeConfig:
    """Everything one probe run needs; build with :meth:`from_cli` to normalise URLs."""

    url: str
    metrics_url: str
    pprof_url: str | None
    ramp: Ramp = Ramp()
    max_qps: float = 10_000.0
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    interval_s: float = 1.0
    loadgen: str = ""
    warmup_steps: int = 3
    """Steps at the start of the ramp that form the detector's baseline."""
    consecutive: int = 2
    """Steps in a row the boundary rule must hold before the ramp stops."""
    confirm_intervals: int = 0
    """Also stop once the rule holds on this many intervals in a row (each interval's P99
    against the baseline learned from whole steps), without waiting for the step to end
    (0, the default: confirm by whole steps only). A load step that breaks the service then
    stops the ramp within that step instead of one step later, but a two-second latency
    spike of a shared host can stop it early too: on the test-bed, 2 intervals stopped every
    probe within two steps of the sweeps' knee and put the knees 12-21 % low (see
    deploy/results/boundary-2026-11-28/)."""
    knee_method: str = "kneedle"
    """Which method gives the report's ``knee_qps``: "kneedle", "two-segment" (the other is
    the cross-check, ``knee_qps_second_method``) or "crossing" (the load where P99 crossed the
    detector's P99-rise threshold, interpolated between the steps around it; Kneedle
    cross-checks it). With ``confirm_intervals`` the curve ends in the cliff's first step, where
    Kneedle's knee comes early on gradual rises; on the test-bed with 3 intervals the crossing
    was within 10 % of the sweeps in 18 of 18 configuration-runs of the registered runs b12-b17,
    Kneedle in 13 (see deploy/results/boundary-2026-11-28/)."""
    warmup_outlier_ratio: float = 2.0
    """Warm-up steps with a P99 over this many times the lowest warm-up P99 are taken for
    interference and not learned (see :class:`DetectorConfig`)."""
    request_timeout_s: float = 2.0
    profile_dir: str | None = None
    pprof_token: str | None = field(default=None, repr=False)
    """Bearer token sent to ``pprof_url`` (gosvc serves pprof on its admin listener, behind its admin token)."""
    max_scrape_failures: int = 30
    """Give up after this many failed scrapes in a row (a saturated or starved service can
    miss a few; the client-side latency does not depend on them)."""
    scrape_timeout_s: float = 2.0
    stop_on_boundary: bool = True
    """False runs the whole ramp; detector events are still reported."""
    min_steps: int = 0
    """Do not stop before this many steps are complete (a ground-truth sweep wants a minimum
    number of levels); a boundary crossed earlier stops the ramp once they are."""
    detector: DetectorConfig | None = None
    """Overrides the detector built from ``warmup_steps`` and ``consecutive``."""

    def __post_init__(self) -> None:
        self.ramp.validate()
        if not self.max_qps >= self.ramp.start_qps:
            raise ConfigError(f"--max-qps {self.max_qps:g} is below the ramp start {self.ramp.start_qps:g}")
        if not self.slo_p99_ms > 0:
            raise ConfigError(f"--slo-p99-ms {self.slo_p99_ms!r} must be a positive number of milliseconds")
        if not self.interval_s > 0 or self.interval_s > self.ramp.step_s:
            raise ConfigError(
                f"--interval-s {self.interval_s:g} must be positive and at most the ramp's step seconds "
                f"({self.ramp.step_s:g}): every step needs at least one interval"
            )
        if self.confirm_intervals < 0:
            raise ConfigError(f"--confirm-intervals {self.confirm_intervals} must be >= 0 (0: whole steps only)")
        if self.knee_method not in KNEE_METHODS:
            raise ConfigError(f"--knee-method {self.knee_method!r}: use one of {', '.join(KNEE_METHODS)}")
        if self.ramp.steps_to(self.max_qps) < self.warmup_steps + self.consecutive:
            raise ConfigError(
                f"the ramp {self.ramp} reaches --max-qps {self.max_qps:g} in {self.ramp.steps_to(self.max_qps)} "
                f"steps, fewer than the {self.warmup_steps} warm-up plus {self.consecutive} detection steps; "
                "lower the step or raise --max-qps"
            )

    @classmethod
    def from_cli(
        cls,
        url: str,
        *,
        metrics_url: str | None = None,
        loadgen: str | None = None,
        pprof_url: str | None = None,
        **kw: Any,
    ) -> ProbeConfig:
        """``pprof_url`` overrides the default pprof base URL (see :func:`resolve_urls`)."""
        target, metrics, pprof = resolve_urls(url, metrics_url)
        if pprof_url is not None:
            p = urllib.parse.urlsplit(pprof_url)
            if p.scheme not in ("http", "https") or not p.netloc:
                raise ConfigError(
                    f"--pprof-url {pprof_url!r} is not an http(s) URL; e.g. http://127.0.0.1:9091/debug/pprof "
                    "(gosvc: the admin_addr of its startup line)"
                )
            pprof = pprof_url
        return cls(url=target, metrics_url=metrics, pprof_url=pprof, loadgen=resolve_loadgen(loadgen), **kw)

    def detector_config(self) -> DetectorConfig:
        if self.detector is not None:
            return self.detector
        return DetectorConfig(
            window=max(self.warmup_steps, 3),
            interval_s=self.ramp.step_s,
            warmup=max(self.warmup_steps, 3),
            consecutive=self.consecutive,
            learn_after_warmup=False,
            warmup_outlier_ratio=self.warmup_outlier_ratio,
            # The ramp climbs while warming up: give up on consistency after two extra steps.
            warmup_max_samples=max(self.warmup_steps, 3) + 2,
        )


def resolve_urls(url: str, metrics_url: str | None = None) -> tuple[str, str, str | None]:
    """(load target, /metrics URL, pprof base URL or None).

    A bare service root (``http://127.0.0.1:8080``) means the test-bed's ``/work``. The
    metrics URL defaults to the same host's ``/metrics``, and pprof to its
    ``/debug/pprof`` (only when the metrics URL was not given separately). gosvc serves
    pprof on its admin listener only, behind its admin token: for it pass ``--pprof-url``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"URL {url!r} is not an http(s) URL with a host; e.g. http://127.0.0.1:8080")
    path = parts.path if parts.path not in ("", "/") else "/work"
    target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    root = f"{parts.scheme}://{parts.netloc}"
    if metrics_url is None:
        return target, f"{root}/metrics", f"{root}/debug/pprof"
    m = urllib.parse.urlsplit(metrics_url)
    if m.scheme not in ("http", "https") or not m.netloc:
        raise ConfigError(f"--metrics-url {metrics_url!r} is not an http(s) URL; e.g. http://127.0.0.1:8080/metrics")
    return target, metrics_url, f"{m.scheme}://{m.netloc}/debug/pprof"


def resolve_loadgen(path: str | None = None) -> str:
    """The ``gosvc`` binary (``--loadgen``), by the harness's one search order (:func:`rlctl.harness.find_gosvc`)."""
    return find_gosvc(path, option="--loadgen")
