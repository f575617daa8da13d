"""The Go-service simulator as a Gymnasium environment.

``import envs`` registers ``rlctl/GoService-v0``. Physics lives in :mod:`envs.model`
(pure numpy); :mod:`envs.sim` wires it for N services at once; :class:`GoServiceEnv`
is the single environment and :class:`GoServiceVecEnv` (in :mod:`envs.vec`, which
imports stable-baselines3) the batched one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

from envs.go_service import ENV_VERSION, GoServiceEnv
from envs.profile import ServiceProfile, Topology
from envs.sim import EnvConfig, RewardWeights

ENV_ID = "rlctl/GoService-v0"
MAX_EPISODE_STEPS = 720

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.go_service:GoServiceEnv", max_episode_steps=MAX_EPISODE_STEPS)

if TYPE_CHECKING:
    from envs.vec import GoServiceVecEnv


def __getattr__(name: str) -> Any:
    if name == "GoServiceVecEnv":
        from envs.vec import GoServiceVecEnv  # local: gymnasium.make's entry point; the vector env is heavy

        return GoServiceVecEnv
    raise AttributeError(name)


__all__ = [
    "ENV_ID",
    "ENV_VERSION",
    "MAX_EPISODE_STEPS",
    "EnvConfig",
    "GoServiceEnv",
    "GoServiceVecEnv",
    "RewardWeights",
    "ServiceProfile",
    "Topology",
]
