"""``GoServiceVecEnv``: N simulated services in one numpy call, as an SB3 ``VecEnv``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from chaos.spec import Scenario
from envs.profile import ServiceProfile, randomize
from envs.scenarios import random_scenario
from envs.sim import EnvConfig, ServiceBatch, nominal_capacity_qps
from rlctl.contract import ACTION_NVEC, FEATURE_HIGH, FEATURE_LOW, N_FEATURES, KnobBounds, apply_array

ScenarioSource = Callable[[np.random.Generator, ServiceProfile], Scenario]


class Shield(Protocol):
    """A rule between the learner's actions and the services (``policies.guard.SLOGuard``):
    it may raise the targets the actions asked for, and it is part of the environment the
    learner sees, as it will be in production."""

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None: ...

    def reset_rows(self, rows: npt.ArrayLike) -> None: ...

    def shield(
        self, target: npt.NDArray[np.float64], windows: npt.NDArray[np.float64], knobs: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...


class ActionMap(Protocol):
    """How actions become target knobs when not by :func:`rlctl.contract.apply_array` on the current
    knobs (``policies.residual.ResidualActions``: the replica step read as an offset from a rule).
    ``reset_rows`` sees the batch once the rows' new services are set up."""

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None: ...

    def reset_rows(self, rows: npt.ArrayLike, batch: ServiceBatch) -> None: ...

    def target(
        self, actions: npt.NDArray[np.int64], windows: npt.NDArray[np.float64], knobs: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...


class GoServiceVecEnv(VecEnv):
    """A batch of independent Go services, each with its own scenario and profile.

    Episodes of every service start and end together (one scenario length), and each
    service draws a new scenario (or takes the next from ``scenarios``) at reset.
    ``infos`` stay empty dicts except at episode end (``terminal_observation``,
    ``TimeLimit.truncated`` and ``episode``), so the hot path builds no dictionaries;
    per-step figures are in :attr:`last_figures` as arrays.
    """

    def __init__(
        self,
        num_envs: int,
        config: EnvConfig | None = None,
        profile: ServiceProfile | None = None,
        scenarios: Sequence[Scenario] | ScenarioSource | None = None,
        randomize_profile: float | None = None,
        seed: int | None = None,
        reward_scale: float = 1.0,
        shield: Shield | None = None,
        action_map: ActionMap | None = None,
    ) -> None:
        self.config = config or EnvConfig()
        #: Rewards handed to the learner are multiplied by this (episode returns in infos stay raw).
        self.reward_scale = reward_scale
        observation_space = spaces.Box(FEATURE_LOW, FEATURE_HIGH, shape=(N_FEATURES,), dtype=np.float32)
        action_space = spaces.MultiDiscrete(np.array(ACTION_NVEC, dtype=np.int64))
        self.render_mode = None
        super().__init__(num_envs, observation_space, action_space)
        self.profile = profile or ServiceProfile()
        self.scenarios = scenarios
        self.randomize_profile = self.config.randomize_profile if randomize_profile is None else randomize_profile
        self.batch = ServiceBatch(num_envs, self.config)
        self._rng = np.random.default_rng(seed)
        self._actions: npt.NDArray[np.int64] = np.tile(np.array([2, 1, 1, 1, 1, 1, 0, 0]), (num_envs, 1))
        self._ep_return = np.zeros(num_envs)
        self._scenario_cursor = 0
        self.last_figures: dict[str, npt.NDArray[np.float64]] = {}
        self.current_scenarios: list[Scenario] = []
        #: Applied to every step's targets when set (training under the SLO guard).
        self.shield = shield
        if shield is not None:
            shield.reset(num_envs, self.config.bounds, self.config.dt_s)
        #: Turns actions into targets when set (a residual policy's rule).
        self.action_map = action_map
        if action_map is not None:
            action_map.reset(num_envs, self.config.bounds, self.config.dt_s)

    # ----------------------------------------------------------------- episodes
    def _draw(self, rows: Iterable[int]) -> None:
        rows = list(rows)
        scenarios, profiles, rngs = [], [], []
        for _ in rows:
            rng = np.random.default_rng(self._rng.integers(2**63))
            profile = (
                randomize(self.profile, rng, self.randomize_profile) if self.randomize_profile > 0 else self.profile
            )
            if callable(self.scenarios):
                scenario = self.scenarios(rng, profile)
            elif self.scenarios:
                scenario = self.scenarios[self._scenario_cursor % len(self.scenarios)]
                self._scenario_cursor += 1
            else:
                cap = nominal_capacity_qps(profile)
                scenario = random_scenario(rng, profile, self.config.episode_s, self.config.bounds.max_replicas, cap)
            scenarios.append(scenario)
            profiles.append(profile)
            rngs.append(rng)
        self.batch.reset_rows(rows, scenarios, profiles, rngs)
        if self.shield is not None:
            self.shield.reset_rows(rows)
        if self.action_map is not None:
            self.action_map.reset_rows(rows, self.batch)
        if len(self.current_scenarios) != self.num_envs:
            self.current_scenarios = list(scenarios) + [scenarios[0]] * (self.num_envs - len(scenarios))
        for r, s in zip(rows, scenarios, strict=True):
            self.current_scenarios[r] = s

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._scenario_cursor = 0
        self._reset_seeds()
        self._reset_options()
        self._draw(range(self.num_envs))
        self._ep_return[:] = 0.0
        return self.batch.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        batch = self.batch
        if self.shield is None and self.action_map is None:
            _, reward, figures = batch.step(self._actions)
        else:
            if self.action_map is not None:
                target = self.action_map.target(self._actions, batch.window, batch.knobs)
            else:
                target = apply_array(batch.knobs, self._actions, self.config.bounds)
            if self.shield is not None:
                target = self.shield.shield(target, batch.window, batch.knobs)
            _, reward, figures = batch.advance(target)
        self.last_figures = figures
        self._ep_return += reward
        obs = self.batch.observe()
        dones = self.batch.done()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            rows = np.flatnonzero(dones)
            for r in rows:
                infos[r] = {
                    "terminal_observation": obs[r].copy(),
                    "TimeLimit.truncated": True,
                    "episode": {"r": float(self._ep_return[r]), "l": int(self.config.n_steps), "t": 0.0},
                }
                self._ep_return[r] = 0.0
            self._draw(rows)
            obs = self.batch.observe()
        return obs, (reward * self.reward_scale).astype(np.float32), dones.copy(), infos

    # ----------------------------------------------------------- VecEnv plumbing
    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kw: Any) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **kw) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
