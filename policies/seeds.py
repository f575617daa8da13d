"""A learned controller judged over training seeds, as RL results are (Agarwal et al., NeurIPS'21).

Each trained artifact (one per training seed) runs on a suite with several evaluation seeds;
every (training seed, evaluation seed) pair gives one ratio per figure, to ``hpa-tuned`` on the
same scenarios and evaluation seed (where the tuned HPA has no violations on a kind, one
minute of slack on both sides). Reported per figure: the interquartile mean (IQM) of those
ratios, a 95 % bootstrap confidence interval of the IQM (``scipy.stats.bootstrap``, percentile,
resampling the pairs), the median and the range; and per artifact, the scenarios on which its
replica reversals per hour exceed the tuned HPA's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies.base import Controller
from policies.evaluate import RunResult, evaluate
from rlctl.errors import ConfigError

KINDS = ("steady", "bursty", "fault")
BASELINE = "hpa-tuned"


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (``scipy.stats.trim_mean`` at 0.25)."""
    return float(stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25))


def iqm_interval(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the IQM (10,000 resamples)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2 or np.ptp(arr) == 0:
        return float(arr.mean()), float(arr.mean())
    res = stats.bootstrap(
        (arr,),
        lambda x, axis: stats.trim_mean(x, 0.25, axis=axis),
        confidence_level=confidence,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pair_ratios(
    runs: dict[str, dict[str, list[RunResult]]], kinds: dict[str, str], policy: str, seeds: Sequence[int]
) -> dict[str, list[float]]:
    """Per evaluation seed, the policy's totals per kind over ``hpa-tuned``'s (violations and replica-s)."""
    out: dict[str, list[float]] = {}
    for seed in seeds:
        for kind in KINDS:
            names = [s for s, k in kinds.items() if k == kind]
            if not names:
                continue

            def total(ctrl: str, key: str, names: list[str] = names, seed: int = seed) -> float:
                return sum(r.scores[key] for s in names for r in runs[s][ctrl] if r.seed == seed)

            for key, label in (("slo_violation_s", "violations"), ("replica_seconds", "replica_s")):
                base = total(BASELINE, key)
                mine = total(policy, key)
                # Where the tuned HPA has none, one minute of slack (as the trainer's ratios) keeps it finite.
                ratio = mine / base if base > 0 else (mine + 60.0) / 60.0 if key == "slo_violation_s" else 1.0
                out.setdefault(f"{label}_{kind}", []).append(ratio)
    return out


def reversals_over_baseline(runs: dict[str, dict[str, list[RunResult]]], policy: str) -> dict[str, dict[str, float]]:
    """Scenarios where the policy's mean replica reversals per hour exceed the tuned HPA's."""
    out = {}
    for scenario, by_ctrl in runs.items():
        mine = float(np.mean([r.scores["flaps_per_hour"] for r in by_ctrl[policy]]))
        base = float(np.mean([r.scores["flaps_per_hour"] for r in by_ctrl[BASELINE]]))
        if mine > base:
            out[scenario] = {"policy": round(mine, 2), BASELINE: round(base, 2)}
    return out


def judge(
    controllers: Sequence[Controller],
    scenarios: list[Any],
    eval_seeds: Sequence[int],
    config: EnvConfig,
    profile: ServiceProfile,
) -> dict[str, Any]:
    """Run every controller (one per training seed) and ``hpa-tuned``; the IQM report (module docstring)."""
    if not controllers:
        raise ConfigError("judge: give at least one trained policy")
    names = [c.name for c in controllers]
    if len(set(names)) != len(names):
        raise ConfigError(f"judge: controllers need distinct names, got {names}")
    seeds = list(eval_seeds)
    _, runs = evaluate([BASELINE, *controllers], scenarios, seeds, config, profile)
    kinds = {s.name: s.kind for s in scenarios}
    pooled: dict[str, list[float]] = {}
    per_policy: dict[str, Any] = {}
    for name in names:
        ratios = pair_ratios(runs, kinds, name, seeds)
        for k, v in ratios.items():
            pooled.setdefault(k, []).extend(v)
        per_policy[name] = {
            "ratios_mean": {k: round(float(np.mean(v)), 4) for k, v in ratios.items()},
            "reversals_over_hpa_tuned": reversals_over_baseline(runs, name),
        }
    figures = {}
    for k, v in pooled.items():
        low, high = iqm_interval(v)
        figures[k] = {
            "iqm": round(iqm(v), 4),
            "ci95": [round(low, 4), round(high, 4)],
            "median": round(float(np.median(v)), 4),
            "min": round(float(np.min(v)), 4),
            "max": round(float(np.max(v)), 4),
            "n": len(v),
        }
    return {
        "baseline": BASELINE,
        "training_seeds": len(names),
        "eval_seeds": seeds,
        "pairs": len(names) * len(seeds),
        "figures": figures,
        "policies": per_policy,
    }


def artifact_paths(paths: Sequence[Path]) -> list[Path]:
    """The artifact folders among ``paths`` (a folder holding ``manifest.json``, or such folders inside)."""
    out: list[Path] = []
    for p in paths:
        if (p / "manifest.json").is_file():
            out.append(p)
            continue
        found = sorted(q.parent for q in p.glob("*/manifest.json"))
        if not found:
            raise ConfigError(f"{p}: neither an artifact folder (manifest.json) nor a folder of them")
        out.extend(found)
    return out
