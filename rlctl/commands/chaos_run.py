"""``rlctl chaos run``: run a scenario under several controllers on one backend and compare them.

Added to the ``chaos`` sub-app of :mod:`rlctl.commands.chaos`::

    rlctl chaos run SCENARIO.yaml --backend sim|local|k8s --controller ppo:default \\
        --controller hpa-tuned [--controller static ...] --json OUT --report DIR [--run-id ID] [--dry-run]

Every backend writes the same report: SLO-violation seconds, replica-seconds, recovery time
per fault, boundary events and actions per controller, as a Rich table, ``report.md``,
``timelines.png`` and JSON. Heavy imports happen inside the command.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import typer

from policies import registry
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP

#: Exit code of a run stopped by SIGINT/SIGTERM (after every fault was reverted).
EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``rlctl chaos`` (the sub-app is mounted by :mod:`rlctl.commands.chaos`)."""
    from rlctl.commands.chaos import chaos_app

    chaos_app.command("run")(run)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (see chaos/scenarios/)."),
    backend: str = typer.Option("sim", "--backend", "-b", help="Where the faults happen: sim, local or k8s."),
    controller: list[str] = typer.Option(
        [],
        "--controller",
        "-c",
        help=f"Controller to run (repeatable): {registry.HELP} Default: hpa-tuned.",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help=f"Write the JSON report here (default: DIR/report.json) {JSON_HELP}."
    ),
    report_dir: Path | None = typer.Option(None, "--report", help="Folder for report.md, timelines.png, report.json."),
    run_id: str | None = typer.Option(None, "--run-id", help="Run id (journal, cgroups, chaos objects); default: new."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the scenario, backend and controllers; print the plan; inject nothing."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**32 - 1, help="Seed of the simulator, the load's arrivals and fault targets."
    ),
    load_scale: float = typer.Option(
        1.0, "--load-scale", min=0.001, max=1000.0, help="local/k8s: multiply the scenario's load."
    ),
    replica_cpu: float = typer.Option(
        0.5,
        "--replica-cpu",
        min=0.0,
        max=1024.0,
        help="local: CPU quota per replica in cores (cgroup v1 or v2); 0 = no cgroup.",
    ),
    cpu_us: int = typer.Option(
        200, "--cpu-us", min=0, max=1_000_000, help="local: CPU work per request (gosvc serve --cpu-us)."
    ),
    replica_cpus: str = typer.Option(
        "off",
        "--replica-cpus",
        help="local: the replicas' CPUs (kernel list, e.g. 1; auto: all but the harness's); "
        "off: replicas and harness share every CPU. Quotas x --max-replicas must fit.",
    ),
    harness_cpus: str = typer.Option(
        "auto",
        "--harness-cpus",
        help="local: CPUs of the load generator, proxy, Redis, Ray and controller with "
        "--replica-cpus (auto: the first quarter of the online CPUs, or those not in --replica-cpus).",
    ),
    interval_s: float = typer.Option(
        5.0, "--interval", min=0.05, max=3600.0, help="local/k8s: seconds between controller decisions."
    ),
    initial_replicas: int = typer.Option(2, "--replicas", min=1, max=1000, help="local/k8s: replicas at the start."),
    max_replicas: int = typer.Option(
        6, "--max-replicas", min=1, max=1000, help="local/k8s: most replicas a controller may run."
    ),
    loss_mode: str = typer.Option("drop", "--loss-mode", help="local: network-loss as 'drop' or 'reset'."),
    partition_mode: str = typer.Option("blackhole", "--partition-mode", help="local: 'blackhole' or 'refuse'."),
    gosvc: Path | None = typer.Option(None, "--gosvc", help="local: gosvc binary (default deploy/gosvc/bin/gosvc)."),
    stress_ng: Path | None = typer.Option(None, "--stress-ng", help="local: stress-ng binary."),
    namespace: list[str] = typer.Option([], "--namespace", "-n", help="k8s: namespaces faults may touch."),
    url: str | None = typer.Option(None, "--url", help="k8s: the service's base URL reachable from here."),
    metrics_url: list[str] = typer.Option([], "--metrics-url", help="k8s: /metrics URL to scrape (repeatable)."),
    deployment: str | None = typer.Option(None, "--deployment", help="k8s: [NAMESPACE/]NAME of the Deployment."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="k8s: kubeconfig file."),
    context: str | None = typer.Option(None, "--context", help="k8s: kubeconfig context."),
    mesh_objects: str = typer.Option(
        "windows",
        "--mesh-objects",
        help="k8s: 'windows' (one chaos object per fault window, timed by rlctl) or 'native' (a Chaos Mesh "
        "Schedule per repeated fault and a Workflow per sequence, their runs and nodes in the report).",
    ),
    online: bool = typer.Option(
        False,
        "--online",
        help="local/k8s: decide through the production path (telemetry -> Redis -> Ray Serve for ppo: "
        "or the baseline's rule -> safety -> actuators) instead of an in-process call.",
    ),
    rules: Path | None = typer.Option(
        None,
        "--rules",
        help="With --online: a boundary rule library (rlctl rules learn) the safety layer enforces, "
        "as rlctl control --rules does.",
    ),
) -> None:
    """Run SCENARIO once per --controller on a backend and report them side by side."""
    from rich.console import Console

    from chaos.runner import ControllerContext, check_controller_names
    from chaos.spec import load_scenario
    from rlctl.contract import KnobBounds, Knobs
    from rlctl.harness.journal import check_run_id

    if backend not in ("sim", "local", "k8s"):
        raise ConfigError(f"--backend {backend!r}: choose sim, local or k8s")
    if loss_mode not in ("drop", "reset"):
        raise ConfigError(f"--loss-mode {loss_mode!r}: choose drop or reset")
    if partition_mode not in ("blackhole", "refuse"):
        raise ConfigError(f"--partition-mode {partition_mode!r}: choose blackhole or refuse")
    if load_scale <= 0 or interval_s <= 0 or replica_cpu < 0 or cpu_us < 0:
        raise ConfigError("--load-scale and --interval must be > 0; --replica-cpu and --cpu-us >= 0")
    if not 1 <= initial_replicas <= max_replicas:
        raise ConfigError(f"--replicas {initial_replicas} must be between 1 and --max-replicas {max_replicas}")
    if online and backend == "sim":
        raise ConfigError("--online needs a live backend (local or k8s): the simulator has no telemetry to stream")
    if rules is not None and not online:
        raise ConfigError(f"--rules {rules}: only the online path runs the safety layer; add --online")
    from rlctl.rules import load_safety_rules

    safety_rules = load_safety_rules(rules) if rules is not None else ()  # before anything starts
    spec = load_scenario(scenario)
    controllers = check_controller_names(controller or ["hpa-tuned"], where=backend)
    rid = check_run_id(run_id) if run_id else new_run_id()

    chosen: Any
    if backend == "sim":
        from chaos.backends.sim import SimBackend, SimConfig

        chosen = SimBackend(SimConfig(seed=seed))
        ctx = ControllerContext("sim", spec, seed=seed)
    else:
        bounds = KnobBounds(max_replicas=max_replicas, max_gomaxprocs=4)
        knobs = Knobs(replicas=initial_replicas, gomaxprocs=1)
        ctx = ControllerContext(backend, spec, bounds=bounds, initial_knobs=knobs, seed=seed)
        if backend == "local":
            from chaos.backends.local import LocalBackend, LocalConfig
            from rlctl.cgroups import CpuSplit

            chosen = LocalBackend(
                LocalConfig(
                    gosvc=str(gosvc) if gosvc else None,
                    stress_ng=str(stress_ng) if stress_ng else None,
                    replica_cpu=replica_cpu or None,
                    cpu_us=cpu_us,
                    interval_s=interval_s,
                    load_scale=load_scale,
                    initial_knobs=knobs,
                    bounds=bounds,
                    loss_mode=loss_mode,
                    partition_mode=partition_mode,
                    log_dir=report_dir / "logs" if report_dir else None,
                    seed=seed,
                    cpu_split=CpuSplit.resolve(replica_cpus, harness_cpus),
                )
            )
        else:
            from chaos.backends.k8s.backend import K8sConfig, K8sRunBackend

            chosen = K8sRunBackend(
                K8sConfig(
                    gosvc=str(gosvc) if gosvc else None,
                    interval_s=interval_s,
                    load_scale=load_scale,
                    initial_knobs=knobs,
                    bounds=bounds,
                    log_dir=report_dir / "logs" if report_dir else None,
                    seed=seed,
                    namespaces=tuple(namespace),
                    kubeconfig=str(kubeconfig) if kubeconfig else None,
                    context=context,
                    url=url,
                    metrics_urls=tuple(metrics_url),
                    deployment=deployment,
                    dry_run=dry_run,
                    mesh_objects=mesh_objects,
                )
            )

    from rlctl.output import JsonOut

    console = Console(stderr=True)
    # With --json -, redis-server, Ray, gosvc and the results table write to stderr until the report is out.
    with JsonOut(json_out, allow_nan=False) as out:
        if dry_run:
            from chaos.runner import resolve_controller

            lines = chosen.plan(spec)
            for name in controllers:
                resolve_controller(name, ctx)  # a missing artifact or an oracle off the simulator fails here
            _print_plan(console, spec.name, chosen, controllers, rid, lines)
            return
        _execute(console, spec, scenario, chosen, ctx, controllers, rid, report_dir, out, online=online,
                 rules=safety_rules)  # fmt: skip


