"""Policy commands: ``train``, ``eval``, ``bench train``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from policies import registry
from rlctl.commands.groups import bench_app
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP, STDOUT_PATH


def register(app: typer.Typer) -> None:

    app.command("train")(train)
    app.command("eval")(eval_cmd)
    bench_app.command("train")(bench_train)
    bench_app.command("seeds")(bench_seeds)


def train(
    out: Annotated[Path, typer.Option(help="Artifact folder to write (model.zip + manifest.json).")] = Path(
        "runs/policy"
    ),
    config: Annotated[Path | None, typer.Option(help="YAML/JSON file of TrainConfig fields.")] = None,
    timesteps: Annotated[int | None, typer.Option(min=1, help="Total environment steps at most.")] = None,
    n_envs: Annotated[int | None, typer.Option(min=1, help="Simulated services stepped together.")] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, max=2**32 - 1, help="Seed for numpy, torch, the environments.")
    ] = None,
    eval_every: Annotated[int | None, typer.Option(min=0, help="Rollouts between validation runs (0: never).")] = None,
    log_dir: Annotated[Path, typer.Option(help="TensorBoard logs and checkpoints.")] = Path("runs/train"),
    stop_at_target: Annotated[bool, typer.Option(help="Stop once the validation target is met.")] = True,
    name: Annotated[str, typer.Option(help="Name recorded in the manifest.")] = "default",
    ray_address: Annotated[
        str | None, typer.Option(help="Run seeds/trials on a Ray cluster (see the README's deployment section).")
    ] = None,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the summary JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Train the PPO policy under chaos domain randomisation; write the best artifact.

    Reproduce the shipped default with: rlctl train --out policies/artifacts/default --seed 0
    """
    from rich.console import Console

    from policies.train import TrainConfig
    from policies.train import train as run

    overrides: dict[str, Any] = {"total_timesteps": timesteps, "n_envs": n_envs, "seed": seed, "eval_every": eval_every}
    if config is not None:
        cfg = TrainConfig.from_file(config, **overrides)
    else:
        cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if ray_address is not None:
        from policies.distributed import train_on_ray  # type: ignore[import-not-found,unused-ignore]

        train_on_ray(cfg, out, ray_address=ray_address, log_dir=log_dir)
        return
    from rlctl.output import JsonOut

    console = Console(stderr=True)
    console.print(f"training PPO for up to {cfg.total_timesteps:,} steps on {cfg.n_envs} simulated services")
    with JsonOut(json_out, indent=None) as summary_out:  # with --json -, SB3's logs and progress go to stderr
        result = run(cfg, out, log_dir=log_dir, progress_bar=console.is_terminal, stop_at_target=stop_at_target,
                     name=name)  # fmt: skip
        summary_out.write(_train_summary(out, result))


def _train_summary(out: Path, result: Any) -> dict[str, Any]:
    return {
        "artifact": str(out),
        "steps": result.steps,
        "wall_s": round(result.wall_s, 1),
        "env_steps_per_s": round(result.env_steps_per_s, 1),
        "target_met": result.target_met,
        "time_to_target_s": result.time_to_target_s,
        "best_gap": result.best_gap,
    }


def _parse_controllers(
    policy: str | None, baselines: list[str], guard: bool = False, safety: bool = False
) -> list[Any]:
    """The policy (and its variants under the guard and the safety layer), then the baselines
    (names, checked against :mod:`policies.registry`; :func:`policies.evaluate.evaluate` builds them)."""
    from policies.guard import SLOGuard
    from policies.ppo import PPOController, load_policy, trained_with_guard

    for spec in registry.parse_all(baselines):
        registry.check_runs(spec, "sim")
    if not policy and (guard or safety):
        flag = "--guard" if guard else "--safety"
        raise ConfigError(f"{flag} wraps the policy: give --policy too (e.g. --policy default {flag})")
    out: list[Any] = []
    if policy:
        # Each variant gets its own controller: they keep per-service state.
        variants: list[Callable[[], Any]] = [lambda: load_policy(policy)]
        if guard and trained_with_guard(PPOController(policy)):
            raise ConfigError(
                f"--guard: the policy {policy!r} was trained under the SLO guard and always runs under it; drop --guard"
            )
        if guard:
            variants.append(lambda: SLOGuard(PPOController(policy)))
        out.extend(make() for make in variants)
        if safety:
            from policies.production import ThroughSafetyLayer

            out.extend(ThroughSafetyLayer(make()) for make in variants)
    out.extend(baselines)
    return out


