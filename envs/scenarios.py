"""Random scenarios for domain randomisation: load shape, size and fault schedule."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from chaos.spec import FAULT_PARAMS, NASA_TRACE, FaultKind, FaultSpec, LoadSpec, Scenario, ScenarioKind, builtin_trace
from envs.profile import ServiceProfile

TRACE_NAME = NASA_TRACE
#: Training replays only the first 31 days (July 1995) of the NASA trace; August is held out.
TRAIN_TRACE_MINUTES = 31 * 24 * 60 - 12 * 60
LOAD_KINDS: tuple[str, ...] = ("constant", "diurnal", "ramp", "step", "flash", "trace")


@lru_cache(maxsize=1)
def default_trace_path() -> Path:
    """The NASA trace shipped with rlctl (``chaos/traces``); a clear error if the file is absent.

    Looked up once per process: every random scenario asks, and resolving paths is slow.
    """
    return builtin_trace(TRACE_NAME)


def _fault_params(kind: FaultKind, rng: np.random.Generator) -> dict[str, float | int | str]:
    if kind is FaultKind.NETWORK_DELAY:
        return {"latency_ms": float(rng.uniform(1, 30)), "jitter_ms": float(rng.uniform(0, 5))}
    if kind is FaultKind.NETWORK_LOSS:
        return {"loss_percent": float(rng.uniform(0.1, 5))}
    if kind is FaultKind.NETWORK_PARTITION:
        return {"fraction": float(rng.uniform(0.05, 0.5))}
    if kind is FaultKind.NETWORK_BANDWIDTH:
        return {"rate_mbps": float(rng.uniform(10, 100))}
    if kind is FaultKind.CPU_STRESS:
        return {"workers": int(rng.integers(1, 3)), "load_percent": int(rng.integers(30, 100))}
    if kind is FaultKind.MEMORY_STRESS:
        return {"workers": int(rng.integers(1, 3)), "size_mib": int(rng.integers(64, 512))}
    if kind in (FaultKind.POD_KILL, FaultKind.CONTAINER_KILL):
        return {"restart_delay_s": float(rng.uniform(10, 60))}
    if kind is FaultKind.IO_LATENCY:
        return {"delay_ms": float(rng.uniform(1, 20))}
    if kind is FaultKind.FAN_FAILURE:
        return {"r_factor": float(rng.uniform(2, 4))}
    if kind is FaultKind.NUMA_MISPLACEMENT:
        return {"remote_fraction": float(rng.uniform(0.5, 1.0))}
    return {k: v for k, v in FAULT_PARAMS[kind].items() if isinstance(v, (int, float))}


def random_load(rng: np.random.Generator, capacity_qps: float, duration_s: float, max_replicas: int) -> LoadSpec:
    """A random load whose peak needs between 20% and 75% of the replica range."""
    peak = float(rng.uniform(0.2, 0.75) * max_replicas * capacity_qps)
    base = float(peak * rng.uniform(0.1, 0.5))
    trace = default_trace_path()
    kind = str(rng.choice(LOAD_KINDS))
    if kind == "constant":
        return LoadSpec(kind="constant", qps=float(rng.uniform(base, peak)))
    if kind == "diurnal":
        return LoadSpec(
            kind="diurnal", base_qps=base, peak_qps=peak, period_s=duration_s * rng.uniform(0.5, 2),
            phase_s=float(rng.uniform(0, duration_s)),
        )  # fmt: skip
    if kind == "ramp":
        a, b = (base, peak) if rng.random() < 0.7 else (peak, base)
        return LoadSpec(kind="ramp", start_qps=a, end_qps=b)
    if kind == "step":
        return LoadSpec(kind="step", base_qps=base, step_qps=peak, at_s=float(rng.uniform(0.1, 0.7) * duration_s))
    if kind == "flash":
        return LoadSpec(
            kind="flash", base_qps=base, peak_qps=peak, at_s=float(rng.uniform(0.1, 0.7) * duration_s),
            rise_s=float(rng.uniform(5, 60)), decay_s=float(rng.uniform(60, 900)),
        )  # fmt: skip
    return LoadSpec(
        kind="trace", path=str(trace), interval_s=60.0, peak_qps=peak,
        offset_s=float(rng.uniform(0, 60 * TRAIN_TRACE_MINUTES)), time_scale=float(rng.choice([1.0, 4.0, 12.0])),
    )  # fmt: skip


def random_faults(rng: np.random.Generator, duration_s: float, p_fault: float = 0.7) -> list[FaultSpec]:
    """Zero to three faults of any kind, at random times, sizes and durations."""
    if rng.random() > p_fault:
        return []
    kinds = list(FaultKind)
    out = []
    for _ in range(int(rng.integers(1, 4))):
        kind = kinds[int(rng.integers(len(kinds)))]
        start = float(rng.uniform(0.05, 0.85) * duration_s)
        dur = float(rng.uniform(30, 600))
        out.append(FaultSpec(kind=kind, start_s=start, duration_s=dur, params=_fault_params(kind, rng)))
    return out


def random_scenario(
    rng: np.random.Generator, profile: ServiceProfile, duration_s: float, max_replicas: int, capacity_qps: float
) -> Scenario:
    """A domain-randomised scenario: random load shape and size, random faults."""
    load = random_load(rng, capacity_qps, duration_s, max_replicas)
    faults = random_faults(rng, duration_s)
    kind: ScenarioKind = "fault" if faults else ("steady" if load.kind in ("constant", "diurnal") else "bursty")
    return Scenario(name="random", kind=kind, duration_s=duration_s, load=load, faults=faults)
