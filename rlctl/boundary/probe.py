"""``rlctl probe``: ramp load against a live service until it crosses its boundary.

The probe runs ``gosvc loadgen`` (open loop, latency measured from each request's
intended send time, so queueing is included) with a stepped ramp, reads its one-JSON-
line-per-interval output, scrapes the service's ``/metrics`` after every interval, and
at the end of every ramp step feeds one aggregated :class:`TelemetrySample` to a
:class:`BoundaryDetector`. The first ``warmup_steps`` steps are the detector's baseline
(frozen after them; a warm-up step whose P99 is over twice the lowest warm-up P99 is
treated as interference from another tenant and replaced by a later step). When the
detector fires, the probe stops the load generator
(SIGTERM), so the service is driven past its knee by at most ``consecutive`` steps.
Then the knee of the measured P99-against-load curve is located (Kneedle and a
two-segment fit) and a JSON report is written.

Per-step aggregation: the client-side P50/P99 of a step is the median of its intervals'
P50/P99 (the load generator reports per-interval quantiles, not histograms, and on a
shared host one interval can catch another tenant's burst; a queue that is really
building up raises every interval from then on); server-side rates come from the
scrapes at the step's two ends; goroutines are the mean of the step's scrapes.

A scrape can fail at the boundary (``/metrics`` is served by the saturated process);
the probe records NaN for it and carries on, and gives up only after
``max_scrape_failures`` failures in a row. Scrapes run on their own thread every interval,
so a slow ``/metrics`` never delays the stop decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import queue
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlctl.boundary.detector import BoundaryDetector, BoundaryEvent, DetectorConfig, Signal
from rlctl.contract import DEFAULT_SLO_P99_MS, TelemetrySample
from rlctl.errors import ConfigError, TelemetryError
from rlctl.harness.process import REPO_GOSVC as REPO_GOSVC
from rlctl.harness.process import find_gosvc, spawn
from rlctl.telemetry.scrape import MetricsSnapshot, Scraper, compute_sample, counter_delta

logger = logging.getLogger(__name__)

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
        from rlctl.boundary.knee import KNEE_METHODS

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


# ------------------------------------------------------------------------------ steps


@dataclass
class StepResult:
    """One ramp step, aggregated: the probe's unit of detection and of the curve."""

    index: int
    target_qps: float
    intervals: int
    duration_s: float
    offered_qps: float
    served_qps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    error_rate: float
    server_p50_ms: float
    server_p99_ms: float
    goroutines: float
    alloc_bytes_per_s: float
    gc_cpu_fraction: float
    gc_cycles_per_s: float
    cfs_throttled_fraction: float
    cfs_periods: float
    cfs_throttled_periods: float
    cpu_util: float
    heap_bytes: float
    sample: TelemetrySample = field(repr=False)
    fired: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.index, "qps": self.offered_qps}
        for f in dataclasses.fields(self):
            if f.name in ("index", "sample"):
                continue
            out[f.name] = getattr(self, f.name)
        return _strict_json(out)


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


