"""Controllers run in the simulator: a batch of (scenario, seed) rows under one controller.

:func:`rollout` is the one simulated run of a controller, shared by evaluation
(:mod:`policies.evaluate`), the hindsight oracles (:mod:`policies.oracle`) and the sim chaos backend
(:mod:`chaos.backends.sim`); each row is scored by :mod:`rlctl.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaos.spec import Scenario
from envs.profile import ServiceProfile
from envs.sim import EnvConfig, ServiceBatch
from policies.base import Controller, FloatArray
from rlctl.contract import COL, KNOB_COL, KNOB_FIELDS
from rlctl.errors import ConfigError
from rlctl.scoring import knob_changes, score_run

SERIES = ("t_s", "offered_qps", "p99_ms", "replicas", "gomaxprocs", "gogc", "cores", "error_rate", "faults")


@dataclass
class RunResult:
    """One controller on one scenario with one seed: time series, knob changes and scores.

    ``changes`` lists every knob the controller changed, ``{"t_s", "knob", "from", "to"}``
    (:func:`rlctl.scoring.knob_changes`): the record a live backend keeps, so the sim backend
    passes it on and both count actions from the same list.
    """

    scenario: str
    controller: str
    seed: int
    series: dict[str, FloatArray]
    reward: float
    scores: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)


def rollout(
    controller: Controller,
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
    prepare: Any = None,
) -> list[RunResult]:
    """Run ``controller`` on every (scenario, seed) pair in one batch; returns one result per pair."""
    pairs = [(s, seed) for s in scenarios for seed in seeds]
    durations = {s.duration_s for s in scenarios}
    if len(durations) != 1:
        raise ConfigError(f"scenarios of one rollout must share a duration, got {sorted(durations)}")
    cfg = EnvConfig(**{**_config_dict(config), "episode_s": durations.pop()})
    batch = ServiceBatch(len(pairs), cfg)
    rngs = [np.random.default_rng([seed, _stable_hash(s.name)]) for s, seed in pairs]
    batch.reset_rows(np.arange(len(pairs)), [s for s, _ in pairs], [profile] * len(pairs), rngs)
    controller.reset(len(pairs), cfg.bounds, cfg.dt_s)
    if prepare is not None:
        prepare(controller, batch)
    t = cfg.n_steps
    rec = {k: np.zeros((len(pairs), t)) for k in SERIES}
    initial = batch.knobs.copy()
    knobs = np.zeros((len(pairs), t, len(KNOB_FIELDS)))
    total = np.zeros(len(pairs))
    for i in range(t):
        target = controller.decide(batch.window, batch.knobs.copy())
        tel, reward, fig = batch.advance(target)
        total += reward
        rec["t_s"][:, i] = (i + 1) * cfg.dt_s
        rec["offered_qps"][:, i] = tel[:, COL["offered_qps"]]
        rec["p99_ms"][:, i] = tel[:, COL["p99_ms"]]
        rec["replicas"][:, i] = batch.knobs[:, KNOB_COL["replicas"]]
        rec["gomaxprocs"][:, i] = batch.knobs[:, KNOB_COL["gomaxprocs"]]
        rec["gogc"][:, i] = batch.knobs[:, KNOB_COL["gogc"]]
        rec["cores"][:, i] = batch.last_cores
        rec["error_rate"][:, i] = tel[:, COL["error_rate"]]
        rec["faults"][:, i] = fig["faults_active"]
        knobs[:, i] = batch.knobs
    results = []
    for j, (s, seed) in enumerate(pairs):
        series = {k: v[j] for k, v in rec.items()}
        changes = knob_changes(knobs[j], initial[j], cfg.dt_s, KNOB_FIELDS)
        r = RunResult(s.name, controller.name, seed, series, float(total[j]), changes=changes)
        r.scores = score_run(
            t_s=series["t_s"], dt_s=cfg.dt_s, offered_qps=series["offered_qps"], p99_ms=series["p99_ms"],
            replicas=series["replicas"], slo_p99_ms=cfg.slo_p99_ms, changes=changes,
            windows=[(w.start_s, w.end_s) for w in s.windows()], cores=series["cores"],
            error_rate=series["error_rate"],
        )  # fmt: skip
        results.append(r)
    return results


def _config_dict(config: EnvConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _stable_hash(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
