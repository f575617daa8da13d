"""One ramp step of the probe: the loadgen lines and scrapes of a running step (``_Step``), their
aggregation into a :class:`StepResult` (median of the intervals' P50/P99, server rates from the
scrapes at the step's two ends) and the :class:`ProbeState` the progress callback sees. Part of
:mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from rlctl.boundary.detector import BoundaryEvent, Signal
from rlctl.boundary.probe.config import ProbeConfig
from rlctl.contract import TelemetrySample
from rlctl.telemetry.scrape import MetricsSnapshot, compute_sample, counter_delta

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


def _strict_json(value: Any) -> Any:
    """NaN and infinities become None so the report is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value