class _Step:
    """Loadgen lines and scrapes of one step while it is running."""

    def __init__(self, index: int, target: float, start_snap: MetricsSnapshot | None) -> None:
        self.index, self.target = index, target
        self.lines: list[dict[str, Any]] = []
        self.goroutines: list[float] = []
        self.start_snap = start_snap
        self.end_snap: MetricsSnapshot | None = None

    def add(self, line: dict[str, Any], snap: MetricsSnapshot | None) -> None:
        self.lines.append(line)
        if snap is not None:
            self.end_snap = snap
            self.goroutines.append(snap.gauge("go_goroutines"))

    def _delta(self, counter: str) -> float:
        if self.start_snap is None or self.end_snap is None:
            return math.nan
        return counter_delta(self.start_snap, self.end_snap, counter)

    def interval_sample(self, service: str) -> TelemetrySample:
        """The step so far with the newest interval's latency and goroutines: what the
        interval-level confirmation tests against the baseline."""
        line = self.lines[-1]
        sample = self.finish(service).sample
        goroutines = self.goroutines[-1] if self.goroutines else sample.goroutines
        return dataclasses.replace(
            sample, p50_ms=float(line["p50_ms"]), p99_ms=float(line["p99_ms"]), goroutines=goroutines
        )

    def finish(self, service: str) -> StepResult:
        duration = sum(float(line["interval_s"]) for line in self.lines)
        offered = [float(line["offered"]) for line in self.lines]
        completed = sum(float(line["completed"]) for line in self.lines)
        errors = sum(float(line["errors"]) for line in self.lines)
        offered_qps = sum(offered) / duration if duration > 0 else math.nan
        measured = [line for line in self.lines if float(line["offered"]) + float(line["completed"]) > 0]
        p50 = _median([float(line["p50_ms"]) for line in measured])
        p99 = _median([float(line["p99_ms"]) for line in measured])
        if self.end_snap is not None:
            server = compute_sample(self.start_snap, self.end_snap, offered_qps=offered_qps, service=service)
        else:
            server = TelemetrySample.from_dict({"offered_qps": offered_qps}, source="probe step")
        goroutines = [g for g in self.goroutines if math.isfinite(g)]
        mean_goroutines = sum(goroutines) / len(goroutines) if goroutines else math.nan
        error_rate = errors / sum(offered) if sum(offered) > 0 else 0.0
        sample = dataclasses.replace(
            server,
            timestamp_s=server.timestamp_s if math.isfinite(server.timestamp_s) else time.time(),
            interval_s=duration,
            served_qps=completed / duration if duration > 0 else math.nan,
            p50_ms=p50,
            p99_ms=p99,
            error_rate=error_rate,
            goroutines=mean_goroutines,
        )
        return StepResult(
            index=self.index,
            target_qps=self.target,
            intervals=len(self.lines),
            duration_s=duration,
            offered_qps=offered_qps,
            served_qps=sample.served_qps,
            p50_ms=p50,
            p99_ms=p99,
            max_ms=max((float(line["max_ms"]) for line in self.lines), default=math.nan),
            error_rate=error_rate,
            server_p50_ms=server.p50_ms,
            server_p99_ms=server.p99_ms,
            goroutines=mean_goroutines,
            alloc_bytes_per_s=server.alloc_bytes_per_s,
            gc_cpu_fraction=server.gc_cpu_fraction,
            gc_cycles_per_s=server.gc_cycles_per_s,
            cfs_throttled_fraction=server.cfs_throttled_fraction,
            cfs_periods=self._delta("gosvc_cfs_periods_total"),
            cfs_throttled_periods=self._delta("gosvc_cfs_throttled_periods_total"),
            cpu_util=server.cpu_util,
            heap_bytes=server.heap_bytes,
            sample=sample,
        )


@dataclass
class ProbeState:
    """What the probe knows so far; passed to the progress callback after every interval."""

    config: ProbeConfig
    steps: list[StepResult] = field(default_factory=list)
    current_target: float = math.nan
    last_line: dict[str, Any] = field(default_factory=dict)
    signals: tuple[Signal, ...] = ()
    status: str = "starting"
    event: BoundaryEvent | None = None
    stopped_loadgen_target_qps: float | None = None
    confirmed_by: str | None = None
    """How the boundary event was confirmed: "steps" (``consecutive`` whole steps) or
    "intervals" (``confirm_intervals`` intervals in a row); None without an event."""


# ------------------------------------------------------------------------------ loadgen


class _LoadgenProcess:
    """``gosvc loadgen`` as a child process whose JSON lines arrive on a queue."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
        self._managed = spawn(None, "loadgen", argv, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=1,
                              command="probe")  # fmt: skip
        self.proc = self._managed.proc
        self.stderr_final = ""
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="loadgen-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            raw = raw.strip()
            if not raw:
                continue
            try:
                self.lines.put(json.loads(raw))
            except json.JSONDecodeError:
                logger.warning("loadgen printed a non-JSON line: %s", raw[:200])
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> dict[str, Any] | None:
        """The next JSON line, or None at EOF; TelemetryError if nothing comes in time."""
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TelemetryError(
                f"load generator {self.argv[0]} printed nothing for {timeout_s:g}s; stderr: {self.stderr_tail()}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stderr_tail(self, n: int = 3) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return " | ".join(lines[-n:]) or "(empty)"

    def close(self, grace_s: float) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``grace_s``) and return its exit code."""
        self.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        self._managed.stop(grace_s=0.0)  # SIGKILL if it is still running; forget its journal entry
        self._reader.join(timeout=2)
        self.stderr_final = self.stderr_tail()
        self._stderr.close()
        return self.proc.returncode


