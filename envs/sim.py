"""The batched simulator core: N services stepped in one numpy call.

:class:`ServiceBatch` owns the per-service state (knobs, replicas starting, the fault
and load schedules of the current episode, the telemetry window) and turns actions
into telemetry, rewards and cost figures. :class:`envs.GoServiceVecEnv` exposes it as a
Stable-Baselines3 ``VecEnv``; :class:`envs.GoServiceEnv` steps one service through
:class:`envs.single.SingleService`, the same functions on floats, which
``tests/test_rlctl/test_xp.py`` pins to a batch of one, step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from chaos.spec import Scenario
from envs.loads import load_qps
from envs.model.faults import EFFECTS, E, effects_table
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile, stack_profiles
from rlctl.contract import (
    COL,
    DEFAULT_SLO_P99_MS,
    DEFAULT_WINDOW,
    KNOB_COL,
    N_TELEMETRY,
    KnobBounds,
    Knobs,
    apply_array,
    clamp_array,
    featurize,
)
from rlctl.errors import ConfigError
from rlctl.xp import NUMPY, Namespace

Array = npt.NDArray[np.float64]

#: Slots of the starting-replica ring (a replica start or pod restart is at most this many steps away).
PENDING_SLOTS = 32


@dataclass(frozen=True, slots=True)
class RewardWeights:
    """Reward = -(slo * violation + replica * replicas + core * cores used + churn * knob moves).

    Per 5-second step. The violation term is 1 when P99 is over the SLO, plus half the
    log of how far over (so a 10x miss hurts more than a 1.1x miss), plus ``error`` times
    the error rate. With these defaults one step over the SLO costs as much as about 20
    replicas for one step: the policy pays for headroom only where it prevents misses.
    """

    slo: float = 1.0
    error: float = 5.0
    replica: float = 0.05
    core: float = 0.01
    churn: float = 0.01


@dataclass(frozen=True, slots=True)
class EnvConfig:
    """How an environment runs: timing, SLO, reward, bounds, initial knobs."""

    #: Seconds of service time per step.
    dt_s: float = 5.0
    #: Episode length in seconds of service time (720 steps by default).
    episode_s: float = 3600.0
    #: P99 objective, ms.
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    #: Telemetry samples the policy sees (``featurize`` window).
    window: int = DEFAULT_WINDOW
    reward: RewardWeights = field(default_factory=RewardWeights)
    bounds: KnobBounds = field(default_factory=KnobBounds)
    #: Knobs at the start of an episode.
    initial_knobs: Knobs = field(default_factory=Knobs)
    #: Domain randomisation of the service profile, 0 (none) to 1 (full ranges).
    randomize_profile: float = 0.0

    def __post_init__(self) -> None:
        if self.dt_s <= 0 or self.episode_s < self.dt_s:
            raise ConfigError(f"dt_s={self.dt_s} must be > 0 and episode_s={self.episode_s} at least one step")
        if self.window < 1:
            raise ConfigError(f"window={self.window} must be at least 1 sample")

    @property
    def n_steps(self) -> int:
        return round(self.episode_s / self.dt_s)


def step_reward(
    p99_ms: Any,
    error_rate: Any,
    replicas: Any,
    cores_used: Any,
    knob_changes: Any,
    config: EnvConfig,
    xp: Namespace = NUMPY,
) -> Any:
    """The reward of one step (see :class:`RewardWeights`), over ``(N,)`` arrays or floats (``xp``)."""
    w = config.reward
    slo = config.slo_p99_ms
    violated = p99_ms > slo
    over = xp.log(xp.maximum(p99_ms, 1e-6) / slo)
    slo_term = violated + 0.5 * xp.clip(over, 0.0, 3.0) * violated + w.error * error_rate
    return -(w.slo * slo_term + w.replica * replicas + w.core * cores_used + w.churn * knob_changes)


def step_cost(replicas: Any, cores_used: Any, config: EnvConfig) -> Any:
    """A step's cost figure: replicas and cores used at the reward's weights (arrays or floats)."""
    w = config.reward
    return w.replica * replicas + w.core * cores_used


def nominal_capacity_qps(profile: ServiceProfile, gomaxprocs: float | None = None) -> float:
    """Rough requests/s one replica serves near its knee (for scaling loads)."""
    cores = min(profile.cpu_quota_cores, gomaxprocs or profile.cpu_quota_cores)
    s_ms = profile.s_cpu_ms + profile.s_mem_ms * (1 + profile.numa_remote_fraction * (profile.numa_ratio - 1))
    cap = cores / (s_ms / 1000.0) / (1 + profile.usl_sigma * max(cores - 1, 0))
    if profile.mutex_ms > 0:
        cap = min(cap, 1000.0 / profile.mutex_ms)
    return 0.8 * cap


class ServiceBatch:
    """N simulated services, each running its own scenario, stepped together."""

    def __init__(self, n: int, config: EnvConfig) -> None:
        if n < 1:
            raise ConfigError(f"a batch needs at least one service, got n={n}")
        self.n = n
        self.config = config
        self.t_step = np.zeros(n, dtype=np.int64)
        self.knobs = np.tile(clamp_array(config.initial_knobs.to_array(), config.bounds), (n, 1))
        self.ready = self.knobs[:, KNOB_COL["replicas"]].copy()
        self._profiles: list[ServiceProfile] = [ServiceProfile()] * n
        self._rows = np.arange(n)
        self._pending_len = PENDING_SLOTS
        self._set_profiles()
        self.state = ServiceState.initial(self.prof)
        t = config.n_steps
        self.offered = np.zeros((n, t + 1))
        self.effects = np.zeros((n, t + 1, len(EFFECTS)))
        self.pending = np.zeros((n, self._pending_len))
        # The telemetry window is a ring stored twice over (each sample at slot p and p + W),
        # so the last W samples in order are always the contiguous slice [p + 1, p + 1 + W):
        # a step writes two rows instead of shifting the whole window.
        self._wbuf = np.zeros((n, 2 * config.window, N_TELEMETRY))
        self._wpos = config.window - 1
        self.last = np.zeros((n, N_TELEMETRY))
        self.last_cores = np.zeros(n)

    # -------------------------------------------------------------- episode set-up
    def reset_rows(
        self,
        rows: npt.ArrayLike,
        scenarios: list[Scenario],
        profiles: list[ServiceProfile],
        rngs: list[np.random.Generator],
    ) -> None:
        """Start new episodes on ``rows`` with the given scenarios and profiles."""
        idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        cfg = self.config
        t = cfg.n_steps + 1
        for j, i in enumerate(idx):
            self._profiles[i] = profiles[j]
            self.offered[i] = load_qps(scenarios[j].load, t, cfg.dt_s, rngs[j])
            self.effects[i] = effects_table(scenarios[j].windows(), t, cfg.dt_s)
        self._set_profiles()
        init = clamp_array(cfg.initial_knobs.to_array(), cfg.bounds)
        self.knobs[idx] = init
        self.ready[idx] = init[KNOB_COL["replicas"]]
        self.pending[idx] = 0.0
        self.t_step[idx] = 0
        fresh = ServiceState.initial(self.prof)
        self.state.temp_c[idx] = fresh.temp_c[idx]
        self.state.backlog[idx] = 0.0
        self.state.gc_cycles_per_s[idx] = 1.0
        # Fill the window with one no-change step so the first observation is real. The
        # physics call advances every row's state: keep the other rows' as they were.
        keep = np.ones(self.n, dtype=bool)
        keep[idx] = False
        saved = (self.state.temp_c.copy(), self.state.backlog.copy(), self.state.gc_cycles_per_s.copy(),
                 self.last_cores.copy())  # fmt: skip
        tel = self._physics()
        if keep.any():
            self.state.temp_c[keep] = saved[0][keep]
            self.state.backlog[keep] = saved[1][keep]
            self.state.gc_cycles_per_s[keep] = saved[2][keep]
            self.last_cores[keep] = saved[3][keep]
        self._wbuf[idx] = tel[idx][:, None, :]
        self.last[idx] = tel[idx]

    def _set_profiles(self) -> None:
        self.prof = stack_profiles(self._profiles)
        # Steps until a new replica serves, per service (constant within an episode).
        start = np.ceil(self.prof["replica_start_s"] / self.config.dt_s)
        self._start_delay = np.clip(start, 1, self._pending_len - 1).astype(np.int64)

    # --------------------------------------------------------------------- physics
    def _physics(self, eff: Array | None = None) -> Array:
        """Telemetry of this step; ``eff`` is this step's fault effects when the caller has them."""
        cfg = self.config
        k = np.minimum(self.t_step, cfg.n_steps)
        if eff is None:
            eff = self.effects[self._rows, k]
        serving = np.maximum(self.ready - eff[:, E["pods_failed"]], 0.0)
        out = step_services(self.prof, self.knobs, serving, self.offered[self._rows, k], eff, self.state, 0.0, cfg.dt_s)
        out.telemetry[:, COL["timestamp_s"]] = (k + 1) * cfg.dt_s
        self.last_cores = out.cores_used
        return out.telemetry

    def _replica_dynamics(self, eff: Array) -> None:
        """New replicas start after a delay; killed pods restart after theirs."""
        cfg = self.config
        rows = self._rows
        slot = self.t_step % self._pending_len
        self.ready += self.pending[rows, slot]
        self.pending[rows, slot] = 0.0
        desired = self.knobs[:, KNOB_COL["replicas"]]
        # Scale-down acts at once: cancel starting replicas first (newest first), then stop ready ones.
        queued_total = self.pending.sum(axis=1)
        excess = self.ready + queued_total - desired
        over = excess > 0
        if over.any():
            # Only rows over their target with replicas still starting have any to cancel.
            cancel = np.flatnonzero(over & (queued_total > 0))
            if cancel.size:
                self._cancel_starting(cancel, slot[cancel], excess)
            self.ready -= np.maximum(excess, 0.0)
        # Scale-up: the new replicas serve after replica_start_s.
        missing = desired - self.ready - self.pending.sum(axis=1)
        due = (self.t_step + self._start_delay) % self._pending_len
        self.pending[rows, due] += np.maximum(missing, 0.0)
        # Pod kills: the replica is gone until it restarts.
        kills = np.minimum(eff[:, E["pod_kill"]], self.ready)
        if np.any(kills > 0):
            restart = np.clip(np.ceil(eff[:, E["pod_kill_restart_s"]] / cfg.dt_s), 1, self._pending_len - 1)
            due_k = (self.t_step + restart.astype(np.int64)) % self._pending_len
            self.ready -= kills
            self.pending[rows, due_k] += kills

    def _cancel_starting(self, rows: npt.NDArray[np.int64], slot: npt.NDArray[np.int64], excess: Array) -> None:
        """Cancel up to ``excess`` starting replicas on ``rows``, newest first; lowers ``excess`` in place."""
        length = self._pending_len
        order = (slot[:, None] - np.arange(1, length)[None, :]) % length
        sub = self.pending[rows]
        queued = np.take_along_axis(sub, order, axis=1)
        before = np.cumsum(queued, axis=1) - queued
        take = np.clip(excess[rows][:, None] - before, 0.0, queued)
        np.put_along_axis(sub, order, queued - take, axis=1)
        self.pending[rows] = sub
        excess[rows] = excess[rows] - take.sum(axis=1)

    def step(self, actions: npt.ArrayLike) -> tuple[Array, Array, dict[str, Array]]:
        """Apply actions, advance one step; returns ``(telemetry, reward, figures)``."""
        # apply_array's result is inside the bounds already: no second clamp.
        return self._advance(apply_array(self.knobs, actions, self.config.bounds))

    def advance(self, target_knobs: npt.ArrayLike) -> tuple[Array, Array, dict[str, Array]]:
        """Set the knobs (clamped to the bounds) and advance one step."""
        return self._advance(clamp_array(target_knobs, self.config.bounds))

    def _advance(self, knobs: Array) -> tuple[Array, Array, dict[str, Array]]:
        cfg = self.config
        before = self.knobs
        self.knobs = knobs
        changes = (self.knobs != before).sum(axis=1).astype(np.float64)
        eff = self.effects[self._rows, np.minimum(self.t_step, cfg.n_steps)]
        self._replica_dynamics(eff)
        tel = self._physics(eff)
        self.t_step += 1
        self._wpos = p = (self._wpos + 1) % cfg.window
        self._wbuf[:, p] = tel
        self._wbuf[:, p + cfg.window] = tel
        self.last = tel
        p99 = tel[:, COL["p99_ms"]]
        violated = p99 > cfg.slo_p99_ms
        replicas = self.knobs[:, KNOB_COL["replicas"]]
        reward = step_reward(p99, tel[:, COL["error_rate"]], replicas, self.last_cores, changes, cfg)
        figures = {
            "p99_ms": p99,
            "slo_violated": violated.astype(np.float64),
            "replicas": replicas.copy(),
            "ready_replicas": self.ready.copy(),
            "cost": step_cost(replicas, self.last_cores, cfg),
            "replica_seconds": replicas * cfg.dt_s,
            "core_seconds": self.last_cores * cfg.dt_s,
            "knob_changes": changes,
            "faults_active": eff[:, E["faults_active"]].copy(),
            "offered_qps": tel[:, COL["offered_qps"]].copy(),
            "error_rate": tel[:, COL["error_rate"]].copy(),
        }
        return tel, reward.astype(np.float64), figures

    @property
    def window(self) -> Array:
        """``(N, window, F)`` telemetry, oldest sample first (a read-only view; it moves each step)."""
        p = self._wpos
        view = self._wbuf[:, p + 1 : p + 1 + self.config.window]
        view.flags.writeable = False
        return view

    def observe(self) -> npt.NDArray[np.float32]:
        """``featurize`` of each service's telemetry window: ``(N, N_FEATURES)``."""
        return featurize(self.window, slo_p99_ms=self.config.slo_p99_ms)

    def done(self) -> npt.NDArray[np.bool_]:
        return self.t_step >= self.config.n_steps


