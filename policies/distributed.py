"""Scale-out training: seeds and hyperparameter trials in parallel on a Ray cluster (Ray Tune).

``rlctl train --ray-address ADDRESS`` lands here. Each Tune trial is one call of
:func:`policies.train.train` with the base :class:`~policies.train.TrainConfig` plus the
trial's seed and sampled hyperparameters; it reports

- ``score``: :func:`policies.train.gap_score` of the trial's best validation gap (the worst
  ratio against its target; lower is better, <= 1 meets every target), and
- ``artifact``: the trial's artifact folder, also attached as a Tune checkpoint, so the
  driver can fetch it from another node through the run's storage.

The best trial's artifact is then copied into ``out``.

Without validation (``eval_every=0``) a trial has no gap: it keeps its final model and
reports ``score = +inf``, so every such trial ties and the one with the lowest seed (then the
first sampled) wins. Give ``eval_every > 0`` whenever the choice between trials matters.

A trial uses ``cpus_per_trial`` Ray CPUs and as many torch threads: the numpy simulator and
the small PPO network run on one core each well, and the cluster's CPUs bound how many
trials run at once. On a multi-node cluster ``storage_path`` must be a folder every node
shares (NFS) or a cloud URI (``s3://…``): Tune writes checkpoints there and the driver reads
the best one back. Every node needs rlctl installed (the ``deploy/docker/rlctl.Dockerfile``
image has it).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.artifact import Artifact, load_artifact
from policies.train import TrainConfig, gap_score, train
from rlctl.errors import ConfigError

log = logging.getLogger(__name__)

#: Hyperparameters sampled by default: the ones PPO's outcome is most sensitive to here.
#: Values are ``(low, high)`` ranges, sampled log-uniformly (see :func:`tune_space`).
DEFAULT_SEARCH_SPACE: dict[str, tuple[float, float]] = {
    "learning_rate": (3e-5, 3e-4),
    "ent_coef": (1e-4, 1e-2),
    "clip_range": (0.1, 0.3),
}

#: CPUs a local Ray gets (``ray_address='local'``): the machine is small and shared.
LOCAL_NUM_CPUS = 2

#: TrainConfig fields a search space may not touch: the trial owns them.
_RESERVED = frozenset({"seed", "torch_threads", "env", "profile"})


@dataclass(frozen=True)
class TrialSummary:
    """One finished trial: its overrides of the base config, score and artifact."""

    trial_id: str
    seed: int
    params: dict[str, Any]
    score: float
    best_gap: dict[str, float]
    steps: int
    wall_s: float
    target_met: bool
    artifact: str
    error: str | None = None


@dataclass(frozen=True)
class DistributedResult:
    """The outcome of :func:`train_on_ray`: the chosen artifact and every trial."""

    artifact: Artifact
    best: TrialSummary
    trials: list[TrialSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact.path),
            "best": dataclasses.asdict(self.best),
            "trials": [dataclasses.asdict(t) for t in self.trials],
        }


def trial_score(best_gap: Mapping[str, float]) -> float:
    """The trial's ``score``: :func:`gap_score` of its best gap, ``+inf`` when it was never evaluated."""
    if not best_gap:
        return math.inf
    score = gap_score(dict(best_gap))
    return score if math.isfinite(score) else math.inf


def trial_config(base: TrainConfig, params: Mapping[str, Any], *, cpus_per_trial: float) -> TrainConfig:
    """``base`` with a trial's ``seed`` and hyperparameters, and torch threads matching its CPUs."""
    overrides = dict(params)
    if "net_arch" in overrides:
        overrides["net_arch"] = tuple(int(n) for n in overrides["net_arch"])
    overrides["torch_threads"] = max(1, int(cpus_per_trial))
    return dataclasses.replace(base, **overrides)