def _print_plan(console: Any, name: str, backend: Any, controllers: list[str], rid: str, lines: list[str]) -> None:
    console.print(f"[bold]dry run[/bold]: {name} on the {backend.name} backend, run id {rid}")
    console.print(f"controllers, one run each: {', '.join(controllers)}")
    for line in lines:
        typer.echo(line)


def _execute(
    console: Any,
    spec: Any,
    scenario_path: Path,
    backend: Any,
    ctx: Any,
    controllers: list[str],
    rid: str,
    report_dir: Path | None,
    out: Any,
    *,
    online: bool = False,
    rules: tuple[Any, ...] = (),
) -> None:
    import contextlib

    from rich.console import Console

    from chaos.runner import build_report, results_table, run_experiment, write_report

    if report_dir is None and out.dest is None:
        console.print("[yellow]no --report or --json given: results are printed only[/yellow]")

    from rlctl.progress import progress_bar

    duration = float(spec.duration_s)
    done: list[str] = []

    def started(name: str) -> None:
        console.print(
            f"running [bold]{name}[/bold] on the {backend.name} backend ({spec.duration_s:g}s of scenario time)"
        )
        bar.update(description=f"{name} on {backend.name}")
        if backend.name == "sim":  # faster than wall time: move once per run
            bar.update(completed=len(done) * duration)
        else:
            bar.follow_clock(len(done) * duration, duration)
        done.append(name)

    try:
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(progress_bar("chaos run", total=len(controllers) * duration, console=console))
            wrap = None
            if online:
                from chaos.backends.online import OnlinePath, served_policies

                policies = served_policies(controllers)
                console.print("starting redis-server" + (" and Ray Serve" if policies else "") + " for the online path")
                path = stack.enter_context(OnlinePath(policies, rules=rules))

                def wrap(inner: Any, name: str) -> Any:
                    return path.controller(inner, name, bounds=ctx.bounds, interval_s=backend.config.interval_s)

            records, facts = run_experiment(
                spec, backend, controllers, run_id=rid, context=ctx, on_start=started, wrap=wrap
            )
    except KeyboardInterrupt:
        console.print(f"[red]interrupted[/red]: every fault of run {rid} was reverted; no report written")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    report = build_report(
        spec, records, backend=backend.name, run_id=rid, scenario_file=str(scenario_path), facts=facts
    )
    files = write_report(report, report_dir, out.file)
    if out.to_stdout:
        out.write(report)
    Console().print(results_table(report))
    for name in report["controllers"]:  # what Chaos Mesh's Schedules and Workflows did (--mesh-objects native)
        for line in report["results"][name]["extra"].get("chaos_mesh_summary", []):
            console.print(f"{name}: {line}")
    if files:
        console.print("wrote " + ", ".join(f"{k} {v}" for k, v in files.items()))
