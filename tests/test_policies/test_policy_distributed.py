"""Scale-out training on Ray Tune (`policies.distributed`): the config plumbing, then a real local run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from policies.artifact import load_artifact
from policies.distributed import check_search_space, train_on_ray, trial_config, trial_score
from policies.train import TrainConfig, gap_score
from rlctl.errors import ConfigError

# No behaviour-cloning warm start: its oracle demonstrations take a minute on their own.
_NO_PRETRAIN = (
    {"pretrain_episodes": 0} if "pretrain_episodes" in {f.name for f in dataclasses.fields(TrainConfig)} else {}
)
TINY = TrainConfig(n_envs=2, n_steps=32, batch_size=64, n_epochs=1, total_timesteps=128, eval_every=0, **_NO_PRETRAIN)


def test_trial_config_takes_the_seed_and_sampled_fields_and_sizes_torch_to_the_cpus() -> None:
    cfg = trial_config(TINY, {"seed": 7, "learning_rate": 5e-4, "net_arch": [32, 32]}, cpus_per_trial=1)
    assert (cfg.seed, cfg.learning_rate, cfg.net_arch, cfg.torch_threads) == (7, 5e-4, (32, 32), 1)
    assert cfg.total_timesteps == TINY.total_timesteps


def test_score_is_the_gap_score_and_inf_without_validation() -> None:
    gap = {"violation_ratio_bursty": 0.25, "replica_ratio_bursty": 1.2}
    assert trial_score(gap) == gap_score(gap) == pytest.approx(1.2)
    assert trial_score({}) == math.inf


def test_search_space_refuses_unknown_and_reserved_fields() -> None:
    check_search_space({"learning_rate": (1e-4, 1e-3), "gamma": [0.98, 0.99]})
    with pytest.raises(ConfigError, match=r"\['learnig_rate'\] are not tunable TrainConfig fields"):
        check_search_space({"learnig_rate": (1e-4, 1e-3)})
    with pytest.raises(ConfigError, match="seeds go in `seeds=`"):
        check_search_space({"seed": [1, 2]})


def test_bad_seeds_are_refused_before_ray_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="each once"):
        train_on_ray(TINY, tmp_path / "out", ray_address="local", log_dir=tmp_path, seeds=[1, 1])


@pytest.mark.real  # Ray
@pytest.mark.slow
def test_two_trials_on_local_ray_install_the_best_artifact(tmp_path: Path) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = train_on_ray(
            TINY,
            tmp_path / "best",
            ray_address="local",
            log_dir=tmp_path / "logs",
            seeds=[0, 1],
            search_space={},
            num_samples=1,
            verbose=0,
        )
    finally:
        ray.shutdown()
    assert len(result.trials) == 2 and all(t.error is None for t in result.trials)
    assert sorted(t.seed for t in result.trials) == [0, 1]
    # Without validation every score is +inf: the tie goes to the lowest seed.
    assert all(t.score == math.inf for t in result.trials)
    assert result.best.seed == 0
    artifact = load_artifact(tmp_path / "best")
    assert artifact.manifest["seed"] == 0 and artifact.manifest["config"]["torch_threads"] == 1
    assert result.artifact.path == tmp_path / "best"
    assert result.to_dict()["best"]["seed"] == 0
