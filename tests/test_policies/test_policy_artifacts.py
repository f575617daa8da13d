"""Artifacts, the PPO controller, training determinism, and `rlctl eval`."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_rlctl

from envs.sim import RewardWeights
from envs.vec import GoServiceVecEnv
from policies.artifact import default_artifact_dir, load_artifact, manifest_digest, save_artifact, upgrade_artifact
from policies.ppo import PPOController
from policies.train import TrainConfig, evaluation_env, make_model, policy_parameters, start_from, train
from rlctl.contract import DEFAULT_WINDOW, N_TELEMETRY, SCHEMA_HASH, FeatureSpec, KnobBounds, Knobs
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


# --------------------------------------------------------------------------- tampering
# Every case starts from a copy of the shipped artifact. "Re-digested" cases recompute
# artifact_digest as a careful forger (or a stale tool) would: the digest then matches,
# and the contract check must still refuse the manifest, naming the field.


def _edit(folder: Path, change: Callable[[dict[str, Any]], None], *, redigest: bool = True) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    if redigest:
        manifest["artifact_digest"] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _set(dotted: str, value: Any, *, redigest: bool = True) -> Callable[[Path], None]:
    def change(manifest: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[leaf] = value

    return lambda folder: _edit(folder, change, redigest=redigest)


def _replace_model(data: bytes) -> Callable[[Path], None]:
    """model.zip replaced, and the manifest's files entry and digest made to match it."""

    def tamper(folder: Path) -> None:
        (folder / "model.zip").write_bytes(data)
        _edit(folder, lambda m: m["files"].__setitem__("model.zip", hashlib.sha256(data).hexdigest()))

    return tamper


def _zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _flip_a_byte(folder: Path) -> None:
    data = bytearray((folder / "model.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.zip").write_bytes(bytes(data))


def _infinite_slo(folder: Path) -> None:
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text.replace('"slo_p99_ms": 8.0', '"slo_p99_ms": 1e999', 1))


def _format_1(folder: Path) -> None:
    def downgrade(manifest: dict[str, Any]) -> None:
        manifest["sha256"] = manifest["files"]["model.zip"]
        for key in ("artifact_digest", "artifact_format", "files"):
            del manifest[key]

    _edit(folder, downgrade, redigest=False)


#: (tamper, what the one-line refusal must say). All are refused by verify_artifact, before any unpickling.
TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "max-replicas-1000-not-redigested": (
        _set("bounds.max_replicas", 1000, redigest=False),
        r"manifest\.json: artifact_digest [0-9a-f]{64} does not match the manifest's content",
    ),
    "min-above-max-redigested": (
        _set("bounds.min_replicas", 20),
        r"manifest\.json: field bounds: min_replicas=20 is above max_replicas=16",
    ),
    "max-beyond-the-wire-format": (
        _set("bounds.max_replicas", 1_000_000),
        r"field bounds: max_replicas=1000000 is above 100000",
    ),
    "feature-window-0": (
        _set("features.window", 0),
        r"field features\.window = 0: Input should be greater than or equal to 1",
    ),
    "unknown-schema-hash": (
        _set("schema_hash", "0123456789abcdef"),
        rf'field schema_hash = "0123456789abcdef": trained against contract schema 0123456789abcdef, '
        rf"this rlctl speaks {SCHEMA_HASH}",
    ),
    "unknown-env-version": (_set("env_version", "9"), r'field env_version = "9": unknown env version'),
    "config-disagrees-with-features": (
        _set("config.env.window", 6),
        r"config\.env\.window = 6 disagrees with the manifest's window 12",
    ),
    "infinite-number": (_infinite_slo, r"manifest\.json: 1e999 is not a finite number"),
    "extra-unlisted-file": (
        lambda folder: (folder / "notes.txt").write_text("hello"),
        r"notes\.txt: not listed in the manifest's files",
    ),
    "model-byte-changed": (
        _flip_a_byte,
        r"model\.zip: sha256 [0-9a-f]{64} does not match the manifest's files\['model\.zip'\] [0-9a-f]{64}",
    ),
    "model-not-a-zip-with-matching-digest": (
        _replace_model(b"this is not a zip file\n" * 100),
        r"model\.zip: not a readable zip archive",
    ),
    "zip-without-sb3-members-with-matching-digest": (
        _replace_model(_zip_of({"hello.txt": b"hi"})),
        r"model\.zip: zip lacks the stable-baselines3 member\(s\) \['data', 'policy\.pth'\]",
    ),
    "format-1-manifest": (_format_1, r"manifest\.json: artifact format 1 .*python -m policies\.artifact upgrade"),
}

FIX = "retrain with `rlctl train` or restore the artifact"


