"""GoServiceEnv and GoServiceVecEnv: API conformance, determinism, episode structure."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs
from chaos.spec import FaultKind, FaultSpec, LoadSpec, Scenario
from envs import EnvConfig, GoServiceEnv
from envs.vec import GoServiceVecEnv
from rlctl.contract import NOOP_ACTION, TelemetrySample


def test_gymnasium_check_env_passes_with_warnings_as_errors() -> None:
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(GoServiceEnv(), skip_render_check=True)


def test_sb3_check_env_passes_with_warnings_as_errors() -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(GoServiceEnv(), warn=True)


def _rollout(seed: int, steps: int = 120) -> tuple[np.ndarray, np.ndarray]:
    env = gym.make(envs.ENV_ID)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, r, _, _, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(r)
    return np.array(observations), np.array(rewards)


def test_same_seed_same_rollout_and_different_seeds_differ() -> None:
    a_obs, a_rew = _rollout(7)
    b_obs, b_rew = _rollout(7)
    np.testing.assert_array_equal(a_obs, b_obs)
    np.testing.assert_array_equal(a_rew, b_rew)
    c_obs, _ = _rollout(8)
    assert not np.array_equal(a_obs, c_obs)


def test_registration_truncates_after_one_hour() -> None:
    env = gym.make(envs.ENV_ID)
    assert env.spec is not None and env.spec.max_episode_steps == 720
    env.reset(seed=0)
    i = -1
    for i in range(720):  # noqa: B007
        _, _, terminated, truncated, info = env.step(np.array(NOOP_ACTION))
        assert not terminated
        if truncated:
            break
    assert i == 719 and truncated
    assert {"p99_ms", "slo_violated", "replicas", "cost", "faults_active"} <= set(info)


def test_env_emits_contract_telemetry_and_scales_replicas_after_a_delay() -> None:
    scenario = Scenario(name="c", duration_s=600, load=LoadSpec(kind="constant", qps=500, noise=False))
    env = GoServiceEnv(config=EnvConfig(episode_s=600), scenario=scenario)
    env.reset(seed=0)
    sample = env.telemetry()
    assert isinstance(sample, TelemetrySample) and sample.offered_qps == 500
    up = np.array(NOOP_ACTION)
    up[0] = 4  # +2 replicas
    _, _, _, _, info = env.step(up)
    assert info["replicas"] == 4 and info["ready_replicas"] == 2  # starting, not yet serving
    for _ in range(6):
        _, _, _, _, info = env.step(np.array(NOOP_ACTION))
    assert info["ready_replicas"] == 4


def test_pod_kill_removes_a_replica_until_restart() -> None:
    scenario = Scenario(
        name="k", duration_s=300, load=LoadSpec(kind="constant", qps=500, noise=False),
        faults=[FaultSpec(kind=FaultKind.POD_KILL, start_s=50, duration_s=5, params={"restart_delay_s": 30})],
    )  # fmt: skip
    env = GoServiceEnv(config=EnvConfig(episode_s=300), scenario=scenario)
    env.reset(seed=0)
    ready = []
    for _ in range(30):
        _, _, _, _, info = env.step(np.array(NOOP_ACTION))
        ready.append(info["ready_replicas"])
    assert min(ready) == 1 and ready[-1] == 2


def test_overload_is_punished_more_than_idle_capacity() -> None:
    scenario = Scenario(name="h", duration_s=300, load=LoadSpec(kind="constant", qps=9000, noise=False))
    env = GoServiceEnv(config=EnvConfig(episode_s=300), scenario=scenario)
    env.reset(seed=0)
    _, r_low, _, _, info = env.step(np.array(NOOP_ACTION))
    assert info["slo_violated"]
    scenario2 = Scenario(name="l", duration_s=300, load=LoadSpec(kind="constant", qps=100, noise=False))
    env2 = GoServiceEnv(config=EnvConfig(episode_s=300), scenario=scenario2)
    env2.reset(seed=0)
    _, r_ok, _, _, info2 = env2.step(np.array(NOOP_ACTION))
    assert not info2["slo_violated"] and r_ok > r_low


def test_vec_env_matches_the_single_env_physics() -> None:
    scenario = Scenario(name="c", duration_s=300, load=LoadSpec(kind="constant", qps=2000, noise=False))
    cfg = EnvConfig(episode_s=300)
    vec = GoServiceVecEnv(3, config=cfg, scenarios=[scenario], seed=0)
    obs = vec.reset()
    single = GoServiceEnv(config=cfg, scenario=scenario)
    obs1, _ = single.reset(seed=0)
    # float32 features; the single env sums a window on floats, the batch with numpy's pairwise sum
    np.testing.assert_allclose(obs[0], obs1, rtol=1e-6, atol=1e-6)
    actions = np.tile(np.array(NOOP_ACTION), (3, 1))
    for _ in range(10):
        obs, rew, _dones, _infos = vec.step(actions)
        obs1, r1, *_ = single.step(np.array(NOOP_ACTION))
    np.testing.assert_allclose(obs[1], obs1, rtol=1e-5, atol=1e-6)
    assert rew[2] == pytest.approx(r1, rel=1e-5)


def test_batch_rows_are_independent_when_restarted_at_different_times() -> None:
    """A row restarted mid-episode (its step count, replica queue and window out of step
    with the others) leaves the other rows exactly as a batch of one would step them."""
    from envs.profile import ServiceProfile
    from envs.sim import ServiceBatch

    cfg = EnvConfig(episode_s=600)
    scenario = Scenario(name="s", duration_s=600, load=LoadSpec(kind="diurnal", base_qps=300, peak_qps=3000,
                                                                period_s=600))  # fmt: skip
    profile = ServiceProfile()
    # Scale up, then down while replicas are still starting (cancels queued ones), and so on.
    plan = [4, 4, 0, 3, 4, 0, 0, 2, 4, 1, 0, 4, 3, 0, 2, 2, 4, 0, 1, 3] * 3
    noop = np.array(NOOP_ACTION)

    def action(i: int) -> np.ndarray:
        a = noop.copy()
        a[0] = plan[i % len(plan)]
        return a

    batch = ServiceBatch(3, cfg)
    batch.reset_rows([0, 1, 2], [scenario] * 3, [profile] * 3, [np.random.default_rng(s) for s in (0, 1, 2)])
    alone = ServiceBatch(1, cfg)
    alone.reset_rows([0], [scenario], [profile], [np.random.default_rng(0)])
    for i in range(40):
        if i == 7:  # row 1 starts over: its slot in the replica queue no longer matches the others'
            batch.reset_rows([1], [scenario], [profile], [np.random.default_rng(9)])
            late = ServiceBatch(1, cfg)
            late.reset_rows([0], [scenario], [profile], [np.random.default_rng(9)])
        tel, _, figures = batch.step(np.stack([action(i), action(i + 5), action(i)]))
        tel1, _, figures1 = alone.step(action(i)[None, :])
        np.testing.assert_allclose(tel[0], tel1[0], rtol=1e-9)
        assert figures["ready_replicas"][0] == figures1["ready_replicas"][0]
        if i >= 7:
            tel_late, _, figures_late = late.step(action(i + 5)[None, :])
            np.testing.assert_allclose(tel[1], tel_late[0], rtol=1e-9)
            assert figures["ready_replicas"][1] == figures_late["ready_replicas"][0]
    assert batch.t_step.tolist() == [40, 33, 40]
    np.testing.assert_allclose(batch.window[0], alone.window[0], rtol=1e-9)
    np.testing.assert_allclose(batch.observe()[0], alone.observe()[0], rtol=1e-6)
    # Rows 0 and 2 took the same actions from the same start: only their load noise differs.
    assert batch.knobs[0].tolist() == batch.knobs[2].tolist()


def test_vec_env_auto_resets_with_terminal_observation() -> None:
    vec = GoServiceVecEnv(4, config=EnvConfig(episode_s=50), seed=1)
    vec.reset()
    actions = np.tile(np.array(NOOP_ACTION), (4, 1))
    for _ in range(10):
        _, _, dones, infos = vec.step(actions)
    assert dones.all()
    assert all("terminal_observation" in info and info["TimeLimit.truncated"] for info in infos)


def test_nasa_trace_replays_scaled_to_its_peak() -> None:
    from envs.loads import load_qps
    from envs.scenarios import default_trace_path

    path = default_trace_path()
    assert path.is_file(), "the NASA trace ships inside the chaos package"
    q = load_qps(LoadSpec(kind="trace", path=str(path), peak_qps=5000, noise=False, time_scale=60), 5000, 5.0)
    assert q.max() <= 5000 + 1e-6 and q.max() > 2000 and q.min() >= 0


def test_env_pickles_mid_episode_and_the_copy_continues_identically() -> None:
    import pickle

    env = GoServiceEnv()
    env.reset(seed=4)
    env.action_space.seed(4)
    for _ in range(40):
        env.step(env.action_space.sample())
    twin = pickle.loads(pickle.dumps(env))
    for _ in range(40):
        a = env.action_space.sample()
        obs, reward, _, truncated, info = env.step(a)
        obs2, reward2, _, truncated2, info2 = twin.step(a)
        assert np.array_equal(obs, obs2) and reward == reward2 and truncated == truncated2 and info == info2
    assert twin.knobs == env.knobs