def check_search_space(search_space: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when a key is not a tunable :class:`TrainConfig` field."""
    tunable = {f.name for f in dataclasses.fields(TrainConfig)} - _RESERVED
    unknown = sorted(set(search_space) - tunable)
    if unknown:
        raise ConfigError(
            f"search space: {unknown} are not tunable TrainConfig fields; tunable: {sorted(tunable)} "
            "(seeds go in `seeds=`)"
        )


def tune_space(search_space: Mapping[str, Any]) -> dict[str, Any]:
    """Tune sampling domains for ``search_space``: a ``(low, high)`` pair is log-uniform, a list a choice.

    Anything else (a Tune domain such as ``tune.uniform(0.9, 0.99)``, or a plain value) passes through.
    """
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in search_space.items():
        if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int | float) for v in spec):
            low, high = float(spec[0]), float(spec[1])
            if not 0 < low < high:
                raise ConfigError(f"search space: {key}={spec!r} needs 0 < low < high for a log-uniform range")
            out[key] = tune.loguniform(low, high)
        elif isinstance(spec, list):
            out[key] = tune.choice(spec)
        else:
            out[key] = spec
    return out


def ppo_trial(config: dict[str, Any], *, base: TrainConfig, cpus_per_trial: float, name: str) -> None:
    """One Tune trial: train, then report the score with the artifact as a checkpoint."""
    from ray import tune

    cfg = trial_config(base, config, cpus_per_trial=cpus_per_trial)
    trial_dir = Path(tune.get_context().get_trial_dir()).resolve()
    artifact_dir = trial_dir / "artifact"
    result = train(cfg, artifact_dir, log_dir=trial_dir / "train", stop_at_target=True, name=name)
    metrics = {
        "score": trial_score(result.best_gap),
        "seed": cfg.seed,
        "artifact": str(artifact_dir),
        "steps": result.steps,
        "wall_s": result.wall_s,
        "target_met": result.target_met,
        "best_gap": dict(result.best_gap),
    }
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(artifact_dir)))


def _connect(ray_address: str, num_cpus: int) -> bool:
    """Connect to (or start) Ray; return True when this call started it (so it shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if ray_address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=ray_address, log_to_driver=False)
    return True


def _summaries(results: Any, params_of: Sequence[str]) -> list[TrialSummary]:
    out = []
    for result in results:
        config = result.config or {}
        metrics = result.metrics or {}
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        out.append(
            TrialSummary(
                trial_id=str(metrics.get("trial_id", result.path)),
                seed=int(config.get("seed", -1)),
                params={k: config[k] for k in params_of if k in config},
                score=float(metrics.get("score", math.inf)) if error is None else math.inf,
                best_gap=dict(metrics.get("best_gap") or {}),
                steps=int(metrics.get("steps", 0)),
                wall_s=float(metrics.get("wall_s", 0.0)),
                target_met=bool(metrics.get("target_met", False)),
                artifact=str(metrics.get("artifact", "")),
                error=error,
            )
        )
    return out


def _collect(result: Any, summary: TrialSummary, out: Path) -> Artifact:
    """Copy the best trial's artifact into ``out`` (from its checkpoint; else from its folder) and verify it."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if result.checkpoint is not None:
        result.checkpoint.to_directory(str(tmp))
    elif summary.artifact and Path(summary.artifact).is_dir():
        shutil.copytree(summary.artifact, tmp)
    else:
        raise ConfigError(
            f"trial {summary.trial_id}: no checkpoint and no artifact folder {summary.artifact!r} on this node; "
            "give train_on_ray a storage_path every node shares"
        )
    # Tune's own bookkeeping is not part of the artifact, whose manifest lists every file it holds.
    (tmp / ".metadata.json").unlink(missing_ok=True)
    load_artifact(tmp)  # refuse to install a corrupt copy
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return load_artifact(out)


def train_on_ray(
    cfg: TrainConfig,
    out: Path,
    *,
    ray_address: str,
    log_dir: Path,
    num_samples: int = 4,
    seeds: Sequence[int] | None = None,
    search_space: Mapping[str, Any] | None = None,
    cpus_per_trial: float = 1.0,
    max_concurrent_trials: int | None = None,
    storage_path: str | None = None,
    num_cpus: int = LOCAL_NUM_CPUS,
    name: str = "default",
    verbose: int = 1,
) -> DistributedResult:
    """Train ``len(seeds) x num_samples`` trials on Ray; copy the best artifact (lowest score) into ``out``.

    :param cfg: the base config of every trial; each overrides its seed and sampled fields.
    :param out: artifact folder for the winner (``model.zip`` + ``manifest.json``), replaced atomically.
    :param ray_address: ``local`` starts Ray here with ``num_cpus``; anything else is passed to
        ``ray.init(address=...)`` (``auto``, ``ray://head:10001``). An already initialised Ray is used as is.
    :param log_dir: Tune's results go to ``log_dir/tune`` unless ``storage_path`` is given.
    :param num_samples: configurations drawn from ``search_space``; each is trained with every seed.
        Ignored (1) with an empty search space, where repeats would be identical trials.
    :param seeds: seeds trained for each configuration (a grid); default ``[cfg.seed]``.
    :param search_space: TrainConfig field -> ``(low, high)`` (log-uniform), a list (choice) or a Tune
        domain; default :data:`DEFAULT_SEARCH_SPACE`; ``{}`` for a seeds-only run.
    :param cpus_per_trial: Ray CPUs per trial, and the trial's torch threads.
    :param max_concurrent_trials: cap on trials running at once (default: as many as the CPUs allow).
    :param storage_path: Tune's storage; on a multi-node cluster a shared folder or a cloud URI.
    :param num_cpus: CPUs of the local Ray (``ray_address='local'`` only).
    :param name: name recorded in every trial's manifest.
    :param verbose: Tune's console verbosity (0 silent, 1 status, 2 trial results).
    :raises ConfigError: bad seeds or search space, or every trial failed.
    """
    from ray import tune

    space = dict(DEFAULT_SEARCH_SPACE if search_space is None else search_space)
    check_search_space(space)
    seed_list = [int(s) for s in (seeds if seeds is not None else [cfg.seed])]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds={seed_list}: give at least one seed, each once")
    if num_samples < 1:
        raise ConfigError(f"num_samples={num_samples}: draw at least 1 configuration")
    if not space and num_samples > 1:
        warnings.warn(
            f"num_samples={num_samples} with an empty search space would repeat identical trials; running 1",
            stacklevel=2,
        )
        num_samples = 1
    started = _connect(ray_address, num_cpus)
    try:
        storage = storage_path or str((Path(log_dir) / "tune").resolve())
        trainable = tune.with_resources(
            tune.with_parameters(ppo_trial, base=cfg, cpus_per_trial=cpus_per_trial, name=name),
            {"cpu": cpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": tune.grid_search(seed_list), **tune_space(space)},
            tune_config=tune.TuneConfig(
                metric="score",
                mode="min",
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=f"rlctl-train-{name}", storage_path=storage, verbose=verbose),
        )
        grid = tuner.fit()
        results = [grid[i] for i in range(len(grid))]
        summaries = _summaries(results, sorted(space))
        ok = [i for i, s in enumerate(summaries) if s.error is None]
        if not ok:
            errors = "; ".join(f"{s.trial_id}: {s.error}" for s in summaries)
            raise ConfigError(f"every one of the {len(summaries)} Ray trials failed: {errors}")
        # Ties (all +inf without validation) go to the lowest seed, then the first trial: deterministic.
        best_i = min(ok, key=lambda i: (summaries[i].score, summaries[i].seed, i))
        best = summaries[best_i]
        artifact = _collect(results[best_i], best, out)
        log.info("best of %d trials: seed %d score %s -> %s", len(summaries), best.seed, best.score, out)
        return DistributedResult(artifact=artifact, best=best, trials=summaries)
    finally:
        if started:
            import ray

            ray.shutdown()


__all__ = ["DEFAULT_SEARCH_SPACE", "DistributedResult", "TrialSummary", "train_on_ray", "trial_config", "trial_score"]