def loadgen_argv(config: ProbeConfig) -> list[str]:
    return [
        config.loadgen,
        "loadgen",
        "--url",
        config.url,
        "--ramp",
        str(config.ramp),
        "--max-rate",
        f"{config.max_qps:g}",
        "--interval",
        f"{config.interval_s:g}s",
        "--timeout",
        f"{config.request_timeout_s:g}s",
    ]


# ------------------------------------------------------------------------------ the run


class _BackgroundScraper:
    """Scrapes ``/metrics`` every interval on its own thread.

    A saturated service answers ``/metrics`` late (its handler queues behind the load), so
    scraping inline would hold up the load generator's lines and delay the stop decision.
    The probe takes the newest snapshot when a line arrives instead.
    """

    def __init__(self, scraper: Scraper, interval_s: float, max_failures: int) -> None:
        self.scraper, self.interval_s, self.max_failures = scraper, interval_s, max_failures
        self._lock = threading.Lock()
        self._latest: MetricsSnapshot | None = None
        self._taken: MetricsSnapshot | None = None
        self.failures = 0
        self.last_error: TelemetryError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                snap = self.scraper.snapshot()
            except TelemetryError as exc:
                with self._lock:
                    self.failures += 1
                    self.last_error = exc
                logger.warning("scrape failed (%d in a row): %s", self.failures, exc)
            else:
                with self._lock:
                    self._latest, self.failures = snap, 0
            next_at = max(next_at + self.interval_s, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def take(self) -> MetricsSnapshot | None:
        """The newest snapshot not taken before (None if there is none new)."""
        with self._lock:
            if self.failures >= self.max_failures:
                raise TelemetryError(
                    f"{self.last_error}; {self.failures} scrapes in a row failed, so the probe stopped. "
                    "Is the service still running?"
                )
            if self._latest is self._taken:
                return None
            self._taken = self._latest
            return self._latest

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.scraper.timeout_s + 1.0)


def _lines(proc: _LoadgenProcess, config: ProbeConfig) -> Iterator[dict[str, Any]]:
    # Silence is allowed for a few intervals plus the request timeout (drain after SIGTERM).
    patience = 5 * config.interval_s + config.request_timeout_s + 5.0
    while True:
        line = proc.next_line(patience)
        if line is None:
            return
        yield line


