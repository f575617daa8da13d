"""The learned policy as a :class:`Controller`: featurize, predict, decode, apply.

Decoding. The policy's action dimensions are deltas (replicas -2..+2, one ladder rung
down/keep/up, toggles). A stochastic PPO policy expresses "add a replica every few
steps" as a 20% chance of +1 per step; its per-dimension mode (SB3's
``deterministic=True``) is then "keep" for ever, which is not what was trained. The
controller therefore decodes each delta dimension by its *expected* value with error
feedback (sigma-delta modulation): a per-service accumulator adds the expected delta
every step and emits the whole steps it holds. The output is deterministic and moves
the knobs at the same average rate as the trained stochastic policy. Toggles switch
when the policy's probability of toggling is over one half.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.artifact import Artifact, load_artifact
from policies.base import Controller, FloatArray
from policies.guard import GuardConfig, SLOGuard
from policies.residual import RuleConfig, RuleState, residual_target
from rlctl.contract import ACTION_NVEC, NOOP_ACTION, KnobBounds, apply_array, featurize
from rlctl.errors import ConfigError

_N_DELTA = 6  # replicas + five ladder/step knobs; the last two dimensions are toggles
_OFFSET = np.asarray(NOOP_ACTION[:_N_DELTA], dtype=np.float64)
_MAX = np.asarray(ACTION_NVEC[:_N_DELTA], dtype=np.float64) - 1 - _OFFSET


def action_probabilities(model: Any, obs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float64]]:
    """Per-dimension action probabilities, each ``(N, n_i)``."""
    import torch

    with torch.no_grad():
        dist = model.policy.get_distribution(torch.as_tensor(obs, device=model.policy.device))
        return [d.probs.cpu().numpy().astype(np.float64) for d in dist.distribution]


def decode(probs: list[npt.NDArray[np.float64]], acc: FloatArray) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Expected-delta decoding with error feedback; returns ``(actions, new accumulator)``."""
    n = probs[0].shape[0]
    expected = np.stack([p @ (np.arange(p.shape[1]) - _OFFSET[i]) for i, p in enumerate(probs[:_N_DELTA])], axis=1)
    acc = acc + expected
    step = np.clip(np.round(acc), -_OFFSET, _MAX)
    acc = np.clip(acc - step, -1.0, 1.0)
    actions = np.empty((n, len(ACTION_NVEC)), dtype=np.int64)
    actions[:, :_N_DELTA] = (step + _OFFSET).astype(np.int64)
    for j, p in enumerate(probs[_N_DELTA:], start=_N_DELTA):
        actions[:, j] = (p[:, 1] > 0.5).astype(np.int64)
    return actions, acc


class ModelController(Controller):
    """An SB3 model as a controller, decoded by expected deltas (see the module docstring).

    With a ``rule`` it is a residual policy (:mod:`policies.residual`): the replica dimension is
    an offset from the capacity rule's count, decoded as the rounded expected offset (a level,
    not a step: error feedback would dither it), and each service's capacity must be set
    (:meth:`set_capacity`) before it decides.
    """

    def __init__(self, model: Any, slo_p99_ms: float, name: str = "ppo", rule: RuleConfig | None = None) -> None:
        self.model = model
        self.rule = RuleState(rule) if rule is not None else None
        #: ``policies.evaluate`` measures each simulated service's capacity for a residual policy.
        self.needs_capacity = rule is not None
        self.slo_p99_ms = slo_p99_ms
        self.name = name
        self._acc = np.zeros((0, _N_DELTA))
        #: The per-dimension action probabilities of the last :meth:`actions` call.
        self.last_probs: list[npt.NDArray[np.float64]] = []

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self._acc = np.zeros((n, _N_DELTA))
        if self.rule is not None:
            self.rule.reset(n, interval_s)

    def set_capacity(self, capacity: npt.ArrayLike) -> None:
        """Each service's per-replica capacity (req/s within 90 % of the SLO) for the rule."""
        if self.rule is None:
            raise ConfigError(f"{self.name} is not a residual policy; it takes no capacity")
        self.rule.set_capacity(capacity)

    def actions(self, windows: FloatArray) -> npt.NDArray[np.int64]:
        """Decoded actions for ``(N, W, F)`` windows (advances the per-service accumulators)."""
        obs = featurize(windows, slo_p99_ms=self.slo_p99_ms)
        if self._acc.shape[0] != len(obs):
            self._acc = np.zeros((len(obs), _N_DELTA))
        self.last_probs = action_probabilities(self.model, obs)
        act, self._acc = decode(self.last_probs, self._acc)
        return act

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        actions = self.actions(windows)
        if self.rule is None:
            return apply_array(knobs, actions, self.bounds)
        probs = self.last_probs[0]
        offset = np.rint(probs @ (np.arange(probs.shape[1]) - NOOP_ACTION[0])).astype(np.int64)
        actions[:, 0] = offset + NOOP_ACTION[0]
        return residual_target(self.rule.replicas(windows, self.bounds), knobs, actions, self.bounds)


class PPOController(ModelController):
    """A trained SB3 PPO policy loaded from a verified artifact.

    ``decide`` calls :func:`rlctl.contract.featurize` on the telemetry windows (with the
    SLO the policy was trained for), decodes the policy's action distribution and applies
    the result to the knobs within the bounds.
    """

    def __init__(self, policy: str | Path = "default", name: str | None = None, device: str = "cpu") -> None:
        self.artifact: Artifact = load_artifact(policy)
        model = self.artifact.load_model(device)
        trained = self.artifact.manifest.get("config") or {}
        rule = RuleConfig(headroom=float(trained.get("residual_headroom", 1.0))) if trained.get("residual") else None
        super().__init__(model, self.artifact.features.slo_p99_ms, name or f"ppo:{self.artifact.name}", rule=rule)

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        """As :meth:`ModelController.reset`, moving only knobs the artifact was trained to move: a
        knob its bounds do not ``allow`` had no effect in training, so its actions mean nothing."""
        trained = self.artifact.bounds.allow
        super().reset(n, dataclasses.replace(bounds, allow=tuple(k for k in bounds.allow if k in trained)), interval_s)


def trained_with_guard(controller: Any) -> bool:
    """Whether ``controller`` is a policy whose artifact was trained with the SLO guard inside its environment."""
    artifact = getattr(controller, "artifact", None)
    return bool(artifact is not None and (artifact.manifest.get("config") or {}).get("guard"))


def load_policy(policy: str | Path = "default", name: str | None = None, device: str = "cpu") -> Controller:
    """The controller an artifact ships as: the policy, under the SLO guard if it was trained
    under it (the guard is then part of what was trained and judged, not an option), named
    ``ppo:NAME`` either way."""
    ppo = PPOController(policy, name=name, device=device)
    if not trained_with_guard(ppo):
        return ppo
    return SLOGuard(ppo, GuardConfig(slo_p99_ms=ppo.slo_p99_ms), name=ppo.name)