def _tampered(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / case
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(default_artifact_dir(), folder)
    TAMPERS[case][0](folder)
    return folder


def test_the_shipped_artifact_verifies_as_a_whole() -> None:
    artifact = load_artifact("default")
    spec = artifact.spec
    assert spec.artifact_format == 2 and spec.schema_hash == SCHEMA_HASH
    assert spec.files == {"model.zip": hashlib.sha256(artifact.model_path.read_bytes()).hexdigest()}
    assert spec.artifact_digest == manifest_digest(artifact.manifest)
    assert artifact.bounds == KnobBounds() and artifact.features == FeatureSpec()
    assert PPOController("default").name == "ppo:default"


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_artifact_is_refused_by_the_loader(tmp_path: Path, case: str) -> None:
    folder = _tampered(tmp_path, case)
    for load in (load_artifact, PPOController):
        with pytest.raises(ArtifactError, match=TAMPERS[case][1]) as err:
            load(folder)
        assert str(folder) in str(err.value) and "\n" not in str(err.value)
        if case != "format-1-manifest":
            assert FIX in str(err.value)


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_artifact_is_refused_by_rlctl_eval_in_one_line(tmp_path: Path, case: str) -> None:
    folder = _tampered(tmp_path, case)
    r = invoke_rlctl("eval", "--policy", str(folder), "--suite", "smoke", "--seeds", "1")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("ArtifactError: ") and re.search(TAMPERS[case][1], line), line


def test_tampered_artifact_is_refused_by_rlctl_serve_and_control(tmp_path: Path) -> None:
    folder = _tampered(tmp_path, "feature-window-0")
    served = invoke_rlctl("serve", "--policy", str(folder), "--port", "1")
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    assert served.stderr.strip().splitlines()[-1].startswith(f"ArtifactError: {folder}/manifest.json: field features")
    controlled = invoke_rlctl("control", "--service", "svc", "--policy", str(folder), "--redis", "none", "--metrics",
                           "http://127.0.0.1:9/metrics", "--metrics-port", "0", "--max-steps", "1")  # fmt: skip
    assert controlled.returncode == 2 and "Traceback" not in controlled.stderr, controlled.stderr
    last = controlled.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ArtifactError: {folder}/manifest.json: field features"), last


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rlctl.online.serve import PolicyServer

    good = tmp_path_factory.mktemp("serving") / "good"
    shutil.copytree(default_artifact_dir(), good)
    return PolicyServer(str(good))


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_hot_swap_to_a_tampered_artifact_keeps_the_old_policy(policy_server: Any, tmp_path: Path, case: str) -> None:
    serving = policy_server.model
    folder = _tampered(tmp_path, case)
    with pytest.raises(ArtifactError, match=TAMPERS[case][1]):
        policy_server.reconfigure({"policy": str(folder)})
    assert policy_server.model is serving and serving.bounds == KnobBounds() and serving.window == DEFAULT_WINDOW
    assert policy_server.load_error.startswith("ArtifactError: ")
    assert re.search(TAMPERS[case][1], policy_server.load_error)
    policy_server.check_health()  # the old policy keeps serving


def test_a_zip_stable_baselines3_cannot_load_is_an_artifact_error(tmp_path: Path) -> None:
    folder = tmp_path / "garbage"
    shutil.copytree(default_artifact_dir(), folder)
    _replace_model(_zip_of({"data": b"{not json", "policy.pth": b"not a torch file"}))(folder)
    load_artifact(folder)  # intact as a folder: the zip's contents are what fails
    with pytest.raises(ArtifactError, match=r"model\.zip: stable-baselines3 cannot load it \(") as err:
        PPOController(folder)
    assert FIX in str(err.value) and "\n" not in str(err.value)
    r = invoke_rlctl("eval", "--policy", str(folder), "--suite", "smoke", "--seeds", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("ArtifactError: ")


def test_a_trusted_format_1_artifact_upgrades_without_retraining(tmp_path: Path) -> None:
    folder = _tampered(tmp_path, "format-1-manifest")
    zip_before = (folder / "model.zip").read_bytes()
    upgraded = upgrade_artifact(folder)
    assert upgraded.spec.artifact_format == 2 and (folder / "model.zip").read_bytes() == zip_before
    assert upgraded.spec.artifact_digest == load_artifact("default").spec.artifact_digest  # same content, same digest
    changed = _tampered(tmp_path / "again", "format-1-manifest")
    _flip_a_byte(changed)
    with pytest.raises(ArtifactError, match=r"model\.zip: sha256 .* does not match the format-1 manifest's"):
        upgrade_artifact(changed)


def test_saved_artifacts_list_every_file_and_refuse_a_manifest_outside_the_contract(
    artifact: Path, tmp_path: Path
) -> None:
    spec = load_artifact(artifact).spec
    assert set(spec.files) == {"model.zip"} and spec.artifact_digest == manifest_digest(
        json.loads((artifact / "manifest.json").read_text())
    )
    with pytest.raises(ArtifactError, match=r'field env_version = "nightly": unknown env version'):
        save_artifact(tmp_path / "x", artifact / "model.zip", name="x", env_version="nightly", config={}, seed=0,
                      bounds=KnobBounds(), features=FeatureSpec())  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_missing_artifact_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_artifact(tmp_path)


@pytest.mark.slow  # trains the tiny policy twice
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


@pytest.mark.slow  # trains a policy, then evaluates it with two baselines and two seeds
def test_eval_cli_writes_the_documented_json(artifact: Path, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: mini\nkind: bursty\nduration_s: 600\nload: {kind: step, base_qps: 1000, step_qps: 9000, at_s: 200}\n"
        "faults:\n  - {kind: pod-kill, start_s: 300, duration_s: 5}\n"
    )
    out = tmp_path / "e.json"
    args = ["--baseline", "hpa-tuned", "--baseline", "static", "--suite", str(suite), "--seeds", "2"]
    r = invoke_rlctl(
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
        assert {"slo_violation_s", "replica_seconds", "core_seconds", "actions_per_hour", "flaps_per_hour",
                "recovery_seconds"} <= set(sc)  # fmt: skip
        assert len(sc["recovery_seconds"]) == 1
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "mini.png").exists()


def test_eval_without_anything_to_evaluate_exits_2() -> None:
    r = invoke_rlctl("eval", "--suite", "smoke")
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
