"""The ramp driver and its stop rule: :func:`run_probe` feeds each finished step (and, with
``confirm_intervals``, each interval) to the :class:`~rlctl.boundary.detector.BoundaryDetector`
and stops the load generator once the boundary is confirmed. Part of :mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rlctl.boundary.detector import BoundaryDetector
from rlctl.boundary.probe.config import ProbeConfig
from rlctl.boundary.probe.loadgen import _BackgroundScraper, _lines, _LoadgenProcess, loadgen_argv
from rlctl.boundary.probe.report import build_report
from rlctl.boundary.probe.steps import ProbeState, _Step
from rlctl.errors import ConfigError, TelemetryError
from rlctl.telemetry.scrape import Scraper


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
