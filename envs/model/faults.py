"""Fault effects: a scenario's fault windows as per-step arrays the physics reads.

Each column of the effects table is one physical effect (see :data:`EFFECTS`); a fault
kind writes the columns it drives while its window is active:

- network delay adds to the RTT mean and its jitter to the RTT standard deviation;
- network loss makes a request see a retransmission timeout (Linux minimum RTO 200 ms)
  with the probability that one of its packets is lost;
- a partition fails the affected fraction of requests;
- a bandwidth limit caps each replica's throughput at ``rate / response size``;
- CPU stress takes cores (workers x load); memory stress slows memory-bound work;
- pod kill removes a replica at the window start until it restarts; pod failure (and
  container kill) takes a replica out of service for the window;
- IO latency adds ``io_ops_per_req x delay`` to each request;
- a failed fan multiplies the thermal resistance; NUMA misplacement sets the remote
  access fraction; time skew has no effect on the physics.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from chaos.spec import FaultKind, FaultWindow

EFFECTS: tuple[str, ...] = (
    "delay_ms",
    "jitter_ms",
    "loss_frac",
    "partition_frac",
    "bandwidth_mbps",
    "cpu_stress_cores",
    "mem_stress_workers",
    "pod_kill",
    "pod_kill_restart_s",
    "pods_failed",
    "io_delay_ms",
    "fan_r_factor",
    "numa_remote_fraction",
    "faults_active",
)
E: dict[str, int] = {name: i for i, name in enumerate(EFFECTS)}
_NEUTRAL = np.zeros(len(EFFECTS))
_NEUTRAL[E["bandwidth_mbps"]] = np.inf
_NEUTRAL[E["fan_r_factor"]] = 1.0
_NEUTRAL[E["numa_remote_fraction"]] = np.nan


def neutral_effects(n_steps: int) -> npt.NDArray[np.float64]:
    """An effects table with no fault active."""
    return np.tile(_NEUTRAL, (n_steps, 1))


def effects_table(windows: list[FaultWindow], n_steps: int, dt_s: float) -> npt.NDArray[np.float64]:
    """Per-step ``(n_steps, len(EFFECTS))`` table of the fault windows' effects."""
    table = neutral_effects(n_steps)
    for w in windows:
        a = int(np.floor(w.start_s / dt_s))
        b = max(int(np.ceil(w.end_s / dt_s)), a + 1)
        if a >= n_steps:
            continue
        sl = slice(a, min(b, n_steps))
        f = w.spec
        table[sl, E["faults_active"]] += 1
        kind = f.kind
        if kind is FaultKind.NETWORK_DELAY:
            table[sl, E["delay_ms"]] += f.param("latency_ms")
            table[sl, E["jitter_ms"]] += f.param("jitter_ms")
        elif kind is FaultKind.NETWORK_LOSS:
            table[sl, E["loss_frac"]] = np.maximum(table[sl, E["loss_frac"]], f.param("loss_percent") / 100.0)
        elif kind is FaultKind.NETWORK_PARTITION:
            table[sl, E["partition_frac"]] = np.maximum(table[sl, E["partition_frac"]], f.param("fraction"))
        elif kind is FaultKind.NETWORK_BANDWIDTH:
            table[sl, E["bandwidth_mbps"]] = np.minimum(table[sl, E["bandwidth_mbps"]], f.param("rate_mbps"))
        elif kind is FaultKind.CPU_STRESS:
            table[sl, E["cpu_stress_cores"]] += f.param("workers") * f.param("load_percent") / 100.0
        elif kind is FaultKind.MEMORY_STRESS:
            table[sl, E["mem_stress_workers"]] += f.param("workers") * f.param("size_mib") / 256.0
        elif kind in (FaultKind.POD_KILL, FaultKind.CONTAINER_KILL):
            table[a, E["pod_kill"]] += 1
            table[a, E["pod_kill_restart_s"]] = max(table[a, E["pod_kill_restart_s"]], f.param("restart_delay_s"))
        elif kind is FaultKind.POD_FAILURE:
            table[sl, E["pods_failed"]] += 1
        elif kind is FaultKind.IO_LATENCY:
            table[sl, E["io_delay_ms"]] += f.param("delay_ms") * f.param("percent") / 100.0
        elif kind is FaultKind.FAN_FAILURE:
            table[sl, E["fan_r_factor"]] *= f.param("r_factor")
        elif kind is FaultKind.NUMA_MISPLACEMENT:
            table[sl, E["numa_remote_fraction"]] = f.param("remote_fraction")
        # TIME_SKEW: clocks move, the service's physics does not.
    return table
