"""``GoServiceEnv``: one Go service under load and faults, as a Gymnasium environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from chaos.spec import Scenario
from envs.profile import ServiceProfile, randomize
from envs.scenarios import random_scenario
from envs.sim import EnvConfig, nominal_capacity_qps
from envs.single import SingleService
from rlctl.contract import (
    ACTION_NVEC,
    ENV_VERSION,
    FEATURE_HIGH,
    FEATURE_LOW,
    N_FEATURES,
    Knobs,
    TelemetrySample,
)

__all__ = ["ENV_VERSION", "GoServiceEnv"]


class GoServiceEnv(gym.Env[npt.NDArray[np.float32], npt.NDArray[np.int64]]):
    """
    ## Description

    A Go microservice with a performance boundary: replicas behind a balancer, each a Go
    runtime with GOMAXPROCS Ps under a CPU quota, a garbage collector paced by GOGC and
    GOMEMLIMIT, a bounded ``sync.Pool`` and a downstream connection pool, on a host with
    NUMA distance, hardware prefetchers, turbo and a thermal model. Load follows a
    scenario (constant, diurnal, ramp, step, flash crowd, trace replay) and Chaos
    Mesh-style faults strike on schedule. The agent turns the knobs every 5 seconds of
    service time to keep P99 under the SLO at the least cost. The physics lives in
    :mod:`envs.model` (Erlang C, Go's GC pacer, CFS bandwidth control, a thermal RC
    model), each function with its formula and source. This single environment evaluates
    them on Python floats and the batched one (:class:`envs.GoServiceVecEnv`) on numpy
    arrays: the same functions (see :mod:`rlctl.xp`), pinned to each other by tests.

    ## Action Space

    ``MultiDiscrete([5, 3, 3, 3, 3, 3, 2, 2])``, all deltas, clamped by the bounds
    (see :func:`rlctl.contract.apply`):

    | Index | Knob              | Values                                                 |
    |-------|-------------------|--------------------------------------------------------|
    | 0     | replicas          | 0..4 -> -2..+2 replicas                                |
    | 1     | GOMAXPROCS        | 0..2 -> -1, keep, +1                                   |
    | 2     | GOGC              | one rung down/keep/up on 25, 50, 100, 200, 400, 800    |
    | 3     | GOMEMLIMIT        | one rung on 128 MiB .. 8 GiB                           |
    | 4     | object pool size  | one rung on 0, 16, 64, 256, 1024, 4096                 |
    | 5     | connection pool   | one rung on 1, 2, 4, ..., 128                          |
    | 6     | hardware prefetch | 0 keep, 1 toggle                                       |
    | 7     | turbo             | 0 keep, 1 toggle                                       |

    ## Observation Space

    ``Box(-10, 10, (30,), float32)``: :func:`rlctl.contract.featurize` of the last 12
    telemetry samples (one minute), the same function the live controller calls.

    | Index | Feature                      | Unit / scaling                          | Bounds   |
    |-------|------------------------------|-----------------------------------------|----------|
    | 0     | log_offered_qps              | ln(1 + req/s) / 3                       | [0, 10]  |
    | 1     | log_offered_qps_per_replica  | ln(1 + req/s per replica) / 3           | [0, 10]  |
    | 2     | offered_trend                | (last 3 - first 3 mean) / first, ratio  | [-10,10] |
    | 3     | served_over_offered          | ratio                                   | [0, 10]  |
    | 4     | log_p50_over_slo             | ln(P50 ms / SLO ms)                     | [-10,10] |
    | 5     | log_p99_over_slo             | ln(P99 ms / SLO ms)                     | [-10,10] |
    | 6     | log_max_p99_over_slo         | ln(max P99 in window / SLO)             | [-10,10] |
    | 7     | error_rate                   | fraction                                | [0, 1]   |
    | 8     | cpu_util                     | CPU used / quota                        | [0, 10]  |
    | 9     | cpu_util_max                 | max over the window                     | [0, 10]  |
    | 10    | cfs_throttled_fraction       | fraction of CFS periods                 | [0, 1]   |
    | 11    | gc_cpu_fraction              | fraction of CPU                         | [0, 1]   |
    | 12    | log_goroutines_per_replica   | ln(1 + goroutines per replica) / 3      | [0, 10]  |
    | 13    | goroutine_zscore             | (last - mean) / max(sd, 1)              | [-10,10] |
    | 14    | log_alloc_rate               | ln(1 + bytes/s) / 10                    | [0, 10]  |
    | 15    | heap_over_memlimit           | heap goal / GOMEMLIMIT                  | [0, 10]  |
    | 16    | log2_replicas                | log2(replicas)                          | [0, 10]  |
    | 17    | gomaxprocs                   | GOMAXPROCS / 4                          | [0, 10]  |
    | 18    | log2_gogc                    | log2(GOGC / 100)                        | [-2, 3]  |
    | 19    | log2_gomemlimit              | log2(GOMEMLIMIT / 1 GiB)                | [-3, 3]  |
    | 20    | log2_object_pool             | log2(1 + size) / 4                      | [0, 3]   |
    | 21    | log2_conn_pool               | log2(1 + size) / 4                      | [0, 2]   |
    | 22    | prefetch_on                  | 0/1                                     | [0, 1]   |
    | 23    | turbo_on                     | 0/1                                     | [0, 1]   |
    | 24    | log_rtt_mean_ms              | ln(1 + ms)                              | [0, 10]  |
    | 25    | log_rtt_std_ms               | ln(1 + ms)                              | [0, 10]  |
    | 26    | cpu_temp                     | (°C - 60) / 20                          | [-3, 10] |
    | 27    | cpu_freq_ghz                 | GHz / 3                                 | [0, 2]   |
    | 28    | numa_remote_fraction         | fraction                                | [0, 1]   |
    | 29    | p99_trend                    | ln(last 3 P99 mean / first 3 P99 mean)  | [-10,10] |

    ## Rewards

    ``-(slo * violation + replica * replicas + core * cores_used + churn * knob_moves)``
    per step, weights in :class:`envs.sim.RewardWeights`; ``violation`` is 1 when P99 is
    over the SLO plus half the log overshoot plus ``error`` x the error rate. ``info``
    carries the raw figures: ``p99_ms``, ``slo_violated``, ``replicas``, ``cost``,
    ``replica_seconds``, ``core_seconds``, ``faults_active``, ``offered_qps``,
    ``error_rate``, ``knob_changes``.

    ## Starting State

    The configured initial knobs (2 replicas, GOMAXPROCS 2, GOGC 100 ...) under the
    episode's scenario; the observation window is filled with the first sample.

    ## Episode End

    No termination (a service does not end); truncation after ``episode_s`` seconds of
    service time, 720 steps of 5 s by default (``max_episode_steps`` at registration).

    ## Arguments

    ``gym.make("rlctl/GoService-v0", config=EnvConfig(...), scenario=None,
    profile=ServiceProfile(), randomize_profile=None)``. ``scenario=None`` draws a
    random scenario (load shape and size, faults) each episode; ``reset(options=
    {"scenario": s})`` forces one for an episode. ``randomize_profile`` in [0, 1]
    overrides the config's profile randomisation.

    ## Version History

    * v0: initial version (contract schema 1.0).
    """

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        config: EnvConfig | None = None,
        scenario: Scenario | None = None,
        profile: ServiceProfile | None = None,
        randomize_profile: float | None = None,
    ) -> None:
        self.config = config or EnvConfig()
        self.scenario = scenario
        self.profile = profile or ServiceProfile()
        self.randomize_profile = self.config.randomize_profile if randomize_profile is None else randomize_profile
        self.action_space = spaces.MultiDiscrete(np.array(ACTION_NVEC, dtype=np.int64))
        self.observation_space = spaces.Box(FEATURE_LOW, FEATURE_HIGH, shape=(N_FEATURES,), dtype=np.float32)
        self._service = SingleService(self.config)
        self.current_scenario: Scenario | None = None
        self.current_profile: ServiceProfile = self.profile

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        profile = self.profile
        if self.randomize_profile > 0:
            profile = randomize(profile, rng, self.randomize_profile)
        scenario = (options or {}).get("scenario") or self.scenario
        if scenario is None:
            cap = nominal_capacity_qps(profile)
            scenario = random_scenario(rng, profile, self.config.episode_s, self.config.bounds.max_replicas, cap)
        self.current_scenario = scenario
        self.current_profile = profile
        self._service.reset(scenario, profile, rng)
        return self._service.observe(), {"scenario": scenario.name}

    def step(self, action: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        _, reward, info = self._service.step(action)
        return self._service.observe(), reward, False, self._service.done(), info

    # ------------------------------------------------------------- introspection
    def telemetry(self) -> TelemetrySample:
        """The latest sample, as the live collectors would emit it."""
        return TelemetrySample.from_array(self._service.last, service="sim")

    def telemetry_window(self) -> npt.NDArray[np.float64]:
        return np.array(self._service.window, dtype=np.float64)

    @property
    def knobs(self) -> Knobs:
        return Knobs.from_array(self._service.knobs)
