"""The fleet controller's benchmark: ``rlctl bench fleet`` (:mod:`rlctl.online.fleet_bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlctl.commands.groups import bench_app
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP, STDOUT_PATH


def register(app: typer.Typer) -> None:
    bench_app.command("fleet")(bench_fleet)


def _replica_counts(text: str, option: str, *, allow_empty: bool = False) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = [0]
    if (not counts and not allow_empty) or any(not 1 <= c <= 64 for c in counts):
        raise ConfigError(f"{option} {text!r}: give comma-separated replica counts from 1 to 64, e.g. 1,2,4")
    return counts


def bench_fleet(
    services: Annotated[int, typer.Option(min=1, max=100_000, help="Services the fleet controls.")] = 1000,
    interval: Annotated[float, typer.Option(min=0.5, max=300.0, help="Seconds between samples of each service.")] = 5.0,
    replicas: Annotated[str, typer.Option(help="Controller replica counts, one run each (e.g. 1,2,4).")] = "1,2,4",
    ticks: Annotated[int, typer.Option(min=4, max=10_000, help="Intervals of telemetry per run.")] = 12,
    drills: Annotated[
        str, typer.Option(help="Replica counts of the kill drills, one run each ('' for none); at least 2.")
    ] = "2,4",
    policy: Annotated[str, typer.Option(help="Artifact the replicas load in-process (default: the shipped one).")] = (
        "default"
    ),
    phases: Annotated[
        int,
        typer.Option(min=1, max=1000, help="Scrape phases: services in this many groups spread over the interval."),
    ] = 1,
    serve: Annotated[
        bool, typer.Option(help="Decide through the Ray Serve deployment (POST /act/many) instead of in-process.")
    ] = False,
    num_cpus: Annotated[int, typer.Option(min=1, max=64, help="CPUs for the local Ray instance (--serve).")] = 2,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """One fleet controller deployment over many services with simulated telemetry: decision latency,
    samples lost and double-acted across a replica kill, scaling with replicas; one JSON object."""
    from rich.console import Console

    from rlctl.online.fleet_bench import bench_fleet as run
    from rlctl.output import JsonOut

    counts = _replica_counts(replicas, "--replicas")
    drill_counts = _replica_counts(drills, "--drills", allow_empty=True)
    if any(c < 2 for c in drill_counts):
        raise ConfigError(f"--drills {drills!r}: a kill drill needs at least 2 replicas (one is killed)")
    console = Console(stderr=True)
    with JsonOut(json_out) as out:
        out.write(run(services=services, interval_s=interval, replica_counts=counts, drill_counts=drill_counts,
                      ticks=ticks, policy=policy, serve=serve, num_cpus=num_cpus, phases=phases,
                      progress=lambda msg: console.print(f"[dim]{msg}[/]")))  # fmt: skip
