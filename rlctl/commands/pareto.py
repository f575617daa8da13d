"""The knobs' Pareto front: ``rlctl pareto`` and ``rlctl bench pareto`` (:mod:`policies.pareto`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlctl.commands.groups import bench_app
from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP, STDOUT_PATH


def register(app: typer.Typer) -> None:
    app.command("pareto")(pareto)
    bench_app.command("pareto")(bench_pareto)


# Options shared by both commands: the load, the profile, the SLO, the bounds.
LoadOpt = Annotated[float | None, typer.Option("--load", min=0.001, max=10_000_000.0, help="Offered load, requests/s.")]
TraceOpt = Annotated[
    str | None,
    typer.Option(help="Instead of --load: a trace window (one count per line; builtin:<file>: a shipped one)."),
]
TraceIntervalOpt = Annotated[float, typer.Option(min=0.001, max=86_400.0, help="Seconds per trace value.")]
TraceOffsetOpt = Annotated[
    float, typer.Option(min=0.0, max=3.2e9, help="Where the window starts, seconds into the trace.")
]
TraceWindowOpt = Annotated[
    float, typer.Option(min=0.001, max=3.2e9, help="Window length, seconds (at most 1440 values).")
]
PeakOpt = Annotated[
    float, typer.Option(min=0.001, max=10_000_000.0, help="The trace scaled so its peak is this, req/s.")
]
ProfileOpt = Annotated[
    Path | None, typer.Option(help="Profile YAML (default: envs/profiles/testbed.yaml, the calibrated test-bed).")
]
SloOpt = Annotated[float, typer.Option(min=0.001, max=600_000.0, help="Constraint: P99 at most this, ms.")]
MaxReplicasOpt = Annotated[int, typer.Option(min=1, max=1024, help="Knob bound: the most replicas.")]
PopulationOpt = Annotated[int, typer.Option(min=4, max=10_000, help="NSGA-II population.")]
GenerationsOpt = Annotated[int, typer.Option(min=1, max=10_000, help="NSGA-II generations.")]


def _default_profile() -> Path | None:
    path = Path(__file__).resolve().parents[2] / "envs" / "profiles" / "testbed.yaml"
    return path if path.exists() else None


def _setup(
    load: float | None,
    trace: str | None,
    trace_interval: float,
    trace_offset: float,
    trace_window: float,
    peak_qps: float,
    profile: Path | None,
    max_replicas: int,
    hold: dict[str, bool] | None = None,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The profile's arrays, the knob space, the loads and their description (``hold``: knobs kept at a value)."""
    import numpy as np

    from envs.profile import ServiceProfile
    from policies import pareto as P
    from rlctl.contract import KNOB_FIELDS, KnobBounds, Knobs

    if (load is None) == (trace is None):
        raise ConfigError(
            f"give exactly one of --load QPS or --trace FILE (got --load {load}, --trace {trace}); "
            "e.g. rlctl pareto --load 2000"
        )
    prof_path = profile or _default_profile()
    prof = ServiceProfile.load(prof_path) if prof_path else ServiceProfile()
    if load is not None:
        loads = np.array([load])
        desc: dict[str, Any] = {"qps": load}
    else:
        assert trace is not None
        from chaos.spec import BUILTIN_PREFIX, builtin_trace

        path = builtin_trace(trace.removeprefix(BUILTIN_PREFIX)) if trace.startswith(BUILTIN_PREFIX) else Path(trace)
        loads = P.trace_window(path, interval_s=trace_interval, offset_s=trace_offset, window_s=trace_window,
                               peak_qps=peak_qps)  # fmt: skip
        desc = {"trace": trace, "interval_s": trace_interval, "offset_s": trace_offset, "window_s": trace_window,
                "peak_qps": peak_qps, "steps": int(loads.size), "mean_qps": round(float(loads.mean()), 3),
                "max_qps": round(float(loads.max()), 3)}  # fmt: skip
    hold = hold or {}
    bounds = KnobBounds(max_replicas=max_replicas, allow=tuple(k for k in KNOB_FIELDS if k not in hold))
    desc["profile"] = str(profile) if profile else ("envs/profiles/testbed.yaml" if prof_path else "ServiceProfile()")
    if hold:
        desc["held"] = dict(hold)
    space = P.KnobSpace(bounds=bounds, base=Knobs(**hold))  # type: ignore[arg-type]
    return P.profile_arrays(prof), space, loads, desc


