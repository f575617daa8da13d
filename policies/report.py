"""Evaluation reports: a Rich table, Markdown, and PNG timelines per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaos.spec import Scenario, file_stem
from envs.sim import EnvConfig
from policies.rollout import RunResult
from rlctl.report import plot_timelines, write_atomic

COLUMNS = (
    ("slo_violation_s", "SLO-viol s", "{:.1f}"),
    ("replica_seconds", "replica-s", "{:,.0f}"),
    ("core_seconds", "core-s", "{:,.0f}"),
    ("actions_per_hour", "actions/h", "{:.1f}"),
    ("flaps_per_hour", "flaps/h", "{:.1f}"),
)


def _recovery(sc: dict[str, Any]) -> str:
    rec = sc.get("recovery_seconds") or []
    return ", ".join(f"{r:.0f}" for r in rec) if rec else "-"


def _scenario(name: str, entry: dict[str, Any]) -> str:
    """The scenario's name, with its SLO where it is not the report's (a scenario file's own)."""
    return f"{name} (SLO {entry['slo_p99_ms']:g} ms)" if "slo_p99_ms" in entry else name


def render_table(report: dict[str, Any]) -> Any:
    """The side-by-side table: one row per scenario and controller."""
    from rich.table import Table

    table = Table(title=f"SLO: P99 <= {report['slo_p99_ms']:g} ms; means over seeds {report['seeds']}")
    table.add_column("scenario")
    table.add_column("kind")
    table.add_column("controller")
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("recovery s", justify="right")
    for name, entry in report["scenarios"].items():
        for i, (ctrl, sc) in enumerate(entry["controllers"].items()):
            table.add_row(
                _scenario(name, entry) if i == 0 else "",
                entry["kind"] if i == 0 else "",
                ctrl,
                *[fmt.format(sc[key]) for key, _, fmt in COLUMNS],
                _recovery(sc),
            )
        table.add_section()
    ratios = report.get("summary", {}).get("vs_hpa_tuned", {})
    for kind, by_ctrl in ratios.items():
        for ctrl, r in by_ctrl.items():
            if ctrl == "hpa-tuned":
                continue
            viol = r.get("slo_violation_s")
            reps = r.get("replica_seconds")
            table.add_row(
                f"total {kind}", "", f"{ctrl} / hpa-tuned",
                "-" if viol is None else f"{viol:.2f}x", "-" if reps is None else f"{reps:.2f}x", "", "", "", "",
            )  # fmt: skip
    return table


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"SLO: P99 <= {report['slo_p99_ms']:g} ms. Means over seeds {report['seeds']}.",
        "",
        "| scenario | kind | controller | " + " | ".join(t for _, t, _ in COLUMNS) + " | recovery s |",
        "|---|---|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name, entry in report["scenarios"].items():
        for ctrl, sc in entry["controllers"].items():
            cells = [fmt.format(sc[key]) for key, _, fmt in COLUMNS]
            head = f"| {_scenario(name, entry)} | {entry['kind']} | {ctrl} | "
            lines.append(head + " | ".join(cells) + f" | {_recovery(sc)} |")
    lines += ["", "## Totals against hpa-tuned", "", "| kind | controller | SLO-violation ratio | replica-s ratio |"]
    lines.append("|---|---|---:|---:|")
    for kind, by_ctrl in report.get("summary", {}).get("vs_hpa_tuned", {}).items():
        for ctrl, r in by_ctrl.items():
            v, rs = r.get("slo_violation_s"), r.get("replica_seconds")
            lines.append(
                f"| {kind} | {ctrl} | {'-' if v is None else f'{v:.2f}'} | {'-' if rs is None else f'{rs:.2f}'} |"
            )
    lines += ["", "Timelines: `<scenario>.png` beside this file (seed 0 of each controller)."]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    runs: dict[str, dict[str, list[RunResult]]],
    scenarios: list[Scenario],
    config: EnvConfig,
) -> Path:
    """``report.md`` and one PNG per scenario (load, P99 vs SLO, replicas, knobs per controller)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in scenarios}
    for name, by_ctrl in runs.items():
        series = {ctrl: rs[0].series for ctrl, rs in by_ctrl.items() if rs}
        windows = [(w.start_s, w.end_s, w.kind.value) for w in by_name[name].windows()]
        plot_timelines(
            out_dir / f"{file_stem(name)}.png", series, slo_p99_ms=config.slo_p99_ms, title=name, fault_windows=windows
        )
    return write_atomic(out_dir / "report.md", markdown(report))
