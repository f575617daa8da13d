"""The probe's JSON report (:data:`REPORT_SCHEMA`): the knee of the measured curve, the stop point
and its reason, the per-step curve and the settings. Part of :mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from rlctl.boundary.knee import find_knee
from rlctl.boundary.probe.config import REPORT_SCHEMA, ProbeConfig
from rlctl.boundary.probe.loadgen import loadgen_argv
from rlctl.boundary.probe.steps import ProbeState, _strict_json


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


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------ output
