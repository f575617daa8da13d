"""``rlctl probe`` and ``rlctl knee-gate``: find a live service's boundary (its knee) and gate CI on it.

``rlctl knee-gate`` was ``rlctl guard``; the old name still works, hidden, with a note on stderr
("guard" is the SLO guard around a controller: ``policies/guard.py``, ``--guard``, ``ppo+guard``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.output import JSON_HELP


def register(app: typer.Typer) -> None:
    """Add the boundary commands to ``app``."""

    @app.command("probe")
    def probe(
        url: str = typer.Argument(..., help="Endpoint to load; a bare root such as http://127.0.0.1:8080 means /work."),
        json_out: Path = typer.Option(..., "--json", help=f"Write the JSON report here {JSON_HELP}."),
        metrics_url: str | None = typer.Option(None, help="Prometheus /metrics URL (default: URL's host /metrics)."),
        ramp: str = typer.Option("100,100,5", help="start,step,step-seconds of the load ramp (requests/s, s)."),
        max_qps: float = typer.Option(
            10_000.0, min=1.0, max=1e7, help="Highest ramp step; the probe normally stops before it."
        ),
        slo_p99_ms: float = typer.Option(
            DEFAULT_SLO_P99_MS, min=0.001, max=600_000.0, help="P99 objective for max_qps_at_slo, ms."
        ),
        interval_s: float = typer.Option(
            1.0, min=0.05, max=3600.0, help="Load-generator reporting and scrape interval, s."
        ),
        warmup_steps: int = typer.Option(3, help="Ramp steps that form the detector's baseline."),
        consecutive: int = typer.Option(2, help="Steps in a row the boundary rule must hold to stop."),
        confirm_intervals: int = typer.Option(
            0, help="Also stop when the rule holds this many intervals in a row inside a step (0: off)."
        ),
        knee_method: str = typer.Option(
            "kneedle",
            help="Method of the reported knee: kneedle, two-segment or crossing (P99 over the detector's rise "
            "threshold); the report cross-checks it with a second method.",
        ),
        plot: Path | None = typer.Option(None, "--plot", help="Also write P99-against-load as a PNG."),
        loadgen: str | None = typer.Option(None, help="gosvc binary (default: deploy/gosvc/bin/gosvc, then PATH)."),
        profile_dir: Path | None = typer.Option(None, help="Where pprof profiles at the boundary go."),
        pprof_url: str | None = typer.Option(
            None,
            help="pprof base URL (default: the metrics host's /debug/pprof); gosvc serves it on its admin "
            "listener only: http://ADMIN_ADDR/debug/pprof, ADMIN_ADDR from its startup line's admin_addr.",
        ),
        pprof_token_file: Path | None = typer.Option(
            None, help="File with the bearer token for --pprof-url (gosvc: its admin token)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live table (a progress bar on a terminal)."),
        harness_cpus: str = typer.Option(
            "off",
            "--harness-cpus",
            help="Run the probe and its load generator on these CPUs only (kernel list, "
            "e.g. 0; auto: the first quarter of the online CPUs), apart from a service pinned to the others "
            "(a cgroup cpuset, else sched_setaffinity); off: every CPU.",
        ),
    ) -> None:
        """Ramp load until the service crosses its boundary, then report the knee."""
        import contextlib

        from rich.console import Console

        from rlctl.boundary.probe import ProbeConfig, ProbeDisplay, Ramp, plot_report, run_probe, write_report

        config = ProbeConfig.from_cli(
            url,
            metrics_url=metrics_url,
            loadgen=loadgen,
            ramp=Ramp.parse(ramp),
            max_qps=max_qps,
            slo_p99_ms=slo_p99_ms,
            interval_s=interval_s,
            warmup_steps=warmup_steps,
            consecutive=consecutive,
            confirm_intervals=confirm_intervals,
            knee_method=knee_method,
            profile_dir=str(profile_dir) if profile_dir else None,
            pprof_url=pprof_url,
            pprof_token=_read_token(pprof_token_file) if pprof_token_file else None,
        )
        from rlctl.cgroups import CpuSplit
        from rlctl.harness.isolation import HarnessIsolation
        from rlctl.output import JsonOut

        split = None if harness_cpus.strip().lower() == "off" else CpuSplit.resolve("auto", harness_cpus)
        with contextlib.ExitStack() as stack, JsonOut(json_out, allow_nan=False) as out:
            # with --json -, the loadgen's output goes to stderr
            if split is not None:
                stack.enter_context(HarnessIsolation(split, command="probe"))
            if quiet:
                report = _probe_with_bar(config, run_probe)
            else:
                with ProbeDisplay() as display:
                    report = run_probe(config, on_update=display)
            if out.to_stdout:
                out.write(report)
            else:
                write_report(report, json_out)
        if plot is not None:
            plot_report(report, plot)
        console = Console(stderr=True)
        knee = report["knee_qps"]
        console.print(
            f"knee {'n/a' if knee is None else f'{knee:.0f}'} qps ({report['knee_methods'][0]}; "
            f"{report['knee_methods'][1]} {_fmt(report['knee_qps_second_method'])}), "
            f"max qps at SLO {_fmt(report['max_qps_at_slo'])}, stopped at {report['stopped_at_qps']:.0f} qps "
            f"by {report['stopped_by']}; report {json_out}"
        )

    app.command("knee-gate")(knee_gate)
    app.command("guard", hidden=True, help="Deprecated name of 'rlctl knee-gate'.")(_guard_alias)


def knee_gate(
    base: Path = typer.Argument(..., help="Baseline probe report (JSON)."),
    new: Path = typer.Argument(..., help="New probe report (JSON)."),
    max_shift: float = typer.Option(0.15, min=0.0, max=1.0, help="Largest allowed downward knee shift, as a fraction."),
) -> None:
    """CI gate: exit 1 when the knee in NEW moved down by more than --max-shift from BASE."""
    from rich.console import Console

    from rlctl.boundary.knee_gate import compare, render_table
    from rlctl.errors import CheckFailed

    result = compare(base, new, max_shift=max_shift)
    table = render_table(result)
    table.title = "rlctl knee-gate: performance boundary"
    Console().print(table)
    if not result.passed:
        raise CheckFailed(result.message())


def _guard_alias(
    base: Path = typer.Argument(..., help="Baseline probe report (JSON)."),
    new: Path = typer.Argument(..., help="New probe report (JSON)."),
    max_shift: float = typer.Option(0.15, min=0.0, max=1.0, help="Largest allowed downward knee shift, as a fraction."),
) -> None:
    """Deprecated name of ``rlctl knee-gate``: a note on stderr, then the same check."""
    deprecated("rlctl guard", "rlctl knee-gate")
    knee_gate(base, new, max_shift=max_shift)


def deprecated(old: str, new: str) -> None:
    """The one-line note an old command name prints to stderr before it runs as the new one."""
    typer.echo(f"note: '{old}' is deprecated; use '{new}' (same arguments)", err=True)


def _probe_with_bar(config: Any, run_probe: Any) -> Any:
    """``run_probe`` with a progress bar over the ramp's steps up to --max-qps (it usually stops before)."""
    import math

    from rlctl.progress import progress_bar

    ramp = config.ramp
    steps = max(1, math.floor((config.max_qps - ramp.start_qps) / ramp.step_qps) + 1)
    with progress_bar(f"probing {config.url}", total=steps) as bar:

        def on_update(state: Any) -> None:
            bar.update(completed=len(state.steps), description=f"probe: {state.status}")

        return run_probe(config, on_update=on_update)


def _read_token(path: Path) -> str:
    from rlctl.online.actuators import read_token

    return read_token(path)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"
