"""PPO training under chaos domain randomisation.

Each episode of each of the ``n_envs`` simulated services draws a scenario — a random
load shape (steady, diurnal, ramp, step, flash crowd, NASA trace replay) with a random
fault schedule over every fault kind, or one of the ``train`` suite's scenarios — and a
service profile randomised around the base profile. Every ``eval_every`` rollouts the
current policy is evaluated on the ``validation`` suite against ``hpa-tuned`` (computed
once); training stops early once :func:`target_met` holds, and the best policy so far is
kept as the artifact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chaos.spec import Scenario
from envs.go_service import ENV_VERSION
from envs.profile import ServiceProfile
from envs.scenarios import random_scenario
from envs.sim import EnvConfig, RewardWeights, ServiceBatch, nominal_capacity_qps, slo_capacity_qps
from envs.vec import GoServiceVecEnv
from policies.artifact import Artifact, load_artifact, save_artifact
from policies.base import Controller, FloatArray
from policies.evaluate import evaluate
from policies.guard import GuardConfig, SLOGuard
from policies.ppo import ModelController
from policies.pretrain import PretrainConfig, behaviour_clone, collect
from policies.residual import RuleConfig, RuleState, residual_target
from policies.suites import train_suite, validation_suite
from rlctl.contract import NOOP_ACTION, FeatureSpec, KnobBounds
from rlctl.errors import ConfigError
from rlctl.inputs import load_yaml_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """PPO and domain-randomisation settings. Defaults reach the target on 2 CPU cores."""

    total_timesteps: int = 6_000_000
    """Environment steps (service-steps over all parallel services) at most."""
    n_envs: int = 64
    """Simulated services stepped together (one numpy call)."""
    n_steps: int = 128
    """Steps per service per rollout: a rollout holds n_envs x n_steps samples."""
    batch_size: int = 4096
    """Minibatch size for the PPO update."""
    n_epochs: int = 5
    learning_rate: float = 1e-4
    gamma: float = 0.99
    """About an 8-minute horizon at 5 s per step: long enough to see a replica start."""
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.001
    vf_coef: float = 0.5
    net_arch: tuple[int, ...] = (128, 128)
    noop_prior: float = 2.0
    """Initial logit bonus for "keep" on every action dimension, so the untrained policy
    explores around doing nothing instead of flipping turbo and prefetch every step."""
    toggle_prior: float = 3.0
    """The same bonus for the two toggles (prefetch, turbo), which flap when chosen twice."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this for the learner (returns of order 10, not 1000)."""
    pretrain_episodes: int = 128
    """Service-episodes of oracle demonstrations for the behaviour-cloning warm start (0: none)."""
    pretrain_epochs: int = 6
    init_policy: str = ""
    """Fine-tune: start from this artifact's weights (a name under ``policies/artifacts`` or a
    path) instead of the behaviour-cloning warm start. Same ``net_arch`` required."""
    randomize_profile: float = 0.6
    """Profile randomisation, 0 (none) to 1 (the full ranges of ``envs.profile.RANDOMIZATION``)."""
    suite_fraction: float = 0.3
    """Share of episodes that replay a ``train`` suite scenario instead of a random one."""
    guard: bool = False
    """Train under the SLO guard (``policies.guard``): the guard raises the replicas the
    learner's actions ask for, as it does in production, and the policy is evaluated (and
    must be run) with it."""
    residual: bool = False
    """Train a residual policy over the capacity rule (``policies.residual``): the replica
    action is an offset from ``ceil(load x residual_headroom / capacity)`` (stabilised 300 s),
    the other knobs step as usual. No behaviour-cloning warm start (the no-op prior starts
    it at the rule)."""
    residual_headroom: float = 1.0
    capacity_error: float = 0.1
    """Sigma of the log-normal error on each training service's measured capacity."""
    freeze_runtime: bool = False
    """Hold the runtime knobs at their initial values (Go's defaults): only replicas move
    (the ablation of the tuning half of the action space)."""
    eval_every: int = 25
    """Rollouts between evaluations on the validation suite (0: never)."""
    eval_seeds: int = 2
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 2
    env: EnvConfig = field(default_factory=EnvConfig)
    profile: ServiceProfile = field(default_factory=ServiceProfile)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["net_arch"] = list(self.net_arch)
        return d

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Read a YAML/JSON mapping of top-level fields; unknown keys are an error."""
        data = load_yaml_file(path, what="training config") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config is a mapping of field: value")
        names = {f.name for f in dataclasses.fields(cls)} - {"env", "profile"}
        unknown = set(data) - names - {"reward"}
        if unknown:
            known = sorted(names | {"reward"})
            raise ConfigError(f"{path}: unknown training field(s) {sorted(unknown)}; known: {known}")
        if "net_arch" in data:
            data["net_arch"] = tuple(data["net_arch"])
        if "reward" in data:
            data["env"] = dataclasses.replace(EnvConfig(), reward=_reward_weights(data.pop("reward"), path))
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})


def _reward_weights(data: Any, path: Path) -> RewardWeights:
    """``reward:`` of a training config: a mapping of :class:`RewardWeights` fields."""
    fields = {f.name for f in dataclasses.fields(RewardWeights)}
    if not isinstance(data, dict) or set(data) - fields:
        raise ConfigError(f"{path}: reward must map some of {sorted(fields)} to numbers, got {data!r}")
    try:
        weights = {k: float(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: reward weights must be numbers, got {data!r}") from None
    if any(not (np.isfinite(v) and v >= 0) for v in weights.values()):
        raise ConfigError(f"{path}: reward weights must be finite and >= 0, got {data!r}")
    return RewardWeights(**weights)


# ----------------------------------------------------------------------- targets

TARGETS = {
    "violation_ratio_bursty": 0.5,
    "violation_ratio_fault": 0.5,
    "violation_ratio_steady": 1.0,
    "replica_ratio_steady": 1.0,
    "replica_ratio_bursty": 1.0,
    "replica_ratio_fault": 1.0,
}
"""The bar of "The learned policy earns its place", per scenario kind; the cost over the oracle is
reported (``cost_over_oracle``) but no longer a target: the oracle sees the future."""


def target_gap(report: dict[str, Any], policy: str) -> dict[str, float]:
    """The figures the targets are about: ratios of the policy to hpa-tuned (and oracle)."""
    totals = report["summary"]["totals"]

    def tot(ctrl: str, key: str, kinds: tuple[str, ...] = ("steady", "bursty", "fault")) -> float:
        return sum(totals.get(k, {}).get(ctrl, {}).get(key, 0.0) for k in kinds)

    out: dict[str, float] = {}
    for kind in ("bursty", "fault", "steady"):
        base = tot("hpa-tuned", "slo_violation_s", (kind,))
        mine = tot(policy, "slo_violation_s", (kind,))
        # One minute (60 s) of slack so a near-zero baseline does not make a ratio meaningless.
        out[f"violation_ratio_{kind}"] = (mine + 60.0) / (base + 60.0)
        cost = tot("hpa-tuned", "replica_seconds", (kind,))
        if cost > 0:
            out[f"replica_ratio_{kind}"] = tot(policy, "replica_seconds", (kind,)) / cost
    out["replica_ratio"] = tot(policy, "replica_seconds") / max(tot("hpa-tuned", "replica_seconds"), 1e-9)
    oracle = tot("oracle", "replica_seconds")
    out["cost_over_oracle"] = tot(policy, "replica_seconds") / oracle if oracle > 0 else float("nan")
    return out


def target_met(gap: dict[str, float]) -> bool:
    return all(gap[k] <= v for k, v in TARGETS.items() if k in gap and np.isfinite(gap[k]))


def evaluation_env(cfg: TrainConfig) -> EnvConfig:
    """The environment the target is judged in: ``cfg.env`` with the default reward weights.

    The bar is ``rlctl eval``'s: ``hpa-tuned`` picks its CPU target per scenario by the default
    objective, not by the reward weights a run trains with (else a heavier SLO weight would
    also buy the baseline more replicas and move the bar)."""
    return dataclasses.replace(cfg.env, reward=RewardWeights())


def gap_score(gap: dict[str, float]) -> float:
    """One number to rank checkpoints: the worst ratio against its target (<= 1 is met)."""
    return max(gap[k] / v for k, v in TARGETS.items() if k in gap and np.isfinite(gap[k]))


# ---------------------------------------------------------------------- training


def _scenario_source(cfg: TrainConfig) -> Any:
    suite = train_suite(cfg.profile, cfg.env.bounds.max_replicas, cfg.env.episode_s)

    def draw(rng: np.random.Generator, profile: ServiceProfile) -> Scenario:
        if rng.random() < cfg.suite_fraction:
            return suite[int(rng.integers(len(suite)))]
        cap = nominal_capacity_qps(profile)
        return random_scenario(rng, profile, cfg.env.episode_s, cfg.env.bounds.max_replicas, cap)

    return draw


class ResidualActions:
    """The training environment's action mapping (``envs.vec.ActionMap``) for a residual policy.

    At each new episode a service's capacity is measured off its own profile and knobs
    (:func:`envs.sim.slo_capacity_qps`) and multiplied by a log-normal error of
    ``capacity_error`` (sigma), so the policy learns to live with a capacity measured a
    little wrong, as ``rlctl probe``'s is.
    """

    def __init__(self, config: RuleConfig, capacity_error: float = 0.1, seed: int = 0) -> None:
        self.rule = RuleState(config)
        self.capacity_error = capacity_error
        self._rng = np.random.default_rng(seed)
        self.bounds: KnobBounds | None = None

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        self.bounds = bounds
        self.rule.reset(n, interval_s)

    def reset_rows(self, rows: npt.ArrayLike, batch: ServiceBatch) -> None:
        idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        prof = {k: v[idx] for k, v in batch.prof.items()}
        cap = slo_capacity_qps(prof, batch.knobs[idx], batch.config.slo_p99_ms, batch.config.dt_s)
        if self.capacity_error > 0:
            cap = cap * np.exp(self._rng.normal(0.0, self.capacity_error, size=len(idx)))
        self.rule.set_capacity(cap, idx)

    def target(self, actions: npt.NDArray[np.int64], windows: FloatArray, knobs: FloatArray) -> FloatArray:
        assert self.bounds is not None
        return residual_target(self.rule.replicas(windows, self.bounds), knobs, actions, self.bounds)


def make_model(cfg: TrainConfig, vec_env: Any, tensorboard_log: str | None = None) -> Any:
    """A PPO model on ``vec_env`` with the configured hyperparameters and the no-op prior."""
    import torch
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy",
        vec_env,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        policy_kwargs={"net_arch": list(cfg.net_arch), "activation_fn": torch.nn.Tanh},
        tensorboard_log=tensorboard_log,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
    )
    if cfg.noop_prior:
        with torch.no_grad():
            bias: Any = model.policy.action_net.bias
            offset = 0
            for i, (n, keep) in enumerate(zip(vec_env.action_space.nvec, NOOP_ACTION, strict=True)):
                bias[offset + keep] += cfg.toggle_prior if i >= 6 else cfg.noop_prior
                offset += int(n)
    return model


@dataclass
class TrainResult:
    artifact: Artifact | None
    steps: int
    wall_s: float
    env_steps_per_s: float
    target_met: bool
    time_to_target_s: float | None
    best_gap: dict[str, float]
    history: list[dict[str, Any]]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    cfg: TrainConfig,
    out_dir: Path | None = None,
    *,
    log_dir: Path | None = None,
    progress_bar: bool = False,
    stop_at_target: bool = True,
    name: str = "default",
) -> TrainResult:
    """Train PPO; write the best policy (by :func:`gap_score`) to ``out_dir``."""
    import torch  # local: torch and SB3 are the train extra, heavy
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    if cfg.freeze_runtime:
        cfg = dataclasses.replace(
            cfg, env=dataclasses.replace(cfg.env, bounds=dataclasses.replace(cfg.env.bounds, allow=("replicas",)))
        )
    env_cfg = dataclasses.replace(cfg.env, randomize_profile=cfg.randomize_profile)
    rule = RuleConfig(headroom=cfg.residual_headroom)
    vec = GoServiceVecEnv(
        cfg.n_envs,
        config=env_cfg,
        profile=cfg.profile,
        scenarios=_scenario_source(cfg),
        reward_scale=cfg.reward_scale,
        shield=SLOGuard(None, GuardConfig(slo_p99_ms=cfg.env.slo_p99_ms)) if cfg.guard else None,
        action_map=ResidualActions(rule, cfg.capacity_error, seed=cfg.seed) if cfg.residual else None,
    )
    vec.seed(cfg.seed)
    tb = str(log_dir / "tb") if log_dir else None
    model = make_model(cfg, vec, tensorboard_log=tb)
    pretrain_stats: dict[str, float] = {}
    if cfg.init_policy:
        start_from(model, cfg.init_policy)
    elif cfg.pretrain_episodes > 0 and not cfg.residual:
        demos = collect(vec, cfg.pretrain_episodes, cfg.reward_scale, cfg.gamma)
        pretrain_stats = behaviour_clone(model, demos, PretrainConfig(epochs=cfg.pretrain_epochs), seed=cfg.seed)
        vec.seed(cfg.seed + 1)

    val = validation_suite(cfg.profile, cfg.env.bounds.max_replicas, cfg.env.episode_s)
    bar_env = evaluation_env(cfg)
    seeds = list(range(1000, 1000 + cfg.eval_seeds))
    baseline_report: dict[str, Any] | None = None
    if cfg.eval_every:
        baseline_report, _ = evaluate(["hpa-tuned", "oracle"], val, seeds, bar_env, cfg.profile)
    work = Path(log_dir or Path("runs") / "train")
    work.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    state: dict[str, Any] = {"best": float("inf"), "best_gap": {}, "met_at": None, "best_zip": None}

    def evaluate_now(steps: int) -> dict[str, float]:
        assert baseline_report is not None
        ctrl: Controller = ModelController(model, cfg.env.slo_p99_ms, name="ppo", rule=rule if cfg.residual else None)
        if cfg.guard:
            ctrl = SLOGuard(ctrl, GuardConfig(slo_p99_ms=cfg.env.slo_p99_ms), name="ppo")
        report, _ = evaluate([ctrl], val, seeds, bar_env, cfg.profile)
        merged: dict[str, Any] = {"summary": {"totals": {}}}
        for kind in ("steady", "bursty", "fault"):
            merged["summary"]["totals"][kind] = {
                **baseline_report["summary"]["totals"].get(kind, {}),
                **report["summary"]["totals"].get(kind, {}),
            }
        gap = target_gap(merged, "ppo")
        score = gap_score(gap)
        history.append({"steps": steps, "wall_s": time.perf_counter() - start, **gap, "score": score})
        log.info("eval at %d steps: %s", steps, gap)
        if score < state["best"]:
            state["best"], state["best_gap"] = score, gap
            state["best_zip"] = work / "best_model.zip"
            model.save(state["best_zip"])
        return gap

    class EvalCallback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollouts = 0

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            self.rollouts += 1
            if not cfg.eval_every or self.rollouts % cfg.eval_every:
                return
            gap = evaluate_now(self.num_timesteps)
            for k, v in gap.items():
                self.logger.record(f"eval/{k}", v)
            if target_met(gap) and state["met_at"] is None:
                state["met_at"] = time.perf_counter() - start
                if stop_at_target:
                    self.model._rlctl_stop = True  # type: ignore[attr-defined]

    class StopCallback(BaseCallback):
        def _on_step(self) -> bool:
            return not getattr(self.model, "_rlctl_stop", False)

    if cfg.eval_every:
        evaluate_now(0)  # the warm start itself is a candidate
    model.learn(
        total_timesteps=cfg.total_timesteps,
        callback=CallbackList([EvalCallback(), StopCallback()]),
        progress_bar=progress_bar,
    )
    wall = time.perf_counter() - start
    steps = int(model.num_timesteps)
    if cfg.eval_every and (not history or history[-1]["steps"] != steps):
        evaluate_now(steps)
    final_zip = work / "final_model.zip"
    model.save(final_zip)
    artifact = None
    if out_dir is not None:
        chosen = state["best_zip"] or final_zip
        artifact = save_artifact(
            Path(out_dir),
            chosen,
            name=name,
            env_version=ENV_VERSION,
            config=_jsonable(cfg.to_dict()),
            seed=cfg.seed,
            bounds=cfg.env.bounds,
            features=FeatureSpec(slo_p99_ms=cfg.env.slo_p99_ms, window=cfg.env.window),
            scores={
                "validation_gap": state["best_gap"],
                "history": history,
                "steps": steps,
                "wall_s": wall,
                "pretrain": pretrain_stats,
            },
        )
    return TrainResult(
        artifact=artifact,
        steps=steps,
        wall_s=wall,
        env_steps_per_s=steps / wall if wall > 0 else 0.0,
        target_met=state["met_at"] is not None,
        time_to_target_s=state["met_at"],
        best_gap=state["best_gap"],
        history=history,
    )


def start_from(model: Any, policy: str) -> None:
    """Copy the weights of the artifact ``policy`` (verified) into ``model``."""
    source = load_artifact(policy).load_model(model.device)
    try:
        model.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(
            f"init_policy {policy!r}: its network does not match this run's net_arch {list(model.policy.net_arch)} "
            f"({first}); use the artifact's net_arch or train from scratch"
        ) from None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def policy_parameters(model: Any) -> dict[str, np.ndarray]:
    """The policy's parameters as numpy arrays (for determinism checks)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.policy.state_dict().items()}


__all__ = ["KnobBounds", "TrainConfig", "TrainResult", "target_gap", "target_met", "train"]
