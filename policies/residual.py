"""A capacity rule, and the learned policy as a residual over it.

The rule (:class:`CapacityRule`, baseline ``capacity[-<headroom>]``) is what a platform team
writes once it has measured a replica: ``replicas = ceil(load x headroom / capacity)``, where
``capacity`` is the requests/s one replica serves within 90 % of the SLO (``rlctl probe`` on a
real replica, :func:`envs.sim.slo_capacity_qps` on a simulated one), scaled down only to the
highest count of the last ``stabilise_s`` (the HPA's 300 s window). It sees the newest
telemetry sample's offered load and nothing else: no faults, no future.

The residual policy (:class:`policies.ppo.ModelController` with a ``rule``, trained with
``residual: true``) keeps the
contract's action space but reads its replica dimension as an *offset* from the rule's count
(-2..+2) instead of a step from the current count; the runtime knobs (GOMAXPROCS, GOGC,
GOMEMLIMIT, pools, prefetch, turbo) move by the policy's steps as before. The rule carries the
load-following; the policy learns what the rule cannot see (faults, knob effects, a capacity
measured a little wrong). Training applies the same mapping inside the environment
(:class:`ResidualActions`), so what is trained is what ships, under one name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policies.base import Controller, FloatArray
from rlctl.contract import COL, KNOB_COL, NOOP_ACTION, KnobBounds, Knobs, apply_array, clamp_array
from rlctl.errors import ConfigError

_R = KNOB_COL["replicas"]
_LOAD = COL["offered_qps"]


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """The capacity rule's parameters (see the module docstring)."""

    headroom: float = 1.0
    stabilise_s: float = 300.0

    def __post_init__(self) -> None:
        if not (1.0 <= self.headroom <= 4.0) or not (0.0 <= self.stabilise_s <= 3600.0):
            raise ConfigError(
                f"capacity rule: headroom must be in [1, 4] and stabilise_s in [0, 3600]; got {self.headroom}, "
                f"{self.stabilise_s}"
            )


class RuleState:
    """Per-service state of the capacity rule: each service's capacity and its recent needs."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.capacity = np.zeros(0)
        self._needs = np.zeros((0, 1))
        self._pos = 0

    def reset(self, n: int, interval_s: float) -> None:
        span = rule_span(self.config, interval_s)
        self.capacity = np.full(n, np.nan)
        self._needs = np.zeros((n, span))
        self._pos = 0

    def set_capacity(self, capacity: npt.ArrayLike, rows: npt.ArrayLike | None = None) -> None:
        """Per-replica capacity (req/s) of every service, or of ``rows``; forgets their needs."""
        cap = np.asarray(capacity, dtype=np.float64)
        if not np.all(np.isfinite(cap) & (cap > 0)):
            raise ConfigError(f"capacity rule: capacities must be finite and > 0 req/s, got {cap.tolist()[:8]}")
        idx = np.arange(len(self.capacity)) if rows is None else np.atleast_1d(np.asarray(rows, dtype=np.int64))
        self.capacity[idx] = cap
        self._needs[idx] = 0.0

    def replicas(self, windows: FloatArray, bounds: KnobBounds) -> FloatArray:
        """The rule's replicas for the newest sample of each ``(N, W, F)`` window (advances the state)."""
        if np.isnan(self.capacity).any():
            raise ConfigError("capacity rule: no capacity set for some services (set_capacity before deciding)")
        load = np.nan_to_num(windows[:, -1, _LOAD], nan=0.0)
        need = np.ceil(load * self.config.headroom / self.capacity - 1e-9)
        self._needs[:, self._pos] = need
        self._pos = (self._pos + 1) % self._needs.shape[1]
        return np.clip(self._needs.max(axis=1), bounds.min_replicas, bounds.max_replicas)


def rule_span(config: RuleConfig, interval_s: float) -> int:
    """Samples the rule looks back over (its stabilisation window, at least one)."""
    return max(round(config.stabilise_s / interval_s), 1)


def window_replicas(
    windows: FloatArray, capacity: npt.ArrayLike, config: RuleConfig, interval_s: float, bounds: KnobBounds
) -> FloatArray:
    """The rule's replicas computed from the windows alone (the production path, which keeps no
    state per service): the highest offered load of the last :func:`rule_span` samples. Equal
    to :class:`RuleState`'s answer when each window holds at least that many samples, because the
    rule's count only grows with the load."""
    cap = np.asarray(capacity, dtype=np.float64)
    load = np.nan_to_num(windows[:, -rule_span(config, interval_s) :, _LOAD], nan=0.0).max(axis=1)
    need = np.ceil(load * config.headroom / cap - 1e-9)
    return np.clip(need, bounds.min_replicas, bounds.max_replicas)


class CapacityRule(Controller):
    """The capacity rule as a controller: replicas from the rule; the runtime knobs left as they are,
    or set once to ``runtime`` (its capacity is then measured at those knobs)."""

    #: ``policies.evaluate`` measures each simulated service's capacity for it before a rollout.
    needs_capacity = True

    def __init__(self, config: RuleConfig | None = None, name: str | None = None, runtime: Knobs | None = None) -> None:
        self.config = config or RuleConfig()
        self.rule = RuleState(self.config)
        self.runtime = runtime
        h = self.config.headroom
        self.name = name or ("capacity" if h == 1.0 else f"capacity-{h:g}")

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self.rule.reset(n, interval_s)

    def set_capacity(self, capacity: npt.ArrayLike) -> None:
        self.rule.set_capacity(capacity)

    def runtime_knobs(self, knobs: FloatArray) -> FloatArray:
        """``knobs`` with the runtime knobs set to ``runtime`` (if given), clamped to the bounds."""
        out = np.array(knobs, dtype=np.float64)
        if self.runtime is not None:
            replicas = out[:, _R].copy()
            out[:] = self.runtime.to_array()
            out[:, _R] = replicas
        return clamp_array(out, self.bounds)

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = self.runtime_knobs(knobs)
        out[:, _R] = self.rule.replicas(windows, self.bounds)
        return clamp_array(out, self.bounds)


def residual_target(
    rule_replicas: FloatArray, knobs: FloatArray, actions: npt.NDArray[np.int64], bounds: KnobBounds
) -> FloatArray:
    """Knobs for the residual reading of ``actions``: replicas = the rule's + offset, the rest stepped."""
    stepped = np.array(actions, dtype=np.int64)
    offset = stepped[:, 0] - NOOP_ACTION[0]
    stepped[:, 0] = NOOP_ACTION[0]
    out = apply_array(knobs, stepped, bounds)
    if "replicas" in bounds.allow:
        out[:, _R] = np.clip(rule_replicas + offset, bounds.min_replicas, bounds.max_replicas)
    return out