def run_eval(
    *,
    policy: str | None,
    baselines: list[str],
    suite: str | None = "validation",
    trace: Path | None = None,
    trace_interval: float = 60.0,
    scale_peak: str = "auto",
    seeds: int = 3,
    json_out: Path | None = None,
    report_dir: Path | None = None,
    time_scale: float = 12.0,
    guard: bool = False,
    safety: bool = False,
    frontier: bool = False,
) -> dict[str, Any]:
    """Evaluate and report (the body of ``rlctl eval`` and ``rlctl demo``).

    ``frontier`` adds the grid of baselines without foresight and the clairvoyant references
    (``policies.frontier``), then checks, after the JSON and the report are written, that none
    dominates the policy: :class:`CheckFailed` (exit 1) if one does.
    """
    from rich.console import Console

    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.evaluate import evaluate
    from policies.report import render_table, write_report
    from policies.suites import get_suite, trace_scenarios

    config = EnvConfig()
    profile = ServiceProfile()
    if trace is not None:
        scenarios = trace_scenarios(trace, profile, config, trace_interval, scale_peak, time_scale)
    elif suite:
        scenarios = get_suite(suite, profile, config.bounds.max_replicas)
    else:
        raise ConfigError("give --suite NAME|FILE or --trace FILE")
    if frontier:
        from policies.frontier import CLAIRVOYANT, FRONTIER_BASELINES

        if not policy:
            raise ConfigError(
                "--frontier checks the policy against the baselines: give --policy (e.g. --policy default)"
            )
        baselines = [*baselines, *(b for b in (*CLAIRVOYANT, *FRONTIER_BASELINES) if b not in baselines)]
    controllers = _parse_controllers(policy, baselines, guard, safety)
    from rlctl.output import JsonOut
    from rlctl.progress import progress_bar

    dominated: list[str] = []
    with JsonOut(json_out) as out:  # with --json -, the table goes to stderr
        what = f"evaluating {len(controllers)} controllers on {len(scenarios)} scenarios x {seeds} seeds"
        with progress_bar(what, total=len(controllers) * len(scenarios)) as bar:

            def on_progress(done: int, total: int, label: str) -> None:
                bar.update(completed=done, total=total, description=f"evaluating {label}")

            report, runs = evaluate(controllers, scenarios, list(range(seeds)), config, profile, on_progress)
        import shutil

        # The table is wide: never squeeze it below 150 columns (pipes and CI logs report 80).
        Console(width=max(150, shutil.get_terminal_size().columns)).print(render_table(report))
        if frontier:
            dominated = _frontier(report, controllers, report_dir)
        out.write(report)
        if report_dir is not None:
            write_report(report_dir, report, runs, scenarios, config)
            Console().print(f"report: {report_dir / 'report.md'}")
    if dominated:
        from rlctl.errors import CheckFailed

        raise CheckFailed(
            "the policy is dominated (less SLO-violation time and fewer replica-s): " + "; ".join(dominated)
        )
    return report


def _frontier(report: dict[str, Any], controllers: list[Any], report_dir: Path | None) -> list[str]:
    """Add ``report["frontier"]``, print its table, write its plots; the dominated (controller, kind)s."""
    import shutil

    from rich.console import Console

    from policies.frontier import failures, frontier_check, render_frontier_table, write_frontier_report

    under_test = [c.name for c in controllers if not isinstance(c, str)]
    checked = [c for c in controllers if isinstance(c, str)]
    totals = report["summary"]["totals"]
    report["frontier"] = frontier_check(totals, under_test, checked)
    Console(width=max(150, shutil.get_terminal_size().columns)).print(render_frontier_table(report["frontier"]))
    if report_dir is not None:
        write_frontier_report(report_dir, totals, report["frontier"], checked)
    return failures(report["frontier"])