def run_probe(config: ProbeConfig, *, on_update: Callable[[ProbeState], None] | None = None) -> dict[str, Any]:
    """Run the probe and return its report (see :func:`build_report`)."""
    scraper = Scraper(config.metrics_url, timeout_s=config.scrape_timeout_s)
    try:
        first = scraper.snapshot()
    except TelemetryError as exc:
        raise TelemetryError(f"{exc} (before the ramp started: start the service first)") from exc
    settings = first.settings()
    profile_dir = config.profile_dir or tempfile.mkdtemp(prefix="rlctl-probe-profiles-")
    detector = BoundaryDetector(
        config.detector_config(), pprof_url=config.pprof_url, pprof_token=config.pprof_token, profile_dir=profile_dir
    )
    state = ProbeState(config=config, status="ramping")
    notify = on_update or (lambda _s: None)
    started = time.time()
    stopped_by = "max_qps"
    step = _Step(0, config.ramp.target(0), first)
    last_index = config.ramp.steps_to(config.max_qps) - 1

    proc = _LoadgenProcess(loadgen_argv(config))
    scrapes = _BackgroundScraper(scraper, config.interval_s, config.max_scrape_failures)
    summary: dict[str, Any] | None = None
    interval_streak = 0
    try:
        for line in _lines(proc, config):
            if line.get("summary"):
                summary = line
                continue
            if stopped_by == "detector":
                continue  # draining after SIGTERM: the service is past the boundary already
            snap = scrapes.take()
            mid = float(line["t_s"]) - float(line["interval_s"]) / 2
            index = min(int(mid // config.ramp.step_s), last_index)
            if index > step.index:  # a step boundary without a line ending exactly on it
                step = _Step(index, config.ramp.target(index), step.end_snap or step.start_snap)
            step.add(line, snap)
            state.last_line, state.current_target = line, float(line.get("target_qps", step.target))
            step_end = (step.index + 1) * config.ramp.step_s
            stop_now = config.stop_on_boundary and len(state.steps) >= config.min_steps
            if config.confirm_intervals and detector.warmed_up and state.event is None and stop_now:
                signals = detector.evaluate(step.interval_sample(scraper.service))
                interval_streak = interval_streak + 1 if detector.rule_holds(signals) else 0
                if interval_streak >= config.confirm_intervals:
                    result = step.finish(scraper.service)
                    result.fired = [s.name for s in signals if s.fired]
                    state.steps.append(result)
                    state.signals = signals
                    state.event = detector.emit(result.sample, signals)
                    state.confirmed_by = "intervals"
                    state.status, stopped_by = "boundary crossed: stopping the ramp", "detector"
                    state.stopped_loadgen_target_qps = state.current_target
                    proc.stop()
                    notify(state)
                    continue
            if float(line["t_s"]) >= step_end - config.interval_s / 2:
                result = step.finish(scraper.service)
                event = detector.update(result.sample)
                result.fired = [s.name for s in detector.last_signals if s.fired]
                state.steps.append(result)
                state.signals = detector.last_signals
                if event is not None and state.event is None:
                    state.event, state.confirmed_by = event, "steps"
                stop_now = config.stop_on_boundary and len(state.steps) >= config.min_steps
                if state.event is not None and stop_now and stopped_by != "detector":
                    state.status, stopped_by = "boundary crossed: stopping the ramp", "detector"
                    state.stopped_loadgen_target_qps = state.current_target
                    proc.stop()
                step = _Step(step.index + 1, config.ramp.target(step.index + 1), step.end_snap or step.start_snap)
            notify(state)
    finally:
        scrapes.close()
        code = proc.close(grace_s=config.request_timeout_s + 5.0)
    if state.event is None and code not in (0, -signal.SIGTERM):
        error = ConfigError if code == 2 else TelemetryError
        raise error(f"load generator exited with code {code} ({proc.stderr_final}): {' '.join(loadgen_argv(config))}")
    if not state.steps:
        raise TelemetryError(f"the load generator produced no complete ramp step; its last line was {state.last_line}")
    state.status = "done"
    notify(state)
    return build_report(config, state, settings, stopped_by, summary, started, profile_dir)


def build_report(
    config: ProbeConfig,
    state: ProbeState,
    settings: dict[str, Any],
    stopped_by: str,
    summary: dict[str, Any] | None,
    started: float,
    profile_dir: str,
) -> dict[str, Any]:
    """The probe's JSON report: knee, stop point and reason, per-step curve, settings."""
    from rlctl.boundary.knee import find_knee

    steps = state.steps
    # The curve ends at the boundary the detector confirmed: the knee leading into it is the last one.
    event = state.event
    # The crossing method uses the P99 threshold the detector held the stopping sample to.
    rise = [x.threshold for x in (event.signals if event else state.signals) if x.name == "p99_rise"]
    knee = find_knee(
        [s.offered_qps for s in steps],
        [s.p99_ms for s in steps],
        slo_p99_ms=config.slo_p99_ms,
        last_knee=True,
        method=config.knee_method,
        crossing_ms=rise[0] if rise and math.isfinite(rise[0]) and rise[0] > 0 else None,
    )
    stop_step = steps[-1]
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "url": config.url,
        "metrics_url": config.metrics_url,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 3),
        "ramp": {
            "start_qps": config.ramp.start_qps,
            "step_qps": config.ramp.step_qps,
            "step_s": config.ramp.step_s,
            "max_qps": config.max_qps,
            "interval_s": config.interval_s,
            "warmup_steps": config.warmup_steps,
        },
        **knee.to_dict(),
        "stopped_at_qps": stop_step.target_qps,
        "stopped_at_step": stop_step.index,
        "stopped_by": stopped_by,
        "confirmed_by": state.confirmed_by,
        "loadgen_target_at_stop_qps": state.stopped_loadgen_target_qps,
        "stop_reason": [s.to_dict() for s in event.signals if s.fired] if event else [],
        "boundary_event": event.to_dict() if event else None,
        "curve": [s.to_dict() for s in steps],
        "settings": settings,
        "detector": dataclasses.asdict(config.detector_config()),
        "loadgen": {"path": config.loadgen, "argv": loadgen_argv(config), "summary": summary},
        "profile_dir": profile_dir if event and event.profiles else None,
    }
    return _strict_json(report)


