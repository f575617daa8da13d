"""``rlctl validate-real``: the policy against a tuned HPA on real Go processes (see :mod:`chaos.local_suite`).

    rlctl validate-real --quick                      # one 3-minute run of the policy, online path
    rlctl validate-real --out deploy/results/real    # the suite: 4 scenarios x 2 repeats x controllers

Needs root or a delegated cgroup (CPU quotas, cgroup v1 or v2; see :mod:`rlctl.cgroups`),
redis-server, stress-ng and the gosvc binary (``make system gosvc``). Heavy imports happen
inside the command.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from policies import registry
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP


def register(app: typer.Typer) -> None:
    app.command("validate-real")(validate_real)


def validate_real(
    quick: bool = typer.Option(
        False, "--quick", help="One 3-minute flash crowd run of the policy (add -c hpa-tuned to compare)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Results folder (default: out/validate-real/<UTC time>; --quick: out/validate-real-quick)."
    ),
    controller: list[str] = typer.Option(
        [],
        "--controller",
        "-c",
        help=f"Controllers (repeatable; they run on the local backend): {registry.HELP} Default: ppo:default and "
        "hpa-tuned (--quick: ppo:default).",
    ),
    scenario: list[str] = typer.Option(
        [], "--scenario", "-s", help="Scenarios of chaos/scenarios/real (repeatable). Default: the four of the suite."
    ),
    repeats: int = typer.Option(
        2, "--repeats", min=1, max=100, help="Runs of each scenario per controller (--quick: 1)."
    ),
    first_repeat: int = typer.Option(
        1, "--first-repeat", help="Number of the first repeat: continue a suite in its --out folder (then --rebuild)."
    ),
    replica_cpu: float = typer.Option(
        0.25, "--replica-cpu", min=0.0, max=1024.0, help="CPU quota per replica in cores (cgroup v1 or v2)."
    ),
    cpu_us: int = typer.Option(
        1000, "--cpu-us", min=0, max=1_000_000, help="CPU work per request (gosvc serve --cpu-us)."
    ),
    max_replicas: int = typer.Option(5, "--max-replicas", min=1, max=1000, help="Most replicas a controller may run."),
    gosvc: Path | None = typer.Option(None, "--gosvc", help="gosvc binary (default deploy/gosvc/bin/gosvc)."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Only recompute --out's summary from its run reports (adds the simulator prediction)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help=f"Also write the summary JSON here (it is always in --out) {JSON_HELP}."
    ),
) -> None:
    """Run the real test-bed suite (or --quick) and write per-run reports and a summary."""
    from rich.console import Console

    from chaos.local_suite import QUICK, SUITE, RealConfig, rebuild_summary, render_summary, run_suite
    from rlctl.output import JsonOut

    if rebuild:
        if out is None:
            raise ConfigError("--rebuild needs --out DIR: the folder of a suite's run reports")
        with JsonOut(json_out, allow_nan=False) as summary_out:  # with --json -, the Markdown goes to stderr
            summary = rebuild_summary(out)
            typer.echo(render_summary(summary))
            summary_out.write(summary)
        return

    if first_repeat < 1:
        raise ConfigError(f"--first-repeat {first_repeat}: repeats are numbered from 1")
    if replica_cpu <= 0 or cpu_us <= 0 or max_replicas < 2:
        raise ConfigError("--replica-cpu and --cpu-us must be > 0 and --max-replicas at least 2")
    for spec in registry.parse_all(controller):  # refused before anything starts, as chaos run --backend local
        registry.check_runs(spec, "local")
    if quick:
        cfg = RealConfig(
            replica_cpu=replica_cpu, cpu_us=cpu_us, max_replicas=max_replicas, repeats=1,
            scenarios=tuple(scenario) or (QUICK,), controllers=tuple(controller) or ("ppo:default",),
            gosvc=str(gosvc) if gosvc else None,
        )  # fmt: skip
        folder = out or Path("out/validate-real-quick")
    else:
        cfg = RealConfig(
            replica_cpu=replica_cpu, cpu_us=cpu_us, max_replicas=max_replicas, repeats=repeats,
            first_repeat=first_repeat, scenarios=tuple(scenario) or SUITE,
            controllers=tuple(controller) or ("ppo:default", "hpa-tuned"),
            gosvc=str(gosvc) if gosvc else None,
        )  # fmt: skip
        folder = out or Path("out/validate-real") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    console = Console(stderr=True)
    console.print(f"results go to {folder}; runs are {', '.join(cfg.scenarios)} x {cfg.repeats} x "
                  f"{', '.join(cfg.controllers)}")  # fmt: skip

    from rlctl.progress import progress_bar

    runs = len(cfg.scenarios) * cfg.repeats
    begun: list[str] = []

    def started(what: str) -> None:
        console.print(f"[bold]{time.strftime('%H:%M:%S')}[/bold] running {what}")
        bar.update(completed=len(begun), description=what)
        begun.append(what)

    # With --json -, redis-server, Ray, gosvc and the Markdown summary write to stderr until the JSON is out.
    with JsonOut(json_out, allow_nan=False) as summary_out:
        try:
            with progress_bar("validate-real", total=runs, console=console) as bar:
                summary = run_suite(cfg, folder, on_start=started)
        except KeyboardInterrupt:
            console.print(f"[red]interrupted[/red]: every fault was reverted; finished scenarios are in {folder}")
            raise typer.Exit(130) from None
        typer.echo(render_summary(summary))
        summary_out.write(summary)
    console.print(f"wrote {folder}/summary.md, summary.json, summary.png and one report folder per run")