def eval_cmd(
    policy: Annotated[str | None, typer.Option(help="'default', 'ppo:default' or an artifact folder.")] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help=f"Controller to compare (repeatable): {registry.HELP}"),
    ] = None,
    suite: Annotated[str | None, typer.Option(help="validation, train, smoke, or a scenario YAML/folder.")] = None,
    trace: Annotated[Path | None, typer.Option(help="Evaluate on a trace file instead of a suite.")] = None,
    trace_interval: Annotated[float, typer.Option(min=0.001, max=86_400.0, help="Seconds per trace value.")] = 60.0,
    scale_peak: Annotated[str, typer.Option(help="Peak req/s of the scaled trace, or 'auto'.")] = "auto",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per scenario.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help=f"Write the JSON report here {JSON_HELP}.")] = None,
    report: Annotated[Path | None, typer.Option(help="Folder for Markdown and PNG plots.")] = None,
    guard: Annotated[
        bool, typer.Option(help="Also run the policy under the SLO guard (policies/guard.py) as ppo+guard:NAME.")
    ] = False,
    safety: Annotated[
        bool,
        typer.Option(
            help="Also run the policy (and ppo+guard) through the production safety layer (rlctl.online.safety, "
            "as `rlctl control` does) as ppo+safety:NAME (ppo+guard+safety:NAME)."
        ),
    ] = False,
    frontier: Annotated[
        bool,
        typer.Option(
            help="Also run hpa-<t>, oracle-reactive-<h> and capacity-<h> (each +guard; t 0.3-0.9 by 0.1, "
            "h 1.0-1.3 by 0.1) and the references hpa-tuned and oracle; exit 1 if one of the grid has less "
            "SLO-violation time AND fewer replica-s than the policy on a scenario kind or in total (table, "
            "JSON 'frontier', --report PNGs)."
        ),
    ] = False,
) -> None:
    """Evaluate a policy against baselines on a suite or a trace; side-by-side table, JSON, report."""
    if policy is None and not baseline:
        raise ConfigError("nothing to evaluate: give --policy and/or --baseline (e.g. --baseline hpa-tuned)")
    if trace is None and suite is None:
        suite = "validation"
    run_eval(
        policy=policy,
        baselines=list(baseline or []),
        suite=suite,
        trace=trace,
        trace_interval=trace_interval,
        scale_peak=scale_peak,
        seeds=seeds,
        json_out=json_out,
        report_dir=report,
        guard=guard,
        safety=safety,
        frontier=frontier,
    )


def bench_train(
    timesteps: Annotated[int, typer.Option(min=1, help="Step budget for the from-scratch run.")] = 6_000_000,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    log_dir: Annotated[Path, typer.Option()] = Path("runs/bench-train"),
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Environment steps/s during training and wall-clock to reach the target from scratch."""
    from policies.train import TrainConfig
    from policies.train import train as run
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=None) as out:
        result = run(TrainConfig(total_timesteps=timesteps, seed=seed), None, log_dir=log_dir, stop_at_target=True)
        out.write(
            {
                "env_steps_per_s": round(result.env_steps_per_s, 1),
                "steps": result.steps,
                "wall_s": round(result.wall_s, 1),
                "target_met": result.target_met,
                "time_to_target_s": None if result.time_to_target_s is None else round(result.time_to_target_s, 1),
                "best_gap": result.best_gap,
            }
        )


def bench_seeds(
    policies: Annotated[
        list[Path], typer.Argument(help="Artifact folders, one per training seed (or folders holding them).")
    ],
    suite: Annotated[str, typer.Option(help="validation, train, smoke, or a scenario YAML/folder.")] = "validation",
    trace: Annotated[Path | None, typer.Option(help="Judge on a trace file instead of a suite.")] = None,
    trace_interval: Annotated[float, typer.Option(min=0.001, max=86_400.0, help="Seconds per trace value.")] = 60.0,
    scale_peak: Annotated[str, typer.Option(help="Peak req/s of the scaled trace, or 'auto'.")] = "auto",
    seeds: Annotated[int, typer.Option(min=1, max=1000, help="Evaluation seeds per scenario.")] = 3,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """A policy judged over training seeds: IQM and 95 % bootstrap CI of each ratio to hpa-tuned."""
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.ppo import load_policy
    from policies.seeds import artifact_paths, judge
    from policies.suites import get_suite, trace_scenarios
    from rlctl.output import JsonOut

    config, profile = EnvConfig(), ServiceProfile()
    if trace is not None:
        scenarios = trace_scenarios(trace, profile, config, trace_interval, scale_peak, 12.0)
    else:
        scenarios = get_suite(suite, profile, config.bounds.max_replicas)
    paths = artifact_paths(policies)
    controllers = [load_policy(p, name=f"ppo:{p.name}") for p in paths]
    with JsonOut(json_out) as out:
        report = judge(controllers, scenarios, list(range(seeds)), config, profile)
        report["artifacts"] = [str(p) for p in paths]
        out.write(report)
