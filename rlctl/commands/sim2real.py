"""Closing the sim-to-real gap: ``rlctl calibrate`` and the ``rlctl limits`` group.

- ``rlctl calibrate``: measure a real service at several knob settings (or read probe
  reports / saved data), fit the simulator's :class:`~envs.profile.ServiceProfile`, score it
  on held-out settings, write the profile YAML and a JSON report.
- ``rlctl limits check SERVICE.yaml``: validate a limits file (errors name the line).
- ``rlctl limits compile SERVICE.yaml --out DIR``: the environment's reward and bounds,
  the controller's safety bounds and Kubernetes objects.
- ``rlctl limits surface``: the degradation-probability surface as JSON and a heatmap.

``rlctl limits`` was ``rlctl boundary`` (the boundary is the critical point ``rlctl probe``
finds); the old group name still works, hidden, with a note on stderr.

Heavy imports (numpy, scipy, the simulator, pydantic) happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rlctl.commands.boundary import deprecated
from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.output import JSON_HELP

limits_app = typer.Typer(
    name="limits",
    help="Limits files (a service's SLOs, knob bounds, step limits, costs) and the degradation-probability surface.",
    no_args_is_help=True,
)

#: The group's old name, hidden: a note on stderr, then the same commands.
boundary_alias_app = typer.Typer(name="boundary", help="Deprecated name of 'rlctl limits'.", no_args_is_help=True)


@boundary_alias_app.callback()
def _boundary_alias() -> None:
    """Deprecated name of ``rlctl limits``."""
    deprecated("rlctl boundary", "rlctl limits")


def register(app: typer.Typer) -> None:
    """Add ``calibrate``, the ``limits`` group and its hidden old name ``boundary`` to ``app``."""
    app.command("calibrate")(calibrate)
    app.add_typer(limits_app, name="limits")
    app.add_typer(boundary_alias_app, name="boundary", hidden=True)
    for group in (limits_app, boundary_alias_app):
        group.command("check")(check)
        group.command("compile")(compile_cmd)
        group.command("surface")(surface)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# ------------------------------------------------------------------------------ calibrate


def calibrate(
    json_out: Path = typer.Option(
        ..., "--json", help=f"Write the calibration report (fit, holdout, data) here {JSON_HELP}."
    ),
    profile_out: Path = typer.Option(..., "--profile", help="Write the fitted profile YAML here."),
    target: str | None = typer.Option(None, help="Service to measure, e.g. http://127.0.0.1:8080 (means /work)."),
    admin: str | None = typer.Option(
        None, help="With --target: the admin listener's base URL for /admin/knobs (gosvc's --admin-addr)."
    ),
    admin_token_file: Path | None = typer.Option(None, help="File with the admin bearer token."),
    metrics_url: str | None = typer.Option(None, help="Service /metrics URL (default: the target's root /metrics)."),
    serve: str | None = typer.Option(
        None, help="Instead of --target: start a private `gosvc serve` with these flags, e.g. '--cpu-us 500'."
    ),
    from_probe: list[Path] = typer.Option([], "--from-probe", help="Fit (also) to these `rlctl probe` reports."),
    from_data: Path | None = typer.Option(None, help="Fit to calibration data saved earlier (--data-out / --json)."),
    from_suite: Path | None = typer.Option(
        None, help="Fit to a real chaos suite's steady seconds (rlctl validate-real --out DIR); later repeats held out."
    ),
    data_out: Path | None = typer.Option(None, help="Also save the measured data here (refit with --from-data)."),
    settings: str = typer.Option("1,50,1024;1,200,0;2,50,0;2,200,1024", help="Fit settings GOMAXPROCS,GOGC,POOL; ..."),
    holdout: str = typer.Option("2,50,1024;1,200,1024", help="Held-out settings ('' for none)."),
    step_s: float = typer.Option(1.5, min=0.1, max=3600.0, help="Seconds per measured step."),
    interval_s: float = typer.Option(0.25, min=0.05, max=60.0, help="Load-generator reporting interval, s."),
    repeats: int = typer.Option(3, help="Repeats of every fit ladder (the first climbs, later ones in random order)."),
    holdout_repeats: int = typer.Option(4, help="Repeats of every holdout load level."),
    slo_p99_ms: float = typer.Option(
        DEFAULT_SLO_P99_MS, min=0.001, max=600_000.0, help="SLO for the knee finder's max-QPS-at-SLO."
    ),
    cpu_quota_cores: float | None = typer.Option(
        None, min=0.01, max=1024.0, help="CPU quota the service runs under (default: from /metrics, else host cores)."
    ),
    cgroup_quota_cores: float | None = typer.Option(
        None,
        min=0.01,
        max=1024.0,
        help="With --serve: run it in a CPU cgroup (v1 or v2) with this CPU quota (root or a delegated cgroup).",
    ),
    nice: int = typer.Option(0, help="Niceness of the load generator (and of the --serve service); < 0 needs root."),
    base_profile: Path | None = typer.Option(
        None, help="Profile YAML to start from (default: ServiceProfile defaults)."
    ),
    fit_params: str | None = typer.Option(
        None, help="Comma-separated parameters to fit (default: what the data identify)."
    ),
    loadgen: str | None = typer.Option(None, help="gosvc binary (default: deploy/gosvc/bin/gosvc, then PATH)."),
    require_goal: bool = typer.Option(False, help="Exit 1 when the holdout misses the goal (P99 25 %, knee 10 %)."),
) -> None:
    """Fit the simulator's service profile to a real service; score it on held-out settings."""
    from envs.calibrate import Setting
    from rlctl.errors import CheckFailed, ConfigError

    sources = sum(x is not None for x in (target, serve, from_data, from_suite)) + bool(from_probe)
    if sources == 0:
        raise ConfigError(
            "nothing to fit: give --target URL (a running service), --serve FLAGS, --from-probe, --from-data "
            "or --from-suite"
        )
    if target and serve:
        raise ConfigError("--target and --serve both given: measure either a running service or a private one")
    fit_settings = Setting.parse_list(settings, source="--settings")
    hold_settings = Setting.parse_list(holdout, source="--holdout") if holdout.strip() else ()
    overlap = set(fit_settings) & set(hold_settings)
    if overlap:
        raise ConfigError(f"--holdout settings {sorted(map(str, overlap))} are also fit settings; hold out others")
    from rlctl.output import JsonOut

    with JsonOut(json_out, allow_nan=False) as out:  # with --json -, the service and the loadgen write to stderr
        report = _calibrate(
            out, profile_out=profile_out, target=target, admin=admin, admin_token_file=admin_token_file,
            metrics_url=metrics_url, serve=serve, from_probe=from_probe, from_data=from_data, from_suite=from_suite,
            data_out=data_out, fit_settings=fit_settings, hold_settings=hold_settings, step_s=step_s,
            interval_s=interval_s, repeats=repeats, holdout_repeats=holdout_repeats, slo_p99_ms=slo_p99_ms,
            cpu_quota_cores=cpu_quota_cores, cgroup_quota_cores=cgroup_quota_cores, nice=nice,
            base_profile=base_profile, fit_params=fit_params, loadgen=loadgen,
        )  # fmt: skip
    hold = report["holdout"]
    if require_goal and hold and not (hold["goal"]["p99_met"] and hold["goal"]["knee_met"]):
        where = "the report on stdout" if out.to_stdout else json_out
        raise CheckFailed(
            f"holdout misses the goal: P99 median |rel err| {_pct(hold['p99_median_abs_rel_error'])} (goal 25 %), "
            f"knee {_pct(hold['knee_rel_error'])} (goal 10 %); see {where}"
        )


