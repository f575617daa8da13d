"""The chaos experiment runner: one scenario, one backend, several controllers, one report.

:func:`run_experiment` resolves every controller first (so a missing policy artifact fails
before any fault is injected), asks the backend to refuse what it cannot run, then runs the
scenario once per controller. :func:`build_report` scores each :class:`~chaos.record.RunRecord`
the same way whatever the backend, with :func:`rlctl.scoring.score_run` — the scorer ``rlctl
eval`` uses, so a sim run here and ``rlctl eval`` of the same scenario and seed agree (see
:mod:`rlctl.scoring` for every score). The report adds:

======================  ====================================================================
score                   definition
======================  ====================================================================
core_seconds_used       :mod:`rlctl.scoring`'s ``core_seconds``: CPU seconds the replicas used
                        (local backend: /proc utime + stime; sim: the simulator's cores)
core_seconds_allocated  replica-seconds x the CPU quota per replica, where there is one
recovery                per fault window also its ``fault`` label and ``kind``
boundary_events         :class:`rlctl.boundary.BoundaryDetector` over the run's telemetry
knob_changes            every knob change (what ``actions`` and ``flaps`` are counted from)
======================  ====================================================================

:func:`write_report` writes ``report.json`` (or ``--json``), ``report.md`` and
``timelines.png`` (fault windows shaded) into the report folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from chaos.record import RunRecord, fault_label
from chaos.spec import Scenario
from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies import registry
from policies.base import Controller
from policies.oracle import tuned_hpa
from rlctl.boundary import BoundaryDetector, DetectorConfig
from rlctl.contract import KnobBounds, Knobs
from rlctl.errors import ConfigError
from rlctl.report import plot_timelines, write_atomic
from rlctl.scoring import STEADY_MARGIN_S, score_run

log = logging.getLogger(__name__)

REPORT_SCHEMA = "rlctl.chaos-run/v1"
BACKENDS = ("sim", "local", "k8s")


class Backend(Protocol):
    name: str

    def check(self, scenario: Scenario) -> None: ...

    def plan(self, scenario: Scenario) -> list[str]: ...

    def run(self, scenario: Scenario, controller: Controller, *, run_id: str) -> RunRecord: ...


# ------------------------------------------------------------------ controllers


@dataclass(frozen=True)
class ControllerContext:
    """What resolving a controller name needs to know about the run."""

    backend: str
    scenario: Scenario
    bounds: KnobBounds = field(default_factory=KnobBounds)
    initial_knobs: Knobs = field(default_factory=Knobs)
    seed: int = 0


def check_controller_names(specs: Sequence[str], where: str | None = None) -> list[str]:
    """Validate ``--controller`` values (the registry's grammar, :mod:`policies.registry`), refuse
    duplicates and, given a backend, what cannot run on it (:func:`policies.registry.check_runs`)."""
    if not specs:
        raise ConfigError("pass at least one --controller, e.g. --controller hpa-tuned --controller ppo:default")
    parsed = registry.parse_all(specs)
    if where is not None:
        for spec in parsed:
            registry.check_runs(spec, _where(where))
    return list(specs)


def _where(backend: str) -> registry.Where:
    return "sim" if backend == "sim" else "k8s" if backend == "k8s" else "local"


def _sim_config(ctx: ControllerContext) -> EnvConfig:
    return EnvConfig(
        episode_s=max(ctx.scenario.duration_s, 5.0),
        slo_p99_ms=ctx.scenario.slo_p99_ms,
        bounds=ctx.bounds,
        initial_knobs=ctx.initial_knobs,
    )


def registry_context(ctx: ControllerContext) -> registry.Context:
    """The registry's context for a run: the scenario's SLO, the run's bounds and knobs, where it runs.

    ``hpa-tuned`` is the HPA with the CPU target a simulator sweep of this very scenario picks
    (:func:`policies.evaluate.tuned_hpa`), then fixed.
    """
    config, profile = _sim_config(ctx), ServiceProfile()

    def tune() -> float:
        _, chosen = tuned_hpa([ctx.scenario], [ctx.seed], config, profile)
        return chosen[ctx.scenario.name]

    return registry.Context(config, profile, where=_where(ctx.backend), tune_hpa=tune)


def resolve_controller(spec: str, ctx: ControllerContext) -> tuple[Controller, dict[str, Any]]:
    """The controller for a ``--controller`` value, and facts about it for the report (:func:`policies.registry.build`).

    ``static`` keeps the initial knobs on a live backend; the oracles run on the sim backend only.
    """
    return registry.build(spec, registry_context(ctx))


# ------------------------------------------------------------------ running


def run_experiment(
    scenario: Scenario,
    backend: Backend,
    controllers: Sequence[str],
    *,
    run_id: str,
    context: ControllerContext,
    on_start: Callable[[str], None] | None = None,
    wrap: Callable[[Controller, str], Controller] | None = None,
) -> tuple[list[RunRecord], dict[str, dict[str, Any]]]:
    """Run ``scenario`` on ``backend`` once per controller; returns the records and controller facts.

    ``wrap`` turns each resolved controller into the one that runs (e.g. the online path of
    :mod:`chaos.backends.online`); a wrapper's ``summary()`` lands in the record's ``extra.online``.
    """
    backend.check(scenario)
    resolved = [(spec, *resolve_controller(spec, context)) for spec in check_controller_names(controllers)]
    records, facts = [], {}
    for spec, controller, info in resolved:
        if on_start is not None:
            on_start(spec)
        log.info("running %s on %s with %s", scenario.name, backend.name, spec)
        running = wrap(controller, spec) if wrap is not None else controller
        record = backend.run(scenario, running, run_id=run_id)
        if running is not controller and hasattr(running, "summary"):
            record.extra["online"] = running.summary()
        record.controller = spec
        records.append(record)
        facts[spec] = info
    return records, facts


# ------------------------------------------------------------------ scoring


def detect_boundaries(record: RunRecord) -> list[dict[str, Any]]:
    """Boundary events of the run's telemetry (the online detector, default rule)."""

    detector = BoundaryDetector(DetectorConfig(interval_s=record.interval_s))
    events = []
    for sample in record.telemetry:
        event = detector.update(sample)
        if event is not None:
            events.append({"time_s": round(float(event.time_s), 3), "fired": event.fired})
    return events


def score(record: RunRecord, scenario: Scenario) -> dict[str, Any]:
    """The scores of one run: :func:`rlctl.scoring.score_run` (the one definition ``rlctl eval`` uses
    too), with each fault's label, the boundary events and the knob changes added."""
    s = record.series
    windows = scenario.windows()
    out = score_run(
        t_s=s["t_s"], dt_s=s["dt_s"], offered_qps=s["offered_qps"], p99_ms=s["p99_ms"], replicas=s["replicas"],
        slo_p99_ms=scenario.slo_p99_ms, changes=record.actions, windows=[(w.start_s, w.end_s) for w in windows],
        core_seconds=record.extra.get("core_seconds_used"), error_rate=s["error_rate"],
        steady_margin_s=STEADY_MARGIN_S,
    )  # fmt: skip
    for i, (w, entry) in enumerate(zip(windows, out["recovery"], strict=True)):
        entry.update(fault=fault_label(w, i), kind=w.kind.value)
    quota = record.extra.get("replica_cpu_cores")
    # Reports since the first chaos run call the CPU seconds used core_seconds_used (validate-real's summaries too).
    out["core_seconds_used"] = out.pop("core_seconds")
    out["core_seconds_allocated"] = out["replica_seconds"] * float(quota) if quota else None
    out["boundary_events"] = detect_boundaries(record)
    out["knob_changes"] = record.actions
    return out


def build_report(
    scenario: Scenario,
    records: Sequence[RunRecord],
    *,
    backend: str,
    run_id: str,
    scenario_file: str | None = None,
    facts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report: the same shape for every backend (see :data:`REPORT_SCHEMA`)."""
    results: dict[str, Any] = {}
    for r in records:
        results[r.controller] = {
            **score(r, scenario),
            "controller": (facts or {}).get(r.controller, {}),
            "injections": r.injections,
            "notes": r.notes,
            "extra": r.extra,
            "series": {k: v.tolist() for k, v in r.series.items()},
        }
    report = {
        "schema": REPORT_SCHEMA,
        "run_id": run_id,
        "backend": backend,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenario": {
            "name": scenario.name,
            "file": scenario_file,
            "description": scenario.description,
            "duration_s": scenario.duration_s,
            "slo_p99_ms": scenario.slo_p99_ms,
            "load": scenario.load.model_dump(),
        },
        "faults": [
            {
                "fault": fault_label(w, i),
                "kind": w.kind.value,
                "start_s": w.start_s,
                "end_s": w.end_s,
                "params": dict(w.spec.params),
            }
            for i, w in enumerate(scenario.windows())
        ],
        "controllers": [r.controller for r in records],
        "results": results,
    }
    return _strict(report)


def _strict(v: Any) -> Any:
    """NaN and infinities become None, numpy scalars plain numbers: strict JSON."""
    if isinstance(v, dict):
        return {str(k): _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


# ------------------------------------------------------------------ writing


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _recovery_cell(entry: dict[str, Any]) -> str:
    if entry["recovered"]:
        return f"{entry['recovery_s']:.0f}"
    return f"not recovered (> {entry['bound_s']:.0f})"


def render_markdown(report: dict[str, Any], *, png_name: str | None = "timelines.png") -> str:
    """``report.md``: scores side by side, recovery per fault, injections and notes."""
    sc = report["scenario"]
    names = report["controllers"]
    res = report["results"]
    out = [
        f"# Chaos run: `{sc['name']}` on the {report['backend']} backend",
        "",
        f"Run id `{report['run_id']}`, {report['created']}. {sc['description']}".rstrip(),
        "",
        f"Duration {sc['duration_s']:g} s, SLO P99 <= {sc['slo_p99_ms']:g} ms, load `{sc['load']['kind']}`.",
        "",
        "## Faults",
        "",
        "| fault | kind | window (s) | parameters |",
        "|---|---|---|---|",
    ]
    for f in report["faults"]:
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items()) or "defaults"
        out.append(f"| {f['fault']} | {f['kind']} | {f['start_s']:g}-{f['end_s']:g} | {params} |")
    out += [
        "",
        "## Results",
        "",
        "| controller | SLO violation (s) | replica-seconds | actions | boundary events | median P99 (ms) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        r = res[n]
        out.append(
            f"| {n} | {_fmt(r['slo_violation_s'])} | {_fmt(r['replica_seconds'], 0)} | {r['actions']} | "
            f"{len(r['boundary_events'])} | {_fmt(r['p99_ms_median'], 2)} | {100 * (r['error_rate_mean'] or 0):.2f}% |"
        )
    if report["faults"]:
        out += ["", "## Recovery after each fault (s until P99 is back under the SLO)", ""]
        out.append("| fault | ends at (s) | " + " | ".join(names) + " |")
        out.append("|---|---:|" + "---:|" * len(names))
        for i, f in enumerate(report["faults"]):
            cells = [_recovery_cell(res[n]["recovery"][i]) for n in names]
            out.append(f"| {f['fault']} | {f['end_s']:g} | " + " | ".join(cells) + " |")
    for n in names:
        r = res[n]
        lines = []
        for e in r["boundary_events"]:
            lines.append(f"- boundary crossed at {e['time_s']:.0f} s ({', '.join(e['fired'])})")
        for inj in r["injections"]:
            if inj.get("error"):
                lines.append(f"- fault {inj['fault']}: **{inj['error']}**")
            elif report["backend"] != "sim":
                when = f"{_fmt(inj['injected_s'])}-{_fmt(inj['reverted_s'])} s"
                lines.append(f"- fault {inj['fault']} at {when} on {', '.join(inj['targets'])}: {inj['detail']}")
        lines += [f"- {note}" for note in r["notes"]]
        facts = r.get("controller") or {}
        if facts:
            lines.insert(0, "- controller: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
        if lines:
            out += ["", f"### {n}", "", *lines]
    if png_name:
        out += ["", f"![timelines]({png_name})", ""]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """``timelines.png``: load, P99 against the SLO, replicas and runtime knobs; faults shaded."""

    runs = {}
    for n in report["controllers"]:
        s = report["results"][n]["series"]
        runs[n] = {k: np.asarray([np.nan if x is None else x for x in s[k]], dtype=np.float64)
                   for k in ("t_s", "offered_qps", "p99_ms", "replicas", "gomaxprocs", "gogc")}  # fmt: skip
    windows = [(f["start_s"], f["end_s"], f["fault"]) for f in report["faults"]]
    sc = report["scenario"]
    unit = "s" if sc["duration_s"] <= 900 else "min" if sc["duration_s"] <= 4 * 3600 else "h"
    return plot_timelines(
        path,
        runs,
        slo_p99_ms=sc["slo_p99_ms"],
        title=f"{sc['name']} on {report['backend']} (run {report['run_id']})",
        fault_windows=windows,
        time_unit=unit,
    )


def write_report(report: dict[str, Any], report_dir: Path | None, json_path: Path | None) -> dict[str, str]:
    """Write the JSON, Markdown and PNG; returns what was written where."""

    files: dict[str, str] = {}
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        files["png"] = str(plot(report, report_dir / "timelines.png"))
        files["markdown"] = str(report_dir / "report.md")
        json_path = json_path or report_dir / "report.json"
    if json_path is not None:
        files["json"] = str(json_path)
    report["files"] = files
    if "markdown" in files:
        write_atomic(files["markdown"], render_markdown(report))
    if json_path is not None:
        write_atomic(json_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return files


def results_table(report: dict[str, Any]) -> Any:
    """A Rich table of the scores, controllers side by side."""
    from rich.table import Table

    sc = report["scenario"]
    names = report["controllers"]
    res = report["results"]
    table = Table(title=f"{sc['name']} on {report['backend']} — SLO P99 <= {sc['slo_p99_ms']:g} ms")
    table.add_column("score")
    for n in names:
        table.add_column(n, justify="right")
    rows = [
        ("SLO violation (s)", lambda r: _fmt(r["slo_violation_s"])),
        ("replica-seconds", lambda r: _fmt(r["replica_seconds"], 0)),
        ("actions", lambda r: str(r["actions"])),
        ("boundary events", lambda r: str(len(r["boundary_events"]))),
        ("median P99 (ms)", lambda r: _fmt(r["p99_ms_median"], 2)),
        ("error rate", lambda r: f"{100 * (r['error_rate_mean'] or 0):.2f}%"),
    ]
    for label, fn in rows:
        table.add_row(label, *(fn(res[n]) for n in names))
    for i, f in enumerate(report["faults"]):
        table.add_row(
            f"recovery after {f['fault']} (s)",
            *(_recovery_cell(res[n]["recovery"][i]) for n in names),
        )
    return table
