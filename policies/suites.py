"""Built-in scenario suites: ``train`` and ``validation``.

Both cover steady (constant, diurnal, slow ramp), bursty (step, flash crowd, NASA trace
replay) and faulted load with every fault kind of :mod:`chaos.spec`. Loads are given as
fractions of the replica range's capacity (``max_replicas x`` one replica's nominal
capacity), so a suite fits any service profile. The two suites use different shapes,
sizes, timings and trace segments; ``validation`` is never trained on (its NASA replay is
from August 1995; training replays only July).

Validation faults are sized so that a controller can still keep the SLO: a fault whose
direct latency alone breaks the SLO (say, 5 ms of injected network delay against an 8 ms
objective) scores every controller the same and measures nothing about control. The
random faults of training, and the ``train`` suite, cover the full range.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos.spec import FaultKind, FaultSequence, FaultSpec, LoadSpec, Repeat, Scenario, load_scenario
from envs.loads import read_trace
from envs.profile import ServiceProfile
from envs.scenarios import default_trace_path
from envs.sim import nominal_capacity_qps
from rlctl.errors import ConfigError

HOUR = 3600.0


def _f(kind: FaultKind, start: float, dur: float, **params: float | int | str) -> FaultSpec:
    return FaultSpec(kind=kind, start_s=start, duration_s=dur, params=params)


def validation_suite(profile: ServiceProfile, max_replicas: int = 16, duration_s: float = HOUR) -> list[Scenario]:
    """Eleven one-hour scenarios: 3 steady, 3 bursty, 5 faulted (every fault kind)."""
    cap = nominal_capacity_qps(profile) * max_replicas
    d = duration_s
    # The shipped NASA trace, never a substitute: without it the suite is not the one whose figures are reported.
    trace = default_trace_path()
    bursty_trace = LoadSpec(
        kind="trace", path=str(trace), peak_qps=0.6 * cap, offset_s=60 * 60 * 24 * 40, time_scale=12.0
    )
    return [
        Scenario(name="steady-constant", kind="steady", duration_s=d, load=LoadSpec(kind="constant", qps=0.35 * cap)),
        Scenario(
            name="steady-diurnal", kind="steady", duration_s=d,
            load=LoadSpec(kind="diurnal", base_qps=0.1 * cap, peak_qps=0.5 * cap, period_s=d),
        ),
        Scenario(
            name="steady-ramp", kind="steady", duration_s=d,
            load=LoadSpec(kind="ramp", start_qps=0.1 * cap, end_qps=0.55 * cap),
        ),
        Scenario(
            name="bursty-step", kind="bursty", duration_s=d,
            load=LoadSpec(kind="step", base_qps=0.1 * cap, step_qps=0.5 * cap, at_s=0.4 * d),
        ),
        Scenario(
            name="bursty-flash-crowd", kind="bursty", duration_s=d,
            load=LoadSpec(kind="flash", base_qps=0.12 * cap, peak_qps=0.65 * cap, at_s=0.3 * d, rise_s=20, decay_s=400),
        ),
        Scenario(name="bursty-nasa-replay", kind="bursty", duration_s=d, load=bursty_trace),
        Scenario(
            name="fault-network", kind="fault", duration_s=d, load=LoadSpec(kind="constant", qps=0.3 * cap),
            faults=[
                _f(FaultKind.NETWORK_DELAY, 0.15 * d, 300, latency_ms=1.0, jitter_ms=0.3),
                _f(FaultKind.NETWORK_LOSS, 0.45 * d, 240, loss_percent=0.1),
                _f(FaultKind.NETWORK_BANDWIDTH, 0.7 * d, 300, rate_mbps=40.0),
            ],
        ),
        Scenario(
            name="fault-stress", kind="fault", duration_s=d,
            load=LoadSpec(kind="diurnal", base_qps=0.15 * cap, peak_qps=0.45 * cap, period_s=d),
            faults=[
                _f(FaultKind.CPU_STRESS, 0.3 * d, 600, workers=1, load_percent=80),
                _f(FaultKind.MEMORY_STRESS, 0.65 * d, 400, workers=2, size_mib=256),
            ],
        ),
        Scenario(
            name="fault-pods", kind="fault", duration_s=d,
            load=LoadSpec(kind="flash", base_qps=0.15 * cap, peak_qps=0.5 * cap, at_s=0.5 * d, rise_s=60, decay_s=900),
            faults=[
                FaultSpec(kind=FaultKind.POD_KILL, start_s=0.1 * d, duration_s=30, repeat=Repeat(every_s=600, count=4),
                          params={"restart_delay_s": 30.0}),
                _f(FaultKind.POD_FAILURE, 0.55 * d, 300),
                _f(FaultKind.CONTAINER_KILL, 0.8 * d, 20, restart_delay_s=15.0),
            ],
        ),
        Scenario(
            name="fault-host", kind="fault", duration_s=d, load=LoadSpec(kind="constant", qps=0.35 * cap),
            faults=[
                _f(FaultKind.FAN_FAILURE, 0.1 * d, 900, r_factor=1.8),
                _f(FaultKind.NUMA_MISPLACEMENT, 0.5 * d, 600, remote_fraction=0.9),
                _f(FaultKind.IO_LATENCY, 0.75 * d, 300, delay_ms=2.0, percent=100),
                _f(FaultKind.TIME_SKEW, 0.9 * d, 120, offset_ms=-60000),
            ],
        ),
        Scenario(
            name="fault-partition", kind="fault", duration_s=d,
            load=LoadSpec(kind="step", base_qps=0.15 * cap, step_qps=0.45 * cap, at_s=0.5 * d),
            sequences=[
                FaultSequence(name="partition-then-stress", start_s=0.2 * d, gap_s=120, steps=[
                    _f(FaultKind.NETWORK_PARTITION, 0, 180, fraction=0.2),
                    _f(FaultKind.CPU_STRESS, 0, 600, workers=1, load_percent=60),
                ]),
            ],
        ),
    ]  # fmt: skip


def train_suite(profile: ServiceProfile, max_replicas: int = 16, duration_s: float = HOUR) -> list[Scenario]:
    """Scenarios of the same families as validation with other shapes, sizes and timings."""
    cap = nominal_capacity_qps(profile) * max_replicas
    d = duration_s
    trace = default_trace_path()
    out = [
        Scenario(name="train-constant", kind="steady", duration_s=d, load=LoadSpec(kind="constant", qps=0.5 * cap)),
        Scenario(
            name="train-diurnal", kind="steady", duration_s=d,
            load=LoadSpec(kind="diurnal", base_qps=0.2 * cap, peak_qps=0.7 * cap, period_s=2 * d, phase_s=0.3 * d),
        ),
        Scenario(
            name="train-step", kind="bursty", duration_s=d,
            load=LoadSpec(kind="step", base_qps=0.2 * cap, step_qps=0.7 * cap, at_s=0.6 * d),
        ),
        Scenario(
            name="train-flash", kind="bursty", duration_s=d,
            load=LoadSpec(kind="flash", base_qps=0.2 * cap, peak_qps=0.75 * cap, at_s=0.2 * d, rise_s=40, decay_s=200),
        ),
        Scenario(
            name="train-faults", kind="fault", duration_s=d, load=LoadSpec(kind="constant", qps=0.4 * cap),
            faults=[_f(k, (0.05 + 0.07 * i) * d, 200) for i, k in enumerate(FaultKind)],
        ),
        Scenario(
            name="train-nasa", kind="bursty", duration_s=d,
            load=LoadSpec(kind="trace", path=str(trace), peak_qps=0.7 * cap, offset_s=0.0, time_scale=12.0),
        ),
    ]  # fmt: skip
    return out


def smoke_suite(profile: ServiceProfile, max_replicas: int = 16, duration_s: float = HOUR) -> list[Scenario]:
    """Three validation scenarios (steady, bursty, fault) for the demo and quick checks."""
    by_name = {s.name: s for s in validation_suite(profile, max_replicas, duration_s)}
    return [by_name["steady-diurnal"], by_name["bursty-flash-crowd"], by_name["fault-pods"]]


SUITES: dict[str, Callable[..., list[Scenario]]] = {
    "validation": validation_suite,
    "train": train_suite,
    "smoke": smoke_suite,
}


def get_suite(name: str, profile: ServiceProfile, max_replicas: int = 16, duration_s: float = HOUR) -> list[Scenario]:
    """A built-in suite by name, or the scenarios of a YAML file or folder of YAML files."""
    if name in SUITES:
        return SUITES[name](profile, max_replicas, duration_s)

    p = Path(name)
    if p.is_dir():
        files = sorted(p.glob("*.yaml"))
        if not files:
            raise ConfigError(f"--suite {name}: the folder has no *.yaml scenarios")
        return [load_scenario(f) for f in files]
    if p.is_file():
        return [load_scenario(p)]
    raise ConfigError(f"--suite {name!r}: not a built-in suite ({', '.join(SUITES)}) nor a scenario file or folder")


def trace_scenarios(
    path: Path | str,
    profile: ServiceProfile,
    config: Any,
    interval_s: float = 60.0,
    scale_peak: str = "auto",
    time_scale: float = 12.0,
) -> list[Scenario]:
    """Scenarios replaying a trace file: plain (bursty) and with faults (fault).

    ``scale_peak='auto'`` scales the trace so its peak needs most of the replica range
    (75% of ``max_replicas`` x one replica's nominal capacity). The trace is replayed
    ``time_scale`` times faster (one hour covers ``time_scale`` hours of the trace).
    """

    max_replicas = config.bounds.max_replicas
    if scale_peak == "auto":
        peak = 0.75 * max_replicas * nominal_capacity_qps(profile)
    else:
        try:
            peak = float(scale_peak)
        except ValueError:
            raise ConfigError(f"--scale-peak {scale_peak!r}: give requests/s (e.g. 20000) or 'auto'") from None
        if peak <= 0:
            raise ConfigError(f"--scale-peak {scale_peak!r} must be positive")
    values = read_trace(path)
    span_s = len(values) * interval_s
    d = config.episode_s
    out = []
    for i, offset in enumerate((0.1 * span_s, 0.55 * span_s)):
        load = LoadSpec(
            kind="trace", path=str(path), interval_s=interval_s, peak_qps=peak, offset_s=offset, time_scale=time_scale
        )
        out.append(Scenario(name=f"trace-{i}", kind="bursty", duration_s=d, load=load))
    faults = [
        _f(FaultKind.POD_KILL, 0.2 * d, 30, restart_delay_s=30.0),
        _f(FaultKind.CPU_STRESS, 0.5 * d, 600, workers=1, load_percent=70),
        _f(FaultKind.NETWORK_DELAY, 0.8 * d, 300, latency_ms=2.0, jitter_ms=1.0),
    ]
    load = LoadSpec(kind="trace", path=str(path), interval_s=interval_s, peak_qps=peak, offset_s=0.3 * span_s,
                    time_scale=time_scale)  # fmt: skip
    out.append(Scenario(name="trace-faults", kind="fault", duration_s=d, load=load, faults=faults))
    return out