def _calibrate(
    out: Any,
    *,
    profile_out: Path,
    target: str | None,
    admin: str | None,
    admin_token_file: Path | None,
    metrics_url: str | None,
    serve: str | None,
    from_probe: list[Path],
    from_data: Path | None,
    from_suite: Path | None,
    data_out: Path | None,
    fit_settings: Any,
    hold_settings: Any,
    step_s: float,
    interval_s: float,
    repeats: int,
    holdout_repeats: int,
    slo_p99_ms: float,
    cpu_quota_cores: float | None,
    cgroup_quota_cores: float | None,
    nice: int,
    base_profile: Path | None,
    fit_params: str | None,
    loadgen: str | None,
) -> dict[str, Any]:
    """Measure or read the data, fit, write the report and profile; returns the report."""
    from envs.calibrate import (
        CalibrationData,
        FitConfig,
        calibration_report,
        fit_profile,
        load_probe_report,
        load_suite_reports,
        profile_yaml,
        write_text_atomic,
    )
    from envs.profile import ServiceProfile
    from rlctl.errors import ConfigError

    data: CalibrationData | None = None
    if from_data is not None:
        data = _read_data(from_data)
    if target or serve:
        measured = _measure(
            target=target, admin=admin, token_file=admin_token_file, metrics_url=metrics_url, serve=serve,
            fit_settings=fit_settings, hold_settings=hold_settings, step_s=step_s, interval_s=interval_s,
            repeats=repeats, holdout_repeats=holdout_repeats, slo_p99_ms=slo_p99_ms, nice=nice,
            cpu_quota_cores=cpu_quota_cores, cgroup_quota_cores=cgroup_quota_cores, loadgen=loadgen,
        )  # fmt: skip
        data = measured if data is None else data.merge(measured)
    if from_suite is not None:
        if cpu_quota_cores is None:
            raise ConfigError(
                f"--from-suite {from_suite}: give --cpu-quota-cores, each replica's CPU quota in that suite "
                "(rlctl validate-real --replica-cpu, 0.25 by default)"
            )
        suite = load_suite_reports(from_suite, cpu_quota_cores=cpu_quota_cores)
        data = suite if data is None else data.merge(suite)
    for probe_file in from_probe:
        probe = load_probe_report(probe_file, cpu_quota_cores=cpu_quota_cores)
        data = probe if data is None else data.merge(probe)
    assert data is not None
    if data_out is not None:
        write_text_atomic(data_out, json.dumps(data.to_dict(), indent=1) + "\n")
    base = ServiceProfile.load(base_profile) if base_profile else ServiceProfile()
    params = tuple(p.strip() for p in fit_params.split(",") if p.strip()) if fit_params else None
    with _console().status("Fitting the profile (least squares on log P99)..."):
        result = fit_profile(data, base, FitConfig(params=params))
        report = calibration_report(result, data, slo_p99_ms=slo_p99_ms)
    out.write(report)
    write_text_atomic(profile_out, profile_yaml(result, holdout=report["holdout"], source=data.source))
    _print_calibration(report, "stdout" if out.to_stdout else out.dest, profile_out)
    return dict(report)


