"""Artifacts, the PPO controller, training determinism, and `rlctl eval`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_rlctl

from envs.sim import RewardWeights
from envs.vec import GoServiceVecEnv
from policies.artifact import load_artifact, save_artifact
from policies.ppo import PPOController
from policies.train import TrainConfig, evaluation_env, make_model, policy_parameters, start_from, train
from rlctl.contract import DEFAULT_WINDOW, N_TELEMETRY, FeatureSpec, KnobBounds, Knobs
from rlctl.errors import ArtifactError, ConfigError

TINY = TrainConfig(
    n_envs=2,
    n_steps=32,
    batch_size=64,
    n_epochs=1,
    total_timesteps=128,
    eval_every=0,
    seed=3,
    pretrain_episodes=2,
    pretrain_epochs=1,
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("art")
    model = make_model(TINY, GoServiceVecEnv(2, seed=0))
    model.save(tmp / "m.zip")
    save_artifact(
        tmp / "policy", tmp / "m.zip", name="tiny", env_version="0", config=TINY.to_dict() | {"env": {}, "profile": {}},
        seed=3, bounds=KnobBounds(), features=FeatureSpec(),
    )  # fmt: skip
    return tmp / "policy"


def test_save_load_gives_the_same_actions(artifact: Path) -> None:
    a, b = PPOController(artifact), PPOController(artifact)
    assert a.name == "ppo:tiny"
    rng = np.random.default_rng(0)
    windows = rng.uniform(0, 100, size=(5, DEFAULT_WINDOW, N_TELEMETRY))
    np.testing.assert_array_equal(a.actions(windows), b.actions(windows))
    a.reset(5, KnobBounds(), 5.0)
    out = a.decide(windows, np.tile(Knobs().to_array(), (5, 1)))
    assert out.shape == (5, 8)


def test_tampered_model_is_refused_naming_both_hashes(artifact: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    with (bad / "model.zip").open("ab") as fh:
        fh.write(b"x")
    manifest = json.loads((bad / "manifest.json").read_text())
    with pytest.raises(ArtifactError) as err:
        load_artifact(bad)
    assert manifest["sha256"] in str(err.value) and "does not match" in str(err.value)


def test_other_schema_is_refused_naming_both_schemas(artifact: Path, tmp_path: Path) -> None:
    import shutil

    from rlctl.contract import SCHEMA_HASH

    other = tmp_path / "other"
    shutil.copytree(artifact, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["schema_hash"] = "0123456789abcdef"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"0123456789abcdef.*{SCHEMA_HASH}"):
        load_artifact(other)


def test_missing_artifact_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_artifact(tmp_path)


def test_same_seed_same_training_same_policy(tmp_path: Path) -> None:
    a = train(TINY, tmp_path / "a", log_dir=tmp_path / "la")
    b = train(TINY, tmp_path / "b", log_dir=tmp_path / "lb")
    assert a.artifact is not None and b.artifact is not None
    from stable_baselines3 import PPO

    pa = policy_parameters(PPO.load(a.artifact.model_path))
    pb = policy_parameters(PPO.load(b.artifact.model_path))
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    c = train(TrainConfig(**{**TINY.__dict__, "seed": 4}), None, log_dir=tmp_path / "lc")
    assert c.steps == a.steps


def test_eval_cli_writes_the_documented_json(artifact: Path, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: mini\nkind: bursty\nduration_s: 600\nload: {kind: step, base_qps: 1000, step_qps: 9000, at_s: 200}\n"
        "faults:\n  - {kind: pod-kill, start_s: 300, duration_s: 5}\n"
    )
    out = tmp_path / "e.json"
    args = ["--baseline", "hpa-tuned", "--baseline", "static", "--suite", str(suite), "--seeds", "2"]
    r = run_rlctl(
        "eval", "--policy", str(artifact), "--safety", *args, "--json", str(out), "--report", str(tmp_path / "rep")
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    entry = rep["scenarios"]["mini"]
    assert entry["kind"] == "bursty"
    ctrls = entry["controllers"]
    assert any(c.startswith("ppo") for c in ctrls) and "hpa-tuned" in ctrls and "static" in ctrls
    # --safety adds the policy as production runs it, through the online safety layer.
    assert {c.split(":")[0] for c in ctrls if c.startswith("ppo")} == {"ppo", "ppo+safety"}
    for sc in ctrls.values():
        assert {"slo_violation_minutes", "replica_seconds", "core_seconds", "actions_per_hour", "flaps_per_hour",
                "recovery_seconds"} <= set(sc)  # fmt: skip
        assert len(sc["recovery_seconds"]) == 1
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "mini.png").exists()


def test_eval_without_anything_to_evaluate_exits_2() -> None:
    r = run_rlctl("eval", "--suite", "smoke")
    assert r.returncode == 2 and "nothing to evaluate" in r.stderr


def test_training_config_file_sets_reward_weights_and_refuses_unknown_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("reward:\n  slo: 2.5\n  replica: 0.04\ntotal_timesteps: 1000\n")
    cfg = TrainConfig.from_file(good)
    assert (cfg.env.reward.slo, cfg.env.reward.replica, cfg.env.reward.churn) == (2.5, 0.04, 0.01)
    assert cfg.total_timesteps == 1000
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  latency: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: reward must map some of .*'slo'.*latency"):
        TrainConfig.from_file(bad)
    negative = tmp_path / "negative.yaml"
    negative.write_text("reward:\n  slo: -1\n")
    with pytest.raises(ConfigError, match="finite and >= 0"):
        TrainConfig.from_file(negative)


def test_the_training_target_is_judged_by_the_default_objective_whatever_the_reward(tmp_path: Path) -> None:
    heavy = tmp_path / "heavy.yaml"
    heavy.write_text("reward:\n  slo: 4.0\nguard: true\n")
    cfg = TrainConfig.from_file(heavy)
    judged = evaluation_env(cfg)
    assert cfg.env.reward.slo == 4.0 and cfg.guard
    assert judged.reward == RewardWeights()  # hpa-tuned is tuned as `rlctl eval` tunes it
    assert dataclasses.replace(judged, reward=cfg.env.reward) == cfg.env


def test_fine_tuning_starts_from_the_artifacts_weights_and_refuses_another_network(artifact: Path) -> None:
    from stable_baselines3 import PPO

    model = make_model(dataclasses.replace(TINY, seed=4), GoServiceVecEnv(2, seed=1))
    before = policy_parameters(model)
    start_from(model, str(artifact))
    source = policy_parameters(PPO.load(load_artifact(artifact).model_path, device="cpu"))
    after = policy_parameters(model)
    assert any(not np.array_equal(before[k], source[k]) for k in source)  # a fresh model differs ...
    assert all(np.array_equal(after[k], source[k]) for k in source)  # ... until it starts from the artifact
    other = make_model(dataclasses.replace(TINY, net_arch=(16,)), GoServiceVecEnv(2, seed=1))
    with pytest.raises(ConfigError, match=r"init_policy .*does not match this run's net_arch \[16\]"):
        start_from(other, str(artifact))
