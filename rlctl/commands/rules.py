"""``rlctl rules learn|list|show``: the boundary rule library learned from chaos runs.

::

    rlctl rules learn RUNS... [--library rules.yaml] [--min-support 5] [--plot DIR] [--json OUT]
    rlctl rules list [--library rules.yaml] [--all] [--json OUT]
    rlctl rules show N [--library rules.yaml] [--json OUT]

``learn`` reads chaos run reports (``report.json`` files, or folders holding them) of any
backend, learns rules (:mod:`chaos.learn`) and creates or updates the library (:mod:`rlctl.rules`),
written atomically. ``rlctl control --rules FILE`` enforces its active rules in the safety layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP

rules_app = typer.Typer(
    name="rules",
    help="Boundary rules learned from chaos runs: learn, list, show.",
    no_args_is_help=True,
)

LibraryOpt = Annotated[Path, typer.Option("--library", "-l", help="The rule library YAML file.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help=f"Write the result as JSON {JSON_HELP}.")]


def register(app: typer.Typer) -> None:
    """Mount ``rlctl rules`` on the root app."""
    app.add_typer(rules_app, name="rules")


@rules_app.command("learn")
def learn(
    runs: Annotated[list[Path], typer.Argument(help="Chaos run reports (report.json) or folders holding them.")],
    library: LibraryOpt = Path("rules.yaml"),
    min_support: Annotated[
        int, typer.Option(min=1, max=10_000, help="Independent experiments a rule needs to enter the library.")
    ] = 5,
    max_error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Error rate above which the error-rate metric broke.")
    ] = 0.01,
    breach_intervals: Annotated[
        int, typer.Option(min=1, max=1000, help="Consecutive intervals out of bounds that make a breach.")
    ] = 2,
    baseline_s: Annotated[
        float, typer.Option(min=0.0, max=86_400.0, help="Seconds before a fault that must be in bounds.")
    ] = 20.0,
    after_s: Annotated[
        float, typer.Option(min=0.0, max=86_400.0, help="Seconds past a fault's end still charged to it.")
    ] = 10.0,
    max_conditions: Annotated[int, typer.Option(min=0, max=3, help="Thresholds per rule at most.")] = 2,
    plot: Annotated[
        Path | None, typer.Option(help="Folder for one evidence figure per active rule (rule-N.png).")
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Build or update the rule library from chaos run reports."""
    from rich.console import Console

    from chaos.learn import LearnSettings, plot_rule, read_observations, update
    from rlctl.output import JsonOut
    from rlctl.rules import Library, load_library, save_library

    settings = LearnSettings(
        min_support=min_support, max_error_rate=max_error_rate, breach_intervals=breach_intervals,
        baseline_s=baseline_s, after_s=after_s, max_conditions=max_conditions,
    )  # fmt: skip
    if not runs:
        raise ConfigError("pass at least one chaos run report (report.json) or a folder holding them")
    old = load_library(library) if library.exists() else Library()
    obs, n_reports = read_observations(runs, settings)
    if not obs:
        raise ConfigError(
            f"the {n_reports} report(s) given have no usable fault window (none, all confounded or failed); "
            "pass chaos runs with faults"
        )
    with JsonOut(json_out, allow_nan=False) as out:
        new = update(old, obs, settings, n_reports)
        save_library(new, library)
        figures = []
        if plot is not None:
            for r in new.rules:
                if r.status == "active":
                    figures.append(str(plot_rule(r, obs, plot / f"rule-{r.id}.png")))
        before = {r.id: r.status for r in old.rules}
        summary = {
            "library": str(library),
            "reports": n_reports,
            "fault_windows": len(obs),
            "added": [r.id for r in new.rules if r.id not in before],
            "retired": [r.id for r in new.rules if r.status == "retired" and before.get(r.id) == "active"],
            "active": [r.id for r in new.rules if r.status == "active"],
            "candidates": len(new.candidates),
            "figures": figures,
        }
        out.write(summary)
        console = Console(stderr=True, width=max(Console(stderr=True).width, 140))
        console.print(_table(new, show_all=True))
        console.print(
            f"{n_reports} report(s), {len(obs)} fault window(s): rules added {summary['added'] or 'none'}, "
            f"retired {summary['retired'] or 'none'}; {len(new.candidates)} candidate(s) below "
            f"{min_support} experiments; wrote {library}"
        )


@rules_app.command("list")
def list_rules(
    library: LibraryOpt = Path("rules.yaml"),
    show_all: Annotated[bool, typer.Option("--all", help="Also the retired rules and the candidates.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """The library's rules: number, status, what it says, its support."""
    from rich.console import Console

    from rlctl.output import JsonOut
    from rlctl.rules import load_library

    lib = load_library(library)
    with JsonOut(json_out, allow_nan=False) as out:
        rows = [r for r in lib.rules if show_all or r.status == "active"]
        out.write({"library": str(library), "rules": [_brief(r) for r in rows],
                   "candidates": [_brief(c) for c in lib.candidates] if show_all else []})  # fmt: skip
        console = Console(stderr=out.to_stdout)
        Console(stderr=out.to_stdout, width=max(console.width, 140)).print(_table(lib, show_all=show_all))


@rules_app.command("show")
def show(
    rule_id: Annotated[int, typer.Argument(min=1, help="The rule's number.")],
    library: LibraryOpt = Path("rules.yaml"),
    json_out: JsonOpt = None,
) -> None:
    """One rule in full: conditions, support (experiments, scenarios, first and last seen), evidence."""
    from rich.console import Console

    from rlctl.output import JsonOut
    from rlctl.rules import compile_rules, load_library, to_yaml, unenforced

    lib = load_library(library)
    rule = lib.rule(rule_id)
    enforced = any(c.id == rule_id for c in compile_rules(lib))
    why = dict(unenforced(lib)).get(rule_id, "retired" if rule.status == "retired" else "")
    with JsonOut(json_out, allow_nan=False) as out:
        doc = {**rule.model_dump(mode="json", exclude_none=True), "enforced": enforced, "not_enforced_because": why}
        out.write(doc)
        console = Console(stderr=out.to_stdout)
        console.print(f"[bold]rule {rule.id}[/bold] ({rule.status}): {rule.statement or rule.describe()}")
        console.print("enforced by the safety layer" if enforced else f"not enforced: {why}")
        console.print(to_yaml(doc), markup=False, highlight=False, soft_wrap=True)


def _brief(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "status": r.status, "statement": r.statement or r.describe(), "support": r.support.count,
        "scenarios": len(r.support.scenarios), "backends": r.support.backends, "first_seen": r.support.first_seen,
        "last_seen": r.support.last_seen, "retired_by": r.retired.run if r.retired else None,
    }  # fmt: skip


def _table(lib: Any, *, show_all: bool) -> Any:
    from rich.table import Table

    from rlctl.rules import compile_rules

    enforced = {c.id for c in compile_rules(lib)}
    table = Table(title=f"boundary rules ({sum(r.status == 'active' for r in lib.rules)} active)")
    for col in ("#", "status", "rule", "experiments", "backends", "last seen", "enforced"):
        table.add_column(col, justify="right" if col in ("#", "experiments") else "left", overflow="fold")
    rows = [r for r in lib.rules if show_all or r.status == "active"] + (list(lib.candidates) if show_all else [])
    for r in rows:
        s = r.support
        table.add_row(
            str(r.id) if r.id else "–", r.status, r.statement or r.describe(), str(s.count),
            ", ".join(f"{k} {v}" for k, v in s.backends.items()), s.last_seen[:16], "yes" if r.id in enforced else "no",
        )  # fmt: skip
    return table
