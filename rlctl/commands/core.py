"""Core commands: ``demo``, ``bench env``, ``topology``, ``simulate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from policies import registry
from rlctl.commands.groups import bench_app
from rlctl.output import JSON_HELP, STDOUT_PATH


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("topology")(topology)
    app.command("simulate")(simulate)
    app.add_typer(bench_app, name="bench")
    bench_app.command("env")(bench_env)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report, JSON and PNG plots.")] = Path("out/demo"),
    policy: Annotated[str, typer.Option(help="Policy to evaluate: 'default' or an artifact folder.")] = "default",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per scenario.")] = 2,
    static_day: Annotated[bool, typer.Option(help="Only simulate a day under a static configuration.")] = False,
) -> None:
    """The main job: evaluate the shipped policy against the tuned HPA on a small suite.

    Falls back to a simulated day of one service under diurnal load with a static
    configuration when no trained policy is available (or with --static-day).
    """
    from policies.artifact import default_artifact_dir

    if static_day or (policy == "default" and not (default_artifact_dir() / "manifest.json").exists()):
        if not static_day:
            _console().print("[yellow]No trained default policy found; running the static day instead.[/]")
        _static_day(out)
        return
    from rlctl.commands.policy import run_eval

    run_eval(policy=policy, baselines=["hpa-tuned", "static", "oracle"], suite="smoke", seeds=seeds,
             json_out=out / "eval.json", report_dir=out, guard=True)  # fmt: skip


def _static_day(out: Path) -> None:
    """A simulated day of one service under diurnal load with a static configuration."""
    import numpy as np
    from rich.table import Table

    from chaos.spec import LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig, nominal_capacity_qps
    from policies.baselines import StaticController
    from policies.rollout import rollout
    from rlctl.contract import Knobs
    from rlctl.report import plot_timelines, write_atomic

    profile = ServiceProfile()
    cap = nominal_capacity_qps(profile)
    day = 86400.0
    config = EnvConfig(episode_s=day)
    peak = 6.0 * cap
    scenario = Scenario(
        name="diurnal-day", kind="steady", duration_s=day,
        load=LoadSpec(kind="diurnal", base_qps=0.15 * peak, peak_qps=peak, period_s=day, phase_s=0.0),
    )  # fmt: skip
    knobs = Knobs(replicas=8, gomaxprocs=int(profile.cpu_quota_cores), gogc=100)
    with _console().status("Simulating one day (17,280 steps of 5 s)..."):
        (run,) = rollout(StaticController(knobs, name="static-8"), [scenario], [0], config, profile)
    s = run.series
    table = Table(title="One simulated day, static configuration (8 replicas, GOMAXPROCS 2, GOGC 100)")
    for col in ("figure", "value"):
        table.add_column(col)
    rows = {
        "peak offered load": f"{s['offered_qps'].max():,.0f} req/s",
        "P99 median / max": f"{np.median(s['p99_ms']):.2f} / {s['p99_ms'].max():.1f} ms",
        "SLO (P99)": f"{config.slo_p99_ms:g} ms",
        "SLO-violation seconds": f"{run.scores['slo_violation_s']:,.0f}",
        "replica-hours": f"{run.scores['replica_seconds'] / 3600:.1f}",
        "core-hours used": f"{run.scores['core_seconds'] / 3600:.1f}",
    }
    for k, v in rows.items():
        table.add_row(k, v)
    from rich.console import Console

    Console().print(table)
    png = plot_timelines(out / "static-day.png", {"static-8": s}, slo_p99_ms=config.slo_p99_ms, title=scenario.name)
    write_atomic(out / "static-day.json", json.dumps({"scores": run.scores, "knobs": knobs.to_dict()}, indent=2))
    Console().print(f"wrote {png} and {out / 'static-day.json'}")


def bench_env(
    batch: Annotated[int, typer.Option(min=1, help="Services per batched step.")] = 256,
    seconds: Annotated[
        float, typer.Option(min=0.2, max=3600.0, help="Wall-clock seconds per measurement, over all rounds.")
    ] = 6.0,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds; medians are reported.")] = 3,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Steps per second: the single env, the batched env, and gymnasium's CartPole-v1 as reference."""
    from rlctl.bench import bench_env as run
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=None) as out:
        out.write(run(batch=batch, seconds=seconds, rounds=rounds))


def topology(
    sys_root: Annotated[Path, typer.Option(help="Root of the sysfs tree to read.")] = Path("/sys"),
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Print this host's CPU topology (sockets, NUMA nodes, cores, SMT) as the simulator sees it."""
    from envs.profile import Topology
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=None) as out:
        topo = Topology.from_sys(sys_root)
        out.write({**{f: getattr(topo, f) for f in topo.__dataclass_fields__}, "logical_cpus": topo.logical_cpus})


def simulate(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML (load + faults).")],
    controller: Annotated[str, typer.Option(help=f"The controller: {registry.HELP}")] = "hpa",
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the PNG and JSON.")] = Path("out/simulate"),
    json_out: Annotated[Path, typer.Option("--json", help=f"Also write the scores here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Run one scenario in the simulator with one controller; print its scores."""
    from chaos.spec import file_stem, load_scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.evaluate import evaluate
    from rlctl.output import JsonOut
    from rlctl.report import plot_timelines, write_atomic

    registry.check_runs(registry.parse(controller), "sim")
    with JsonOut(json_out, indent=None) as result:
        spec = load_scenario(scenario)
        profile = ServiceProfile()
        config = EnvConfig(slo_p99_ms=spec.slo_p99_ms)
        # One scenario and seed of rlctl eval: the same controller, rollout and scores for every name.
        _, runs = evaluate([controller], [spec], [seed], config, profile)
        ((name, (run,)),) = runs[spec.name].items()
        windows = [(w.start_s, w.end_s, w.kind.value) for w in spec.windows()]
        plot_timelines(out / f"{file_stem(spec.name)}.png", {name: run.series}, slo_p99_ms=config.slo_p99_ms,
                       title=spec.name, fault_windows=windows)  # fmt: skip
        write_atomic(out / f"{file_stem(spec.name)}.json", json.dumps(run.scores, indent=2))
        result.write(run.scores)