def _read_data(path: Path) -> Any:
    from envs.calibrate import CalibrationData
    from rlctl.errors import ConfigError

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--from-data {path}: cannot read it ({exc})") from None
    if isinstance(raw, dict) and raw.get("schema") == "rlctl.calibration/v1":
        raw = raw["data"]  # a calibration report embeds its data
    return CalibrationData.from_dict(raw, source=str(path))


def _measure(
    *,
    target: str | None,
    admin: str | None,
    token_file: Path | None,
    metrics_url: str | None,
    serve: str | None,
    fit_settings: Any,
    hold_settings: Any,
    cgroup_quota_cores: float | None,
    cpu_quota_cores: float | None,
    loadgen: str | None,
    **overrides: Any,
) -> Any:
    import shlex
    import signal

    from rlctl.boundary.probe import resolve_loadgen, resolve_urls
    from rlctl.errors import ConfigError
    from rlctl.harness.testbed import MeasureConfig, TestBed, measure, measure_config_for, read_token

    signal.signal(signal.SIGTERM, _interrupt)
    import time

    from rlctl.progress import progress_bar

    console = _console()
    with progress_bar("measuring", console=console) as bar:

        def on_step(msg: str) -> None:
            bar.update(description=f"measuring: {msg}")
            bar.log(f"{time.strftime('%H:%M:%S')} {msg}")

        if serve is not None:
            nice = int(overrides.get("nice", 0))
            with TestBed(shlex.split(serve), binary=loadgen, cgroup_quota_cores=cgroup_quota_cores, nice=nice) as bed:
                cfg = measure_config_for(bed, **overrides)
                source = {"command": bed.command, "cgroup_quota_cores": cgroup_quota_cores, "rlctl_command": _argv()}
                return measure(cfg, fit_settings, hold_settings, cpu_quota_cores=cpu_quota_cores or cgroup_quota_cores,
                               source=source, on_step=on_step)  # fmt: skip
        if token_file is None:
            raise ConfigError("--target needs --admin-token-file: calibration sets knobs through /admin/knobs")
        if admin is None:
            raise ConfigError(
                "--target needs --admin URL: gosvc serves /admin/knobs on its own listener, not on the target's; "
                "pass its --admin-addr (the admin_addr of its startup line), e.g. --admin http://127.0.0.1:9091"
            )
        assert target is not None
        url, metrics, _ = resolve_urls(target, metrics_url)
        cfg = MeasureConfig(url=url, metrics_url=metrics, admin_url=admin, admin_token=read_token(token_file),
                            loadgen=resolve_loadgen(loadgen), **overrides)  # fmt: skip
        return measure(cfg, fit_settings, hold_settings, cpu_quota_cores=cpu_quota_cores,
                       source={"target": target, "rlctl_command": _argv()}, on_step=on_step)  # fmt: skip


