"""One simulation step of N Go services at once: the physics wired together.

Pure numpy over ``(N,)`` arrays. The single environment calls this with N = 1 and the
batched environment with N = batch size, so both run the same physics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.model import clip, cpu, gc, queueing
from envs.model.faults import E
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY

Array = npt.NDArray[np.float64]

#: Packets per request exchange, for the chance that a loss hits a request.
PACKETS_PER_REQUEST = 4.0
#: Linux minimum retransmission timeout (``TCP_RTO_MIN``), ms.
RTO_MIN_MS = 200.0
_Z99 = 2.326


@dataclass(slots=True)
class ServiceState:
    """What carries over between steps, one entry per service."""

    temp_c: Array
    backlog: Array
    gc_cycles_per_s: Array

    @classmethod
    def initial(cls, prof: dict[str, Array]) -> ServiceState:
        n = prof["s_cpu_ms"].shape[0]
        return cls(temp_c=prof["t_amb_c"] + 20.0, backlog=np.zeros(n), gc_cycles_per_s=np.ones(n))


@dataclass(slots=True)
class StepOutput:
    """Telemetry rows plus figures the environment needs and the telemetry does not carry."""

    telemetry: Array
    cores_used: Array
    capacity_qps: Array


def step_services(
    prof: dict[str, Array],
    knobs: Array,
    serving: Array,
    offered_qps: Array,
    eff: Array,
    state: ServiceState,
    t_s: float,
    dt_s: float,
) -> StepOutput:
    """Advance N services by ``dt_s`` seconds; mutates ``state`` and returns telemetry.

    ``knobs`` is ``(N, 8)`` in contract order, ``serving`` the replicas that serve this
    step, ``offered_qps`` the offered load, ``eff`` the ``(N, len(EFFECTS))`` fault
    effects of this step.
    """
    gomaxprocs = knobs[:, KNOB_COL["gomaxprocs"]]
    gogc = knobs[:, KNOB_COL["gogc"]]
    memlimit = knobs[:, KNOB_COL["gomemlimit_mib"]] * 2.0**20
    pool = knobs[:, KNOB_COL["object_pool_size"]]
    conn = knobs[:, KNOB_COL["conn_pool_size"]]
    prefetch = knobs[:, KNOB_COL["prefetch"]]
    turbo = knobs[:, KNOB_COL["turbo"]]
    quota = prof["cpu_quota_cores"]

    up = serving >= 1
    r = np.maximum(serving, 1.0)
    lam_ok = offered_qps * (1.0 - eff[:, E["partition_frac"]])
    lam = lam_ok / r

    # Cores and clock.
    c = cpu.usable_cores(gomaxprocs, quota, prof["cores_free"], eff[:, E["cpu_stress_cores"]], prof["sched_overhead"])
    freq = cpu.core_frequency_ghz(
        turbo, state.temp_c, prof["t_trip_c"], prof["f_base_ghz"], prof["f_turbo_ghz"], prof["f_throttle_ghz"]
    )
    speed = freq / prof["f_base_ghz"]
    numa = eff[:, E["numa_remote_fraction"]]
    numa = np.where(np.isnan(numa), prof["numa_remote_fraction"], numa)
    mem_factor = (
        (1.0 + numa * (prof["numa_ratio"] - 1.0))
        * (1.0 + prof["prefetch_penalty"] * (1.0 - prefetch))
        * (1.0 + 0.3 * eff[:, E["mem_stress_workers"]])
    )
    s_work = (prof["s_cpu_ms"] / speed + prof["s_mem_ms"] * mem_factor) / 1000.0

    # GC and sync.Pool: a short fixed-point iteration (allocation <-> GC frequency).
    inflight = lam * s_work * 2.0
    f_gc = state.gc_cycles_per_s
    for _ in range(2):
        hit = gc.pool_hit_rate(pool, inflight, lam, f_gc)
        live = prof["live_heap_bytes"] + 0.5 * np.minimum(pool, 4 * inflight + 16) * prof["object_bytes"]
        live = live + inflight * prof["alloc_bytes_per_req"]
        alloc = lam * prof["alloc_bytes_per_req"] * (1.0 - prof["pooled_fraction"] * hit)
        goal, limited = gc.heap_goal_bytes(live, prof["roots_bytes"], gogc, memlimit)
        f_gc = gc.gc_cycles_per_s(alloc, goal, live)
    state.gc_cycles_per_s = f_gc
    gc_cores = gc.gc_cpu_cores(
        f_gc, live, prof["roots_bytes"], prof["gc_fixed_cpu_s"], prof["gc_cpu_s_per_byte"], speed
    )
    gc_frac = gc.gc_cpu_fraction(gc_cores, c, limited)
    gc_duty = np.minimum(1.0, gc_frac / gc.GC_BACKGROUND_UTILIZATION)

    # Capacity of one replica: CPU (USL), the mutex, bandwidth, the connection pool.
    c_work = np.maximum(c * (1.0 - gc_frac) / (1.0 + prof["usl_sigma"] * np.maximum(c - 1.0, 0.0)), 0.05)
    mu = 1.0 / s_work
    cap = c_work * mu
    mutex_s = prof["mutex_ms"] / 1000.0
    cap = np.minimum(cap, 1.0 / np.maximum(mutex_s, 1e-12))
    cap = np.minimum(cap, eff[:, E["bandwidth_mbps"]] * 1e6 / 8.0 / prof["response_bytes"])
    ds_frac = prof["downstream_fraction"]
    t_ds = (prof["downstream_ms"] + 2.0 * eff[:, E["delay_ms"]]) / 1000.0
    has_ds = ds_frac > 0
    cap = np.minimum(cap, conn / np.maximum(t_ds * ds_frac, 1e-12))

    # Backlog past saturation (fluid model), bounded by the client timeout.
    timeout_s = prof["timeout_ms"] / 1000.0
    backlog = state.backlog + (lam - cap) * dt_s
    max_backlog = cap * timeout_s
    dropped = np.maximum(backlog - max_backlog, 0.0) / dt_s
    backlog = clip(backlog, 0.0, max_backlog)
    state.backlog = backlog
    served_i = np.minimum(lam, cap)
    backlog_wait_ms = 1000.0 * backlog / np.maximum(cap, 1e-9)

    # Steady-state queueing below saturation (evaluated just under capacity past it).
    # A CFS quota under one core does not slow a request: its thread runs at full speed
    # until the period's quota is spent (the throttling term below). So where the quota,
    # not GOMAXPROCS or the free cores, binds below one core, the queue sees one
    # full-speed server and the quota only caps the throughput (``cap``). Without this
    # the simulator stretched every request 4x at a 0.25-core quota and put a 0.25-core
    # test-bed replica's P99 at 7.5 ms at 40 QPS where it measured 3.8 ms.
    head = np.minimum(np.minimum(gomaxprocs, prof["cores_free"]), 1.0) - eff[:, E["cpu_stress_cores"]]
    quota_bound = (quota < np.minimum(gomaxprocs, prof["cores_free"])) & (c_work < 1.0)
    servers = np.where(quota_bound, np.maximum(c_work, head * (1.0 - gc_frac)), c_work)
    lam_q = np.minimum(lam, 0.98 * cap)
    a = lam_q / mu
    variability = (prof["ca2"] + prof["cs2"]) / 2.0
    pw = queueing.erlang_c(servers, a)
    w99 = np.minimum(queueing.wait_quantile_s(pw, servers, mu, lam_q, 0.99, variability), timeout_s)
    w50 = np.minimum(queueing.wait_quantile_s(pw, servers, mu, lam_q, 0.50, variability), timeout_s)
    rho_m = lam_q * mutex_s
    mutex_slack = np.maximum(1.0 / np.maximum(mutex_s, 1e-12) - lam_q, 1e-9)
    wm99 = np.minimum(np.log(np.maximum(rho_m, 0.01) / 0.01) / mutex_slack, timeout_s)
    lam_ds = lam_q * ds_frac
    pw_ds = queueing.erlang_c(conn, lam_ds * t_ds)
    wds99 = queueing.wait_quantile_s(pw_ds * ds_frac, conn, 1.0 / np.maximum(t_ds, 1e-9), lam_ds, 0.99)
    wds99 = np.minimum(wds99, timeout_s) * has_ds

    # CPU use, CFS throttling, heat.
    busy = served_i * s_work + gc_cores
    used = np.minimum(busy, np.minimum(gomaxprocs, quota))
    util = used / quota
    theta = cpu.cfs_throttled_fraction(
        gomaxprocs, quota, util, gc_duty, service_s=s_work, cs2=prof["cs2"], period_s=prof["cfs_period_ms"] / 1000.0
    )
    stall = cpu.throttle_stall_ms(gomaxprocs, quota, prof["cfs_period_ms"])
    power = cpu.package_power_w(util, freq, prof["f_base_ghz"], prof["p_idle_w"], prof["p_dyn_w"])
    r_th = prof["thermal_r_c_per_w"] * eff[:, E["fan_r_factor"]]
    state.temp_c = cpu.thermal_step_c(state.temp_c, power, prof["t_amb_c"], r_th, prof["thermal_tau_s"], dt_s)

    # Latency seen by the client.
    rtt = prof["rtt_ms"] + eff[:, E["delay_ms"]]
    rtt_sd = prof["rtt_std_ms"] + eff[:, E["jitter_ms"]]
    loss_req = 1.0 - (1.0 - eff[:, E["loss_frac"]]) ** PACKETS_PER_REQUEST
    io_ms = eff[:, E["io_delay_ms"]]
    io_hit99 = clip(prof["io_ops_per_req"] / 0.01, 0.0, 1.0)
    ds_ms = t_ds * 1000.0 * (ds_frac >= 0.01)
    p99 = (
        1000.0 * queueing.service_quantile(s_work, prof["cs2"], 0.99)
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
        1000.0 * queueing.service_quantile(s_work, prof["cs2"], 0.50)
        + 1000.0 * w50
        + backlog_wait_ms
        + rtt
        + ds_ms * (ds_frac >= 0.5)
        + io_ms * (prof["io_ops_per_req"] >= 0.5)
        + RTO_MIN_MS * (loss_req >= 0.5)
    )
    timeout_ms = prof["timeout_ms"]
    down = ~up
    p99 = np.minimum(p99 + down * timeout_ms, timeout_ms)
    p50 = np.minimum(p50 + down * timeout_ms, timeout_ms)

    served = served_i * r * up
    # A growing backlog is not yet an error: only drops, partitions and outages are.
    err_rate = np.minimum((offered_qps - lam_ok + dropped * r) / np.maximum(offered_qps, 1e-9) + down, 1.0)
    err_rate = np.maximum(err_rate * (offered_qps > 0), 0.0)
    mean_latency_s = (p50 + 0.3 * (p99 - p50)) / 1000.0
    goroutines = r * (prof["base_goroutines"] + lam * mean_latency_s + backlog)

    n = offered_qps.shape[0]
    out = np.empty((n, N_TELEMETRY))
    out[:, COL["timestamp_s"]] = t_s + dt_s
    out[:, COL["interval_s"]] = dt_s
    out[:, COL["offered_qps"]] = offered_qps
    out[:, COL["served_qps"]] = served
    out[:, COL["p50_ms"]] = p50
    out[:, COL["p99_ms"]] = p99
    out[:, COL["error_rate"]] = err_rate
    out[:, COL["goroutines"]] = goroutines
    out[:, COL["gc_cycles_per_s"]] = f_gc * r
    out[:, COL["gc_cpu_fraction"]] = gc_frac
    out[:, COL["alloc_bytes_per_s"]] = alloc * r
    out[:, COL["heap_bytes"]] = goal * r
    out[:, COL["cpu_util"]] = util
    out[:, COL["cfs_throttled_fraction"]] = theta
    out[:, COL["replicas"]] = knobs[:, KNOB_COL["replicas"]]
    out[:, COL["gomaxprocs"]] = gomaxprocs
    out[:, COL["gogc"]] = gogc
    out[:, COL["gomemlimit_bytes"]] = memlimit
    out[:, COL["object_pool_size"]] = pool
    out[:, COL["conn_pool_size"]] = conn
    out[:, COL["prefetch_on"]] = prefetch
    out[:, COL["turbo_on"]] = turbo
    out[:, COL["rtt_mean_ms"]] = rtt
    out[:, COL["rtt_std_ms"]] = rtt_sd
    out[:, COL["cpu_temp_c"]] = state.temp_c
    out[:, COL["cpu_freq_ghz"]] = freq
    out[:, COL["numa_remote_fraction"]] = numa
    return StepOutput(telemetry=out, cores_used=used * r * up, capacity_qps=cap * r)
