"""Benchmarks measured against a reference run in the same process (the machine is noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rlctl.contract import ACTION_NVEC


def _rate(step: Callable[[], int], seconds: float) -> float:
    """Units per second of ``step`` (which returns how many units it did), after a warm-up."""
    step()
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done / elapsed


def bench_env(batch: int = 256, seconds: float = 6.0, seed: int = 0, rounds: int = 3) -> dict[str, Any]:
    """Single-env steps/s (``gym.make``, random actions), batched service-steps/s, CartPole-v1 steps/s.

    The three are measured in ``rounds`` interleaved rounds of ``seconds / rounds`` each and
    reported as medians over the rounds (the ratios as the median of each round's ratio), so
    a neighbour that slows the shared host for a while moves all three alike.
    """
    import statistics

    import gymnasium as gym
    import numpy as np

    import envs  # local: the simulator's package imports gymnasium, heavy
    from envs.vec import GoServiceVecEnv  # local: the simulator's package imports gymnasium, heavy

    env = gym.make(envs.ENV_ID)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(1024)]

    def single() -> int:
        for a in actions[:200]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        return 200

    vec = GoServiceVecEnv(batch, seed=seed)
    vec.reset()
    rng = np.random.default_rng(seed)
    nvec = np.asarray(ACTION_NVEC)
    vec_actions = [rng.integers(0, nvec, size=(batch, len(nvec))) for _ in range(8)]
    i = 0

    def batched() -> int:
        nonlocal i
        for _ in range(10):
            vec.step(vec_actions[i % len(vec_actions)])
            i += 1
        return 10 * batch

    cart = gym.make("CartPole-v1")
    cart.reset(seed=seed)
    cart.action_space.seed(seed)

    def cartpole() -> int:
        for _ in range(1000):
            _, _, term, trunc, _ = cart.step(cart.action_space.sample())
            if term or trunc:
                cart.reset()
        return 1000

    per_round = seconds / rounds
    measured: list[tuple[float, float, float]] = [
        (_rate(single, per_round), _rate(batched, per_round), _rate(cartpole, per_round)) for _ in range(rounds)
    ]
    single_rate, batched_rate, cart_rate = (statistics.median(col) for col in zip(*measured, strict=True))
    return {
        "single_env_steps_per_s": round(single_rate, 1),
        "batched_service_steps_per_s": round(batched_rate, 1),
        "batch_size": batch,
        "cartpole_steps_per_s": round(cart_rate, 1),
        "single_over_cartpole": round(statistics.median(s / c for s, _, c in measured), 4),
        "batched_over_cartpole": round(statistics.median(b / c for _, b, c in measured), 3),
        "rounds": rounds,
    }