def _argv() -> str:
    import shlex
    import sys

    return "rlctl " + shlex.join(sys.argv[1:])


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so a private test-bed is stopped and its cgroup removed."""
    raise KeyboardInterrupt


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _print_calibration(report: dict[str, Any], json_out: Path | str | None, profile_out: Path) -> None:
    from rich.table import Table

    console = _console()
    fit = report["fit"]
    table = Table(title="Fitted parameters", title_justify="left")
    for col in ("parameter", "value", "± (rel)"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for name, value in fit["fitted"].items():
        se = fit["stderr_rel"].get(name)
        table.add_row(name, f"{value:.4g}", "n/a" if se is None else f"{100 * se:.0f} %")
    for name, value in fit["direct"].items():
        table.add_row(f"{name} (measured)", f"{value:.4g}", "")
    console.print(table)
    q = fit["quality"]
    console.print(
        f"fit: {q['n_points']} points, RMSE(log P99) {q['rmse_log_p99']:.3f}, median |rel err| "
        f"{_pct(q['median_abs_rel_error_p99'])}"
    )
    hold = report["holdout"]
    if hold:
        g = hold["goal"]
        console.print(
            f"holdout {', '.join(hold['settings'])}: P99 median |rel err| {_pct(hold['p99_median_abs_rel_error'])} "
            f"(goal 25 %: {'met' if g['p99_met'] else 'missed'}), knee error {_pct(hold['knee_rel_error'])} "
            f"(goal 10 %: {'met' if g['knee_met'] else 'missed'})"
        )
    console.print(f"report {json_out}, profile {profile_out}")


# ------------------------------------------------------------------------------ limits files


def check(spec_file: Path = typer.Argument(..., help="Limits YAML file of one service.")) -> None:
    """Validate a limits file; errors name the line, the field and the fix (exit 2)."""
    from rich.table import Table

    from rlctl.dsl import load_limits, resolve

    spec = load_limits(spec_file)
    r = resolve(spec)
    table = Table(title=f"{spec_file}: service {spec.service}", title_justify="left")
    table.add_column("knob")
    table.add_column("range")
    table.add_column("controller")
    for knob in ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size"):
        lo, hi = getattr(r.bounds, f"min_{knob}"), getattr(r.bounds, f"max_{knob}")
        table.add_row(knob, f"{lo}" if lo == hi else f"{lo} .. {hi}", _role(knob, r))
    for knob in ("prefetch", "turbo"):
        table.add_row(knob, getattr(spec.kernel, knob), _role(knob, r))
    console = _console()
    console.print(table)
    console.print("SLO: " + "; ".join(str(o) for o in spec.objectives()) + f"  (reward SLO {spec.slo_p99_ms:g} ms)")
    typer.echo(f"ok: {spec_file}")


def _role(knob: str, r: Any) -> str:
    if knob in r.bounds.allow:
        return "moves"
    return "pinned" if knob in r.pinned else "fixed"


def compile_cmd(
    spec_file: Path = typer.Argument(..., help="Limits YAML file of one service."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for env.json, safety.json and k8s/*.yaml (default: out/limits/SERVICE)."
    ),
    validate: bool = typer.Option(
        True, "--validate/--no-validate", help="Check the HPA and PDB with kubernetes-validate."
    ),
) -> None:
    """Compile a limits file into the env's reward and bounds, safety bounds and Kubernetes objects."""
    from rlctl.dsl import compile_limits, load_limits, validate_kubernetes, write_compiled

    spec = load_limits(spec_file)
    compiled = compile_limits(spec, source=str(spec_file), text=spec_file.read_text())
    checks = validate_kubernetes(compiled["kubernetes"]) if validate else {}
    target = out if out is not None else Path("out/limits") / spec.service
    for path in write_compiled(compiled, target):
        note = checks.get(path.stem, "")
        typer.echo(f"wrote {path}" + (f"  [{note}]" if note else ""))


