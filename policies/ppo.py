"""The learned policy as a :class:`Controller`: featurize, predict, apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policies.artifact import Artifact, load_artifact
from policies.base import Controller, FloatArray
from rlctl.contract import KnobBounds, apply_array, featurize


class PPOController(Controller):
    """A trained SB3 PPO policy. Loads and verifies its artifact on construction.

    ``decide`` calls :func:`rlctl.contract.featurize` on the telemetry windows (with the
    SLO the policy was trained for), asks the policy for deterministic actions and
    applies them to the knobs within the bounds.
    """

    def __init__(self, policy: str | Path = "default", name: str | None = None, device: str = "cpu") -> None:
        from stable_baselines3 import PPO

        self.artifact: Artifact = load_artifact(policy)
        self.model: Any = PPO.load(self.artifact.model_path, device=device)
        self.name = name or f"ppo:{self.artifact.name}"
        self.slo_p99_ms = self.artifact.features.slo_p99_ms

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)

    def actions(self, windows: FloatArray) -> np.ndarray:
        """Raw MultiDiscrete actions for ``(N, W, F)`` windows."""
        obs = featurize(windows, slo_p99_ms=self.slo_p99_ms)
        act, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(act, dtype=np.int64).reshape(len(obs), -1)

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        return apply_array(knobs, self.actions(windows), self.bounds)
