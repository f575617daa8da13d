"""``rlctl validate-real``: the policy against a tuned HPA on real Go processes (see :mod:`chaos.local_suite`).

    rlctl validate-real --quick                      # one 3-minute run of the policy, online path
    rlctl validate-real --out deploy/results/real    # the suite: 4 scenarios x 2 repeats x controllers
    rlctl bench isolation --json -                   # P99 at a fixed load per replica, 1..max replicas

Needs root or a delegated cgroup (CPU quotas, cgroup v1 or v2; see :mod:`rlctl.cgroups`),
redis-server, stress-ng and the gosvc binary (``make system gosvc``). Heavy imports happen
inside the command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from policies import registry
from rlctl.commands.groups import bench_app
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP


def register(app: typer.Typer) -> None:
    app.command("validate-real")(validate_real)
    bench_app.command("isolation")(bench_isolation)


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
    max_replicas: int = typer.Option(
        4,
        "--max-replicas",
        min=1,
        max=1000,
        help="Most replicas a controller may run (their quotas must fit --replica-cpus).",
    ),
    replica_cpus: str = typer.Option(
        "auto",
        "--replica-cpus",
        help="The replicas' CPUs (kernel list, e.g. 1 or 2-7); auto: all but the "
        "harness's; off: replicas and harness share every CPU (the 2026-11-28 layout).",
    ),
    harness_cpus: str = typer.Option(
        "auto",
        "--harness-cpus",
        help="CPUs of the load generator, proxy, Redis, Ray and controller; auto: the "
        "first quarter of the online CPUs (CPU 0 of 2), or those not in --replica-cpus.",
    ),
    sizing: str | None = typer.Option(
        None,
        "--sizing",
        help="rescale (default): scale a scenario whose peak is over 70% of --max-replicas "
        "replicas' capacity down to it; refuse: stop with the numbers; off: run as written (--quick's default).",
    ),
    replica_capacity: float | None = typer.Option(
        None,
        "--replica-capacity",
        min=1.0,
        max=1e7,
        help="One replica's capacity in QPS for --sizing (default: "
        "measured first, by rlctl probe's ramp on one isolated replica, about a minute).",
    ),
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
    from rlctl.cgroups import CpuSplit

    if sizing is not None and sizing not in ("rescale", "refuse", "off"):
        raise ConfigError(f"--sizing {sizing!r}: choose rescale, refuse or off")
    split = CpuSplit.resolve(replica_cpus, harness_cpus)
    if split is not None:  # refused before anything starts
        split.check_quotas(replica_cpu, max_replicas, quota_source="--replica-cpu", max_source="--max-replicas")
    for spec in registry.parse_all(controller):  # refused before anything starts, as chaos run --backend local
        registry.check_runs(spec, "local")
    if quick:
        cfg = RealConfig(
            replica_cpu=replica_cpu, cpu_us=cpu_us, max_replicas=max_replicas, repeats=1,
            scenarios=tuple(scenario) or (QUICK,), controllers=tuple(controller) or ("ppo:default",),
            gosvc=str(gosvc) if gosvc else None, cpu_split=split,
            sizing=sizing or ("rescale" if replica_capacity else "off"), replica_capacity_qps=replica_capacity,
        )  # fmt: skip
        folder = out or Path("out/validate-real-quick")
    else:
        cfg = RealConfig(
            replica_cpu=replica_cpu, cpu_us=cpu_us, max_replicas=max_replicas, repeats=repeats,
            first_repeat=first_repeat, scenarios=tuple(scenario) or SUITE,
            controllers=tuple(controller) or ("ppo:default", "hpa-tuned"),
            gosvc=str(gosvc) if gosvc else None, cpu_split=split,
            sizing=sizing or "rescale", replica_capacity_qps=replica_capacity,
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


def bench_isolation(
    json_out: Path = typer.Option(Path("-"), "--json", help=f"Write the result here {JSON_HELP}."),
    max_replicas: int = typer.Option(
        4, "--max-replicas", min=1, max=64, help="Replicas from 1 to this; each gets the replica CPUs / this of quota."
    ),
    cpu_us: int = typer.Option(1000, "--cpu-us", min=1, max=1_000_000, help="CPU work per request (as validate-real)."),
    cpu_iters: int | None = typer.Option(
        None,
        "--cpu-iters",
        min=1,
        max=10**12,
        help="Spin iterations per request instead of --cpu-us at the fastest "
        "of three calibrations (gosvc serve --cpu-iters).",
    ),
    fraction: float = typer.Option(
        0.5, "--fraction", min=0.01, max=1.5, help="Load per replica as a fraction of one isolated replica's knee."
    ),
    per_replica_qps: float | None = typer.Option(
        None, "--per-replica-qps", min=1.0, max=1e6, help="Use this load per replica instead of probing capacity."
    ),
    capacity_probes: int = typer.Option(
        1, "--capacity-probes", min=1, max=9, help="Capacity probes of one replica; the median knee counts."
    ),
    point_s: float = typer.Option(20.0, "--point-s", min=3.0, max=3600.0, help="Measured seconds per point."),
    warmup_s: float = typer.Option(3.0, "--warmup-s", min=0.0, max=600.0, help="Seconds dropped before each point."),
    repeats: int = typer.Option(3, "--repeats", min=1, max=100, help="Repeats (n order shuffled, layouts alternated)."),
    layout: list[str] = typer.Option(
        [], "--layout", help="isolated and/or shared (repeatable; default both: the before/after)."
    ),
    replica_cpus: str = typer.Option("auto", "--replica-cpus", help="The replicas' CPUs (kernel list or auto)."),
    harness_cpus: str = typer.Option(
        "auto", "--harness-cpus", help="The harness's CPUs (kernel list or auto: CPU 0 of 2)."
    ),
    gosvc: Path | None = typer.Option(None, "--gosvc", help="gosvc binary (default deploy/gosvc/bin/gosvc)."),
    seed: int = typer.Option(1, "--seed", min=0, max=2**31, help="Seed of the n order and the arrivals."),
) -> None:
    """P99 at a fixed load per replica, 1 to --max-replicas replicas, with and without the CPU split."""
    from rich.console import Console

    from chaos.backends.local.isolation_bench import Bench, FlatnessConfig
    from rlctl.cgroups import CpuSplit
    from rlctl.output import JsonOut

    split = CpuSplit.resolve(replica_cpus, harness_cpus)
    if split is None:
        raise ConfigError("--replica-cpus off: the benchmark compares the split with the shared layout; give CPUs")
    cfg = FlatnessConfig(
        split=split, max_replicas=max_replicas, cpu_us=cpu_us, cpu_iters=cpu_iters, fraction=fraction,
        per_replica_qps=per_replica_qps, capacity_probes=capacity_probes,
        point_s=point_s, warmup_s=warmup_s, repeats=repeats, layouts=tuple(layout) or ("isolated", "shared"),
        gosvc=str(gosvc) if gosvc else None, seed=seed,
    )  # fmt: skip
    console = Console(stderr=True)
    with JsonOut(json_out, allow_nan=False) as out:
        result = Bench(cfg, on_point=lambda msg: console.print(f"{time.strftime('%H:%M:%S')} {msg}")).run()
        result["command"] = "rlctl bench isolation " + " ".join(sys.argv[3:]) if len(sys.argv) > 2 else ""
        out.write(result)
    for name, block in result["layouts"].items():
        cells = ", ".join(f"n={n}: {b['p99_ms_mean']:.2f} ({b['p99_ms_min']:.2f}-{b['p99_ms_max']:.2f})"
                          for n, b in block["per_replicas"].items())  # fmt: skip
        console.print(f"{name}: P99 ms {cells}; max/min {block['ratio_max_min']}")