def pareto(
    load: LoadOpt = None,
    trace: TraceOpt = None,
    trace_interval: TraceIntervalOpt = 60.0,
    trace_offset: TraceOffsetOpt = 0.0,
    trace_window: TraceWindowOpt = 3600.0,
    peak_qps: PeakOpt = 3000.0,
    profile: ProfileOpt = None,
    slo_p99_ms: SloOpt = DEFAULT_SLO_P99_MS,
    max_replicas: MaxReplicasOpt = 16,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 100,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of NSGA-II.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the front's pairwise projections here.")] = None,
    rows: Annotated[
        int, typer.Option(min=0, max=100_000, help="Table rows: points evenly spaced along P99 (0: all).")
    ] = 30,
    json_out: Annotated[Path | None, typer.Option("--json", help=f"Write the front as JSON here {JSON_HELP}.")] = None,
    check_real: Annotated[
        bool,
        typer.Option(
            "--check-real",
            help="Then run the cheapest, lowest-P99 and knee points on real gosvc replicas at --load (cgroups: "
            "root); prefetch and turbo are held on (no MSR access).",
        ),
    ] = False,
    repeats: Annotated[int, typer.Option(min=1, max=100, help="--check-real: repeats of each point, interleaved.")] = 3,
    check_duration: Annotated[
        float, typer.Option(min=0.5, max=3600.0, help="--check-real: seconds measured per repeat.")
    ] = 10.0,
    check_warmup: Annotated[
        float, typer.Option(min=0.0, max=600.0, help="--check-real: seconds of load before each measurement.")
    ] = 3.0,
    check_shares: Annotated[
        int,
        typer.Option(
            min=0,
            max=262_144,
            help="--check-real: CPU weight (cpu.shares) of each replica's cgroup and the generators'; the default is "
            "two threads at nice -5, as calibrated; more shields the measurement from the host's other tenants.",
        ),
    ] = 6242,
    check_iters_per_us: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            max=1e6,
            help="--check-real: fix every replica's spin rate (gosvc --iters-per-us), so runs do the same work per "
            "request; default: the first replica calibrates it at its start.",
        ),
    ] = None,
) -> None:
    """The knobs' Pareto front (P99, cores used, peak heap; P99 within the SLO) by NSGA-II in the simulator.

    Every static knob of one service within the contract's bounds, at steady state at --load req/s.

    Over a --trace window each setting scores its worst P99, mean cores and highest heap.

    The table calls out the cheapest setting meeting the SLO, the lowest P99 and the knee.

    With --check-real those points then run on real gosvc replicas (one cgroup each, the profile's
    CPU quota) at --load: predicted and measured P99, cores and heap side by side, and which
    points the measurements show dominated.
    """
    from policies import pareto as P
    from rlctl.output import JsonOut
    from rlctl.progress import progress_bar

    if check_real and load is None:
        raise ConfigError("--check-real runs the front's points at one load: give --load QPS, not --trace")
    hold = None
    if check_real:
        from rlctl.pareto_check import HELD

        hold = {k: v for k, (v, _why) in HELD.items()}
    prof, space, loads, desc = _setup(load, trace, trace_interval, trace_offset, trace_window, peak_qps, profile,
                                      max_replicas, hold)  # fmt: skip
    with JsonOut(json_out) as out:  # with --json -, the table goes to stderr
        with progress_bar("NSGA-II", total=generations) as bar:
            front = P.nsga2_front(prof, space, loads, slo_p99_ms, population=population, generations=generations,
                                  seed=seed, on_generation=lambda g: bar.update(completed=g))  # fmt: skip
        if front.objectives.shape[0] == 0:
            where = f"--load {load:g}" if load is not None else f"the trace window (peak {desc['max_qps']:g} req/s)"
            raise ConfigError(
                f"no knob setting within the bounds (up to {max_replicas} replicas) meets P99 <= {slo_p99_ms:g} ms "
                f"at {where}; lower the load, raise --max-replicas or --slo-p99-ms"
            )
        report = {"load": desc, "seed": seed, **P.front_report(front, slo_p99_ms=slo_p99_ms)}
        if plot is not None:
            report["plot"] = str(P.plot_front(report, plot))
        _print_front(report, rows)
        if check_real:
            assert load is not None
            report["check"] = _check_real(report, prof, load, slo_p99_ms, repeats, check_duration, check_warmup,
                                          check_shares, check_iters_per_us)  # fmt: skip
        out.write(report)