#: Per-replica loads (req/s) at which :func:`slo_capacity_qps` measures P99, log-spaced.
CAPACITY_GRID_QPS = np.geomspace(5.0, 20_000.0, 96)


def slo_capacity_qps(
    prof: dict[str, Array], knobs: npt.ArrayLike, slo_p99_ms: float, dt_s: float, fraction: float = 0.9
) -> Array:
    """Per-replica requests/s at which each service's P99 stays within ``fraction`` of the SLO.

    What ``rlctl probe`` measures on a real replica, here read off the model: one replica with
    each row's knobs, no faults, warm, at each load of :data:`CAPACITY_GRID_QPS`; the capacity
    is the highest load of the first run of loads that meet it (the first grid load if none
    does). ``prof`` holds one array per profile field, one entry per service (``stack_profiles``).
    """
    k = np.atleast_2d(np.asarray(knobs, dtype=np.float64))
    n, g = k.shape[0], CAPACITY_GRID_QPS.size
    p = {name: np.repeat(np.asarray(v, dtype=np.float64), g) for name, v in prof.items()}
    rows = np.repeat(k, g, axis=0)
    rows[:, KNOB_COL["replicas"]] = 1.0
    load = np.tile(CAPACITY_GRID_QPS, n)
    eff = np.repeat(effects_table([], 1, dt_s), n * g, axis=0)  # no fault
    state = ServiceState.initial(p)
    state.temp_c[:] = p["t_amb_c"] + 40.0
    out = None
    for _ in range(2):  # settle the GC fixed point and temperature, as the oracle's planner does
        out = step_services(p, rows, np.ones(n * g), load, eff, state, 0.0, dt_s)
        state.backlog[:] = 0.0
    assert out is not None
    ok = (out.telemetry[:, COL["p99_ms"]] <= slo_p99_ms * fraction).reshape(n, g)
    # The first run of loads that meet it: count the leading True values.
    lead = np.cumprod(ok, axis=1).sum(axis=1)
    return np.asarray(CAPACITY_GRID_QPS[np.maximum(lead - 1, 0)], dtype=np.float64)