# ------------------------------------------------------------------------------ surface


def surface(
    json_out: Path = typer.Option(
        ..., "--json", help=f"Write the surface JSON (what SurfaceTrigger loads) here {JSON_HELP}."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the heatmap PNG here."),
    from_telemetry: Path | None = typer.Option(None, help="Estimate from JSON lines of TelemetrySample dicts."),
    profile: Path | None = typer.Option(
        None, help="Profile YAML for the simulator (default: envs/profiles/testbed.yaml)."
    ),
    slo_p99_ms: float = typer.Option(
        DEFAULT_SLO_P99_MS, min=0.001, max=600_000.0, help="Degradation: P99 above this, ms."
    ),
    degradation: str = typer.Option("slo", help="Telemetry label: slo (P99 > SLO), detector, or either."),
    seeds: int = typer.Option(200, min=1, help="Simulator: randomised profiles per cell."),
    randomize_scale: float = typer.Option(0.5, min=0.0, max=1.0, help="Simulator: domain-randomisation scale."),
    noise_sd: float = typer.Option(0.15, min=0.0, max=5.0, help="Simulator: log-normal noise on P99 (sd of log)."),
    threshold: float = typer.Option(0.15, min=0.0, max=10.0, help="Trigger threshold drawn on the plot."),
) -> None:
    """P(degradation | throughput per replica, RTT std) from simulator rollouts or recorded telemetry."""
    from envs import surface as est
    from envs.profile import ServiceProfile

    if from_telemetry is not None:
        samples = est.read_telemetry(from_telemetry)
        surf = est.from_telemetry(samples, slo_p99_ms=slo_p99_ms, mode=degradation)
    else:
        prof_path = profile or _default_profile()
        base = ServiceProfile.load(prof_path) if prof_path else ServiceProfile()
        with _console().status(f"Simulating {seeds} randomised profiles per cell..."):
            surf = est.from_simulator(base, slo_p99_ms=slo_p99_ms, seeds=seeds, randomize_scale=randomize_scale,
                                      noise_sd=noise_sd)  # fmt: skip
        surf.meta["profile_file"] = str(prof_path) if prof_path else None
    surf.meta.setdefault("trigger", {"threshold": threshold, "consecutive": 5})
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=1, allow_nan=False) as out:
        if out.to_stdout:
            out.write(surf.to_dict())
        else:
            surf.save(json_out)
        msg = "wrote the surface to stdout" if out.to_stdout else f"wrote {json_out}"
        if plot is not None:
            est.plot_surface(surf, plot, threshold=threshold)
            msg += f" and {plot}"
        typer.echo(msg, err=out.to_stdout)


def _default_profile() -> Path | None:
    path = Path(__file__).resolve().parents[2] / "envs" / "profiles" / "testbed.yaml"
    return path if path.exists() else None