def _check_real(report: dict[str, Any], prof: Any, load: float, slo_p99_ms: float, repeats: int, duration_s: float,
                warmup_s: float, shares: int, iters_per_us: float | None) -> dict[str, Any]:  # fmt: skip
    """The called-out points on real replicas (:mod:`rlctl.pareto_check`), printed and as JSON."""
    from rlctl import pareto_check as C
    from rlctl.progress import progress_bar

    points = C.check_points(report)
    quota = float(prof["cpu_quota_cores"][0])
    cfg = C.CheckConfig(load_qps=load, quota_cores=quota, repeats=repeats, duration_s=duration_s, warmup_s=warmup_s,
                        shares=shares, iters_per_us=iters_per_us)  # fmt: skip
    with progress_bar("real test-bed", total=len(points) * repeats) as bar:
        meta: dict[str, Any] = {}
        trials = C.run_check(points, cfg, on_trial=lambda _t: bar.advance(), meta=meta)
    rows = C.summarise(points, trials, slo_p99_ms)
    doc = {
        "load_qps": load, "replica_quota_cores": quota, "repeats": repeats, "duration_s": duration_s,
        "warmup_s": warmup_s, "nice": cfg.nice, "cgroup_shares": cfg.shares,
        "held": {k: {"value": v, "why": why} for k, (v, why) in C.HELD.items()},
        "serve_flags": list(cfg.serve_flags), **meta, "machine": C.machine(), "points": rows,
        "trials": [t.to_dict() for t in trials],
    }  # fmt: skip
    _print_check(doc)
    return doc


def _print_check(doc: dict[str, Any]) -> None:
    """Predicted against measured, one row per point."""
    from rich.console import Console
    from rich.table import Table

    m = doc["machine"]
    one_min = [t["loadavg"][0] for t in doc["trials"] if t.get("loadavg")]
    foreign = [t["foreign_cores"] for t in doc["trials"]]
    table = Table(
        title=f"Real test-bed at {doc['load_qps']:g} req/s: {doc['repeats']} repeats x {doc['duration_s']:g} s, "
        f"mean \\[min-max]; {m['cpu_model']}, {m['cpus']} CPUs, 1-min load average "
        f"{min(one_min, default=0):.1f}-{max(one_min, default=0):.1f}, other tenants' CPU "
        f"{min(foreign, default=0):.2f}-{max(foreign, default=0):.2f} cores"
    )
    for h in ("point", "repl", "procs", "GOGC", "memlim", "pool", "P99 sim", "P99 real", "cores sim", "cores real",
              "heap sim", "heap real", "real verdict"):  # fmt: skip
        table.add_column(h, justify="left" if h in ("point", "real verdict") else "right")

    def rng(o: dict[str, float], fmt: str) -> str:
        return f"{o['mean']:{fmt}} \\[{o['min']:{fmt}}-{o['max']:{fmt}}]"

    for r in doc["points"]:
        k, p, me = r["knobs"], r["predicted"], r["measured"]
        verdict = "non-dominated" if r["non_dominated_measured"] else f"dominated by {', '.join(r['dominated_by'])}"
        if r["clearly_dominated_by"]:
            verdict += " (beyond the range)"
        table.add_row(
            r["point"], str(k["replicas"]), str(k["gomaxprocs"]), str(k["gogc"]), str(k["gomemlimit_mib"]),
            str(k["object_pool_size"]), f"{p['p99_ms']:.2f}", rng(me["p99_ms"], ".2f"), f"{p['cores_used']:.3f}",
            rng(me["cores_used"], ".3f"), f"{p['peak_heap_mib']:.1f}", rng(me["peak_heap_mib"], ".1f"), verdict,
        )  # fmt: skip
    console = Console()
    console.width = max(console.width, 160)
    console.print(table)


