"""One simulation step of N Go services at once: the physics wired together.

Pure numpy over ``(N,)`` arrays for the batched environment; the single environment
runs the same expressions on Python floats through ``xp=SCALAR`` (see :mod:`rlctl.xp`),
so both run the same physics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.model import cpu, gc, queueing
from envs.model.faults import EFFECTS
from rlctl.contract import KNOB_FIELDS, N_TELEMETRY, TELEMETRY_FIELDS
from rlctl.xp import NUMPY, Namespace

Array = npt.NDArray[np.float64]
#: ``(N, ...)`` numpy arrays (``xp=NUMPY``) or one service's floats and sequences of floats (``xp=SCALAR``).
Values = Any

#: Packets per request exchange, for the chance that a loss hits a request.
PACKETS_PER_REQUEST = 4.0
#: Linux minimum retransmission timeout (``TCP_RTO_MIN``), ms.
RTO_MIN_MS = 200.0
_Z99 = 2.326
#: The telemetry columns :func:`step_services` writes, in the order it writes them.
_OUT_FIELDS = (
    "timestamp_s", "interval_s", "offered_qps", "served_qps", "p50_ms", "p99_ms", "error_rate", "goroutines",
    "gc_cycles_per_s", "gc_cpu_fraction", "alloc_bytes_per_s", "heap_bytes", "cpu_util", "cfs_throttled_fraction",
    "replicas", "gomaxprocs", "gogc", "gomemlimit_bytes", "object_pool_size", "conn_pool_size", "prefetch_on",
    "turbo_on", "rtt_mean_ms", "rtt_std_ms", "cpu_temp_c", "cpu_freq_ghz", "numa_remote_fraction",
)  # fmt: skip
if _OUT_FIELDS != TELEMETRY_FIELDS:  # a contract change must come here too
    raise ImportError(f"step_services writes {_OUT_FIELDS}, the contract has {TELEMETRY_FIELDS}")
# step_services unpacks knob rows and fault effects in these orders.
if KNOB_FIELDS != ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size",
                   "prefetch", "turbo") or EFFECTS != (
    "delay_ms", "jitter_ms", "loss_frac", "partition_frac", "bandwidth_mbps", "cpu_stress_cores",
    "mem_stress_workers", "pod_kill", "pod_kill_restart_s", "pods_failed", "io_delay_ms", "fan_r_factor",
    "numa_remote_fraction", "faults_active",
):  # fmt: skip
    raise ImportError("step_services' unpacking order no longer matches KNOB_FIELDS or EFFECTS")


@dataclass(slots=True)
class ServiceState:
    """What carries over between steps, one entry per service."""

    temp_c: Values
    backlog: Values
    gc_cycles_per_s: Values

    @classmethod
    def initial(cls, prof: dict[str, Array]) -> ServiceState:
        n = prof["s_cpu_ms"].shape[0]
        return cls(temp_c=prof["t_amb_c"] + 20.0, backlog=np.zeros(n), gc_cycles_per_s=np.ones(n))

    @classmethod
    def initial_scalar(cls, prof: Mapping[str, float]) -> ServiceState:
        """The state of one service as Python floats (for ``xp=SCALAR``)."""
        return cls(temp_c=prof["t_amb_c"] + 20.0, backlog=0.0, gc_cycles_per_s=1.0)


@dataclass(slots=True)
class StepOutput:
    """Telemetry rows plus figures the environment needs and the telemetry does not carry."""

    #: ``(N, N_TELEMETRY)`` rows, or one list of floats (``xp=SCALAR``).
    telemetry: Values
    cores_used: Values
    capacity_qps: Values


def step_services(
    prof: Mapping[str, Values],
    knobs: Values,
    serving: Values,
    offered_qps: Values,
    eff: Values,
    state: ServiceState,
    t_s: float,
    dt_s: float,
    *,
    xp: Namespace = NUMPY,
) -> StepOutput:
    """Advance N services by ``dt_s`` seconds; mutates ``state`` and returns telemetry.

    ``knobs`` is ``(N, 8)`` in contract order, ``serving`` the replicas that serve this
    step, ``offered_qps`` the offered load, ``eff`` the ``(N, len(EFFECTS))`` fault
    effects of this step. With ``xp=SCALAR`` every input is one service's: ``prof`` maps
    to floats, ``knobs`` and ``eff`` are sequences of floats, ``state`` holds floats,
    and the telemetry comes back as a list of :data:`N_TELEMETRY` floats.
    """
    mx, mn, clip = xp.maximum, xp.minimum, xp.clip
    # Columns in contract order (KNOB_FIELDS, EFFECTS; checked at import).
    replicas, gomaxprocs, gogc, memlimit_mib, pool, conn, prefetch, turbo = xp.columns(knobs)
    (delay, jitter, loss, partition, bandwidth_mbps, stress, mem_stress, _, _, _, io_ms, fan_r_factor, numa_eff,
     _) = xp.columns(eff)  # fmt: skip
    memlimit = memlimit_mib * 2.0**20
    quota = prof["cpu_quota_cores"]

    up = serving >= 1
    r = mx(serving, 1.0)
    lam_ok = offered_qps * (1.0 - partition)
    lam = lam_ok / r

    # Cores and clock.
    c = cpu.usable_cores(gomaxprocs, quota, prof["cores_free"], stress, prof["sched_overhead"], xp=xp)
    freq = cpu.core_frequency_ghz(
        turbo, state.temp_c, prof["t_trip_c"], prof["f_base_ghz"], prof["f_turbo_ghz"], prof["f_throttle_ghz"], xp=xp
    )
    speed = freq / prof["f_base_ghz"]
    numa = xp.where(xp.isnan(numa_eff), prof["numa_remote_fraction"], numa_eff)
    mem_factor = (
        (1.0 + numa * (prof["numa_ratio"] - 1.0))
        * (1.0 + prof["prefetch_penalty"] * (1.0 - prefetch))
        * (1.0 + 0.3 * mem_stress)
    )
    s_work = (prof["s_cpu_ms"] / speed + prof["s_mem_ms"] * mem_factor) / 1000.0

    # GC and sync.Pool: a short fixed-point iteration (allocation <-> GC frequency).
    inflight = lam * s_work * 2.0
    f_gc = state.gc_cycles_per_s
    for _ in range(2):
        hit = gc.pool_hit_rate(pool, inflight, lam, f_gc, xp=xp)
        live = prof["live_heap_bytes"] + 0.5 * mn(pool, 4 * inflight + 16) * prof["object_bytes"]
        live = live + inflight * prof["alloc_bytes_per_req"]
        alloc = lam * prof["alloc_bytes_per_req"] * (1.0 - prof["pooled_fraction"] * hit)
        goal, limited = gc.heap_goal_bytes(live, prof["roots_bytes"], gogc, memlimit, xp=xp)
        f_gc = gc.gc_cycles_per_s(alloc, goal, live, xp=xp)
    state.gc_cycles_per_s = f_gc
    gc_cores = gc.gc_cpu_cores(
        f_gc, live, prof["roots_bytes"], prof["gc_fixed_cpu_s"], prof["gc_cpu_s_per_byte"], speed, xp=xp
    )
    gc_frac = gc.gc_cpu_fraction(gc_cores, c, limited, xp=xp)
    gc_duty = mn(1.0, gc_frac / gc.GC_BACKGROUND_UTILIZATION)

    # Capacity of one replica: CPU (USL), the mutex, bandwidth, the connection pool.
    c_work = mx(c * (1.0 - gc_frac) / (1.0 + prof["usl_sigma"] * mx(c - 1.0, 0.0)), 0.05)
    mu = 1.0 / s_work
    cap = c_work * mu
    mutex_s = prof["mutex_ms"] / 1000.0
    cap = mn(cap, 1.0 / mx(mutex_s, 1e-12))
    cap = mn(cap, bandwidth_mbps * 1e6 / 8.0 / prof["response_bytes"])
    ds_frac = prof["downstream_fraction"]
    t_ds = (prof["downstream_ms"] + 2.0 * delay) / 1000.0
    has_ds = ds_frac > 0
    cap = mn(cap, conn / mx(t_ds * ds_frac, 1e-12))

    # Backlog past saturation (fluid model), bounded by the client timeout.
    timeout_s = prof["timeout_ms"] / 1000.0
    backlog = state.backlog + (lam - cap) * dt_s
    max_backlog = cap * timeout_s
    dropped = mx(backlog - max_backlog, 0.0) / dt_s
    backlog = clip(backlog, 0.0, max_backlog)
    state.backlog = backlog
    served_i = mn(lam, cap)
    backlog_wait_ms = 1000.0 * backlog / mx(cap, 1e-9)

    # Steady-state queueing below saturation (evaluated just under capacity past it).
    # A CFS quota under one core does not slow a request: its thread runs at full speed
    # until the period's quota is spent (the throttling term below). So where the quota,
    # not GOMAXPROCS or the free cores, binds below one core, the queue sees one
    # full-speed server and the quota only caps the throughput (``cap``). Without this
    # the simulator stretched every request 4x at a 0.25-core quota and put a 0.25-core
    # test-bed replica's P99 at 7.5 ms at 40 QPS where it measured 3.8 ms.
    head = mn(mn(gomaxprocs, prof["cores_free"]), 1.0) - stress
    quota_bound = (quota < mn(gomaxprocs, prof["cores_free"])) & (c_work < 1.0)
    servers = xp.where(quota_bound, mx(c_work, head * (1.0 - gc_frac)), c_work)
    lam_q = mn(lam, 0.98 * cap)
    a = lam_q / mu
    variability = (prof["ca2"] + prof["cs2"]) / 2.0
    pw = queueing.erlang_c(servers, a, xp=xp)
    w99 = mn(queueing.wait_quantile_s(pw, servers, mu, lam_q, 0.99, variability, xp=xp), timeout_s)
    w50 = mn(queueing.wait_quantile_s(pw, servers, mu, lam_q, 0.50, variability, xp=xp), timeout_s)
    rho_m = lam_q * mutex_s
    mutex_slack = mx(1.0 / mx(mutex_s, 1e-12) - lam_q, 1e-9)
    wm99 = mn(xp.log(mx(rho_m, 0.01) / 0.01) / mutex_slack, timeout_s)
    lam_ds = lam_q * ds_frac
    pw_ds = queueing.erlang_c(conn, lam_ds * t_ds, xp=xp)
    wds99 = queueing.wait_quantile_s(pw_ds * ds_frac, conn, 1.0 / mx(t_ds, 1e-9), lam_ds, 0.99, xp=xp)
    wds99 = mn(wds99, timeout_s) * has_ds

    # CPU use, CFS throttling, heat.
    busy = served_i * s_work + gc_cores
    used = mn(busy, mn(gomaxprocs, quota))
    util = used / quota
    theta = cpu.cfs_throttled_fraction(
        gomaxprocs,
        quota,
        util,
        gc_duty,
        service_s=s_work,
        cs2=prof["cs2"],
        period_s=prof["cfs_period_ms"] / 1000.0,
        xp=xp,
    )
    stall = cpu.throttle_stall_ms(gomaxprocs, quota, prof["cfs_period_ms"], xp=xp)
    power = cpu.package_power_w(util, freq, prof["f_base_ghz"], prof["p_idle_w"], prof["p_dyn_w"], xp=xp)
    r_th = prof["thermal_r_c_per_w"] * fan_r_factor
    state.temp_c = cpu.thermal_step_c(state.temp_c, power, prof["t_amb_c"], r_th, prof["thermal_tau_s"], dt_s, xp=xp)

    # Latency seen by the client.
    rtt = prof["rtt_ms"] + delay
    rtt_sd = prof["rtt_std_ms"] + jitter
    loss_req = 1.0 - (1.0 - loss) ** PACKETS_PER_REQUEST
    io_hit99 = clip(prof["io_ops_per_req"] / 0.01, 0.0, 1.0)
    ds_ms = t_ds * 1000.0 * (ds_frac >= 0.01)
    p99 = (
        1000.0 * queueing.service_quantile(s_work, prof["cs2"], 0.99, xp=xp)
        + 1000.0 * (w99 + wm99 + wds99)
        + backlog_wait_ms
        + rtt
        + _Z99 * rtt_sd
        + ds_ms
        + io_ms * io_hit99
        + prof["gc_assist_ms"] * gc_duty
        + stall * clip((theta - 0.01) / 0.04, 0.0, 1.0)
        + RTO_MIN_MS * clip((loss_req - 0.005) / 0.01, 0.0, 1.0)
    )
    p50 = (
        1000.0 * queueing.service_quantile(s_work, prof["cs2"], 0.50, xp=xp)
        + 1000.0 * w50
        + backlog_wait_ms
        + rtt
        + ds_ms * (ds_frac >= 0.5)
        + io_ms * (prof["io_ops_per_req"] >= 0.5)
        + RTO_MIN_MS * (loss_req >= 0.5)
    )
    timeout_ms = prof["timeout_ms"]
    down = xp.logical_not(up)
    p99 = mn(p99 + down * timeout_ms, timeout_ms)
    p50 = mn(p50 + down * timeout_ms, timeout_ms)

    served = served_i * r * up
    # A growing backlog is not yet an error: only drops, partitions and outages are.
    err_rate = mn((offered_qps - lam_ok + dropped * r) / mx(offered_qps, 1e-9) + down, 1.0)
    err_rate = mx(err_rate * (offered_qps > 0), 0.0)
    mean_latency_s = (p50 + 0.3 * (p99 - p50)) / 1000.0
    goroutines = r * (prof["base_goroutines"] + lam * mean_latency_s + backlog)

    # In TELEMETRY_FIELDS order (the names are in _OUT_FIELDS, checked at import).
    columns = (
        t_s + dt_s, dt_s, offered_qps, served, p50, p99, err_rate, goroutines, f_gc * r, gc_frac, alloc * r,
        goal * r, util, theta, replicas, gomaxprocs, gogc, memlimit, pool, conn, prefetch,
        turbo, rtt, rtt_sd, state.temp_c, freq, numa,
    )  # fmt: skip
    cores_used = used * r * up
    if xp.scalar:
        return StepOutput(telemetry=list(columns), cores_used=cores_used, capacity_qps=cap * r)
    out = np.empty((offered_qps.shape[0], N_TELEMETRY))
    for j, values in enumerate(columns):
        out[:, j] = values
    return StepOutput(telemetry=out, cores_used=cores_used, capacity_qps=cap * r)