def _strict_json(value: Any) -> Any:
    """NaN and infinities become None so the report is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------ output


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """P99 against load with the knees, the SLO and the stop point, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    qps = [p["qps"] for p in curve]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(qps, [p["p99_ms"] for p in curve], "o-", label="P99 (client, incl. queueing)")
    ax.plot(qps, [p["server_p99_ms"] for p in curve], "x--", alpha=0.7, label="P99 (server histogram)")
    ax.plot(qps, [p["p50_ms"] for p in curve], ".-", alpha=0.6, label="P50 (client)")
    ax.axhline(report["slo_p99_ms"], color="grey", ls=":", label=f"SLO {report['slo_p99_ms']:g} ms")
    methods = report.get("knee_methods") or ["kneedle", "two_segment_least_squares"]
    marks = [
        ("knee_qps", f"knee ({methods[0]})", "red"),
        ("knee_qps_second_method", f"cross-check ({methods[1]})", "orange"),
        ("max_qps_at_slo", "max QPS at SLO", "green"),
        ("stopped_at_qps", "ramp stopped", "black"),
    ]
    for key, label, color in marks:
        if report.get(key) is not None:
            ax.axvline(report[key], color=color, ls="--", lw=1, label=f"{label} {report[key]:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"rlctl probe {report['url']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


class ProbeDisplay:
    """A Rich live table of the ramp on stderr; use as a context manager and callback."""

    def __init__(self, rows: int = 14) -> None:
        from rich.console import Console
        from rich.live import Live

        self.rows = rows
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> ProbeDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, state: ProbeState) -> None:
        self.live.update(self.render(state))

    def render(self, state: ProbeState) -> Any:
        from rich.table import Table

        table = Table(title=f"rlctl probe {state.config.url} — {state.status}", title_justify="left")
        for col in ("step", "target", "offered", "p50 ms", "p99 ms", "srv p99", "gor", "MB/s", "GC", "thr",
                    "signals"):  # fmt: skip
            table.add_column(col, justify="right" if col != "signals" else "left")
        for s in state.steps[-self.rows :]:
            table.add_row(
                str(s.index),
                f"{s.target_qps:.0f}",
                f"{s.offered_qps:.0f}",
                _fmt(s.p50_ms, ".2f"),
                _fmt(s.p99_ms, ".2f"),
                _fmt(s.server_p99_ms, ".2f"),
                _fmt(s.goroutines, ".0f"),
                _fmt(s.alloc_bytes_per_s / 1e6, ".1f"),
                _fmt(s.gc_cpu_fraction * 100, ".1f") + "%",
                _fmt(s.cfs_throttled_fraction * 100, ".0f") + "%",
                " ".join(_SHORT.get(name, name) for name in s.fired) or "-",
                style="bold red" if state.event and s is state.steps[-1] else None,
            )
        line = state.last_line
        if line and state.status == "ramping":
            table.caption = (
                f"now: target {state.current_target:.0f} qps, p99 {line.get('p99_ms', math.nan):.2f} ms, "
                f"in flight {line.get('inflight', '?')}"
            )
        return table


#: Signal names as the live table shows them.
_SHORT = {"p99_rise": "P99x4", "p99_mad": "P99-MAD", "alloc_rate": "alloc", "goroutines": "gorout"}


def _fmt(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else "n/a"