def _print_front(report: dict[str, Any], rows: int) -> None:
    """The front as a table (``rows`` points evenly spaced along P99, plus the knees; 0: all)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    tags: dict[int, list[str]] = {}
    for name, knee in report["knees"].items():
        tags.setdefault(knee["index"], []).append(name.replace("_", " "))
    n = len(report["front"])
    shown = set(range(n)) if rows == 0 or rows >= n else set(np.linspace(0, n - 1, rows).round().astype(int).tolist())
    hv = report["hypervolume"]
    title = (
        f"Pareto front: {n} settings{'' if len(shown | set(tags)) >= n else f' ({len(shown | set(tags))} shown)'}, "
        f"P99 <= {report['slo_p99_ms']:g} ms; NSGA-II {report['generations']} generations x "
        f"{report['population']}, {report['wall_s']:.1f} s, hypervolume {hv[0]:.4f} -> {hv[-1]:.4f}"
    )
    table = Table(title=title)
    heads = ("#", "repl", "procs", "GOGC", "memlim MiB", "pool", "conn", "prefetch", "turbo", "P99 ms", "cores",
             "heap MiB", "")  # fmt: skip
    for h in heads:
        table.add_column(h, justify="left" if h == "" else "right")
    for i, p in enumerate(report["front"]):
        if i not in shown and i not in tags:
            continue
        k, o = p["knobs"], p["objectives"]
        table.add_row(
            str(i), str(k["replicas"]), str(k["gomaxprocs"]), str(k["gogc"]), str(k["gomemlimit_mib"]),
            str(k["object_pool_size"]), str(k["conn_pool_size"]), "on" if k["prefetch"] else "off",
            "on" if k["turbo"] else "off", f"{o['p99_ms']:.2f}", f"{o['cores_used']:.3f}",
            f"{o['peak_heap_mib']:.1f}", ", ".join(tags.get(i, [])),
        )  # fmt: skip
    console = Console()
    console.width = max(console.width, 132)
    console.print(table)


def bench_pareto(
    load: LoadOpt = None,
    trace: TraceOpt = None,
    trace_interval: TraceIntervalOpt = 60.0,
    trace_offset: TraceOffsetOpt = 0.0,
    trace_window: TraceWindowOpt = 3600.0,
    peak_qps: PeakOpt = 3000.0,
    profile: ProfileOpt = None,
    slo_p99_ms: SloOpt = DEFAULT_SLO_P99_MS,
    max_replicas: MaxReplicasOpt = 16,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 100,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Seeds of NSGA-II and random search.")] = 3,
    exhaustive: Annotated[bool, typer.Option(help="Also score every setting of the space: the true front.")] = False,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """NSGA-II against random and grid search at the same evaluations: hypervolumes (one reference) and wall times."""
    from policies import pareto as P
    from rlctl.output import JsonOut

    prof, space, loads, desc = _setup(load, trace, trace_interval, trace_offset, trace_window, peak_qps, profile,
                                      max_replicas)  # fmt: skip
    with JsonOut(json_out, indent=None) as out:
        result = P.compare(prof, space, loads, slo_p99_ms, population=population, generations=generations,
                           seeds=seeds, exhaustive=exhaustive)  # fmt: skip
        out.write({"load": desc, **result})
