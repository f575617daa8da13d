"""Warm start for PPO: behaviour cloning of the hindsight oracle, then value regression.

PPO from a random policy spends millions of steps learning that replicas follow load.
Cloning the oracle — which scales each simulated service to the fewest replicas meeting
the SLO, early enough for them to start — gives that for a few seconds of compute;
PPO then fine-tunes from there on the reward. The oracle sees the future; the clone
cannot, so it learns the best response to the present window, which is what PPO
improves on. (Warm-starting RL from demonstrations: Hester et al., "Deep Q-learning
from Demonstrations", AAAI 2018; Rajeswaran et al., "DAPG", RSS 2018.)

Runtime knobs are left at "keep": the oracle uses fixed runtime knobs, and PPO learns
to move them where it pays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.sim import ServiceBatch
from policies.oracle import OracleController, prepare_oracle
from rlctl.contract import KNOB_COL, NOOP_ACTION, apply_array

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """How much demonstration data to collect and how long to fit it."""

    episodes: int = 64
    """Simulated service-episodes of oracle control (one hour each)."""
    epochs: int = 8
    batch_size: int = 4096
    learning_rate: float = 1e-3
    max_class_weight: float = 20.0
    """Cap on the inverse-frequency weight of a rare replica action."""
    fit_value: bool = True
    """Also regress the value head on the demonstrations' discounted returns."""


def collect(
    vec: Any, episodes: int, reward_scale: float, gamma: float, teacher: OracleController | None = None
) -> dict[str, np.ndarray]:
    """Roll the oracle out on ``episodes`` freshly drawn scenarios of ``vec``'s distribution."""
    obs_l, act_l, ret_l = [], [], []
    n_batches = max(1, int(np.ceil(episodes / vec.num_envs)))
    for _ in range(n_batches):
        vec.reset()
        batch: ServiceBatch = vec.batch
        oracle = teacher or OracleController()
        oracle.reset(batch.n, batch.config.bounds, batch.config.dt_s)
        prepare_oracle(oracle, batch)
        t = batch.config.n_steps
        obs = np.zeros((t, batch.n, vec.observation_space.shape[0]), dtype=np.float32)
        acts = np.tile(np.asarray(NOOP_ACTION, dtype=np.int64), (t, batch.n, 1))
        rews = np.zeros((t, batch.n))
        col = KNOB_COL["replicas"]
        for i in range(t):
            obs[i] = batch.observe()
            target = oracle.decide(batch.window, batch.knobs.copy())
            delta = np.clip(target[:, col] - batch.knobs[:, col], -2, 2)
            acts[i, :, 0] = (delta + 2).astype(np.int64)
            _, reward, _ = batch.advance(apply_array(batch.knobs, acts[i], batch.config.bounds))
            rews[i] = reward * reward_scale
        returns = np.zeros_like(rews)
        acc = np.zeros(batch.n)
        for i in range(t - 1, -1, -1):
            acc = rews[i] + gamma * acc
            returns[i] = acc
        obs_l.append(obs.reshape(-1, obs.shape[-1]))
        act_l.append(acts.reshape(-1, acts.shape[-1]))
        ret_l.append(returns.reshape(-1))
    return {"obs": np.concatenate(obs_l), "actions": np.concatenate(act_l), "returns": np.concatenate(ret_l)}


def behaviour_clone(model: Any, data: dict[str, np.ndarray], cfg: PretrainConfig, seed: int = 0) -> dict[str, float]:
    """Fit the policy to the demonstrations by maximum likelihood (and the value head to returns)."""
    import torch

    policy = model.policy
    policy.set_training_mode(True)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    obs = torch.as_tensor(data["obs"])
    acts = torch.as_tensor(data["actions"])
    rets = torch.as_tensor(data["returns"], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    # Scaling actions are rare (most steps keep): weight the replica dimension by inverse
    # class frequency, or the clone learns to never scale.
    counts = torch.bincount(acts[:, 0], minlength=5).float().clamp(min=1.0)
    class_w = (counts.sum() / (len(counts) * counts)).clamp(max=cfg.max_class_weight)
    weights = class_w[acts[:, 0]]
    n = len(obs)
    nll = vloss = 0.0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            dist = policy.get_distribution(obs[idx])
            parts = [d.log_prob(acts[idx, i]) for i, d in enumerate(dist.distribution)]
            loss_pi = -(weights[idx] * parts[0]).mean() - torch.stack(parts[1:]).sum(dim=0).mean()
            if cfg.fit_value:
                values = policy.predict_values(obs[idx]).flatten()
                loss_v = torch.nn.functional.mse_loss(values, rets[idx])
            else:
                loss_v = torch.zeros(())
            loss = loss_pi + 0.5 * loss_v
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
            nll, vloss = float(loss_pi.detach()), float(loss_v.detach())
    policy.set_training_mode(False)
    with torch.no_grad():
        dist = policy.get_distribution(obs[:20000])
        greedy = dist.get_actions(deterministic=True)
        sample = acts[:20000, 0]
        agree = float((greedy[:, 0] == sample).float().mean())
        moved = sample != 2
        agree_moves = float((greedy[moved, 0] == sample[moved]).float().mean()) if moved.any() else 1.0
    log.info("behaviour cloning: nll %.3f value mse %.3f agreement %.2f (on scaling steps %.2f)", nll, vloss, agree,
             agree_moves)  # fmt: skip
    return {"nll": nll, "value_mse": vloss, "replica_action_agreement": agree,
            "scaling_action_agreement": agree_moves, "samples": float(n)}  # fmt: skip
