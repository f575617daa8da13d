"""Evaluation: run controllers on scenarios in the simulator and score them side by side.

Every (scenario, seed) pair is one row of a :class:`envs.sim.ServiceBatch`, so a whole
suite runs in one batched simulation per controller. Scores per scenario and controller are
those of :mod:`rlctl.scoring` (the same for ``chaos run`` and ``validate-real``): SLO-violation
seconds, replica-seconds, core-seconds, actions and flaps per hour, recovery seconds after
each fault; plus the mean reward.

``hpa-tuned`` is the HPA with its CPU target picked per scenario by a hindsight sweep
over 0.3-0.9 in steps of 0.025 (whole percents), scored by the environment's own reward (the objective the policy is
trained on), as Autothrottle tuned its baselines. ``oracle`` knows the future load and
faults: per step it runs the fewest replicas that meet the SLO (where none can, the fewest
within 5 % of the best P99), started early enough to be ready, with the best static runtime
knobs in hindsight (of :func:`oracle_runtimes`: Go's defaults, or GOGC 200-800 with large pools),
plus the fewest extra replicas that remove
the misses its own rollout shows (:func:`oracle_rollout`) — a lower bound on cost.
``oracle-reactive[-<headroom>]`` (:class:`ReactiveOracle`) has the same capacity model without
the foresight: it sizes for the last observed load, so it shows what any controller without a
forecast pays on a burst.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from chaos.spec import Scenario
from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies.base import Controller
from policies.oracle import (
    OracleController,
    _reactive_oracle,
    capacity_user,
    measure_capacity,
    oracle_rollout,
    prepare_oracle,
    tuned_hpa,
)
from policies.registry import make_baseline
from policies.rollout import RunResult, rollout

log = logging.getLogger(__name__)


# ------------------------------------------------------------------- evaluation


def scenario_slo(scenario: Scenario, config: EnvConfig) -> float:
    """The SLO a scenario is run and scored against: the one its file states, else the environment's.

    ``rlctl chaos run`` uses a scenario's own SLO; without this ``rlctl eval`` of the same file
    scored it against the environment's default and the two disagreed (e.g. 250 ms against 8 ms).
    A scenario that states none (every built-in suite's) keeps the caller's, e.g. training's.
    """
    return float(scenario.slo_p99_ms) if "slo_p99_ms" in scenario.model_fields_set else config.slo_p99_ms


def evaluate(
    controllers: list[Controller | str],
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, list[RunResult]]]]:
    """Evaluate controllers (objects or baseline names) on scenarios; returns (report, runs).

    ``report["scenarios"][name]["controllers"][controller]`` holds the mean scores over
    seeds (and ``per_seed``); ``runs[scenario][controller]`` the raw results.
    Each scenario runs against :func:`scenario_slo` (its entry says so where that is not
    ``config``'s). ``on_progress(done, total, what)`` is called before each batch of (controller,
    scenarios of one duration and SLO) and once at the end; ``done`` and ``total`` count scenario runs per seed set.
    """
    base, default_slo = config, config.slo_p99_ms
    runs: dict[str, dict[str, list[RunResult]]] = {s.name: {} for s in scenarios}
    groups: dict[tuple[float, float], list[Scenario]] = {}
    for s in scenarios:
        groups.setdefault((s.duration_s, scenario_slo(s, config)), []).append(s)
    total = len(scenarios) * len(controllers)
    done = 0
    for (_, slo), group in groups.items():
        config = dataclasses.replace(base, slo_p99_ms=slo)
        for c in controllers:
            if on_progress is not None:
                label = c if isinstance(c, str) else c.name
                on_progress(done, total, f"{label} on {len(group)} scenario(s) of {group[0].duration_s:g} s")
            done += len(group)
            if c == "hpa-tuned":
                best, _ = tuned_hpa(group, seeds, config, profile)
                for name, rs in best.items():
                    runs[name]["hpa-tuned"] = rs
                continue
            ctrl = make_baseline(c, config, profile) if isinstance(c, str) else c
            reactive = _reactive_oracle(ctrl)
            if reactive is not None:
                # The guard's rollout prepares the plan of the oracle it wraps.
                plan = lambda _ctrl, batch, oracle=reactive: prepare_oracle(oracle, batch)  # noqa: E731
                results = rollout(ctrl, group, seeds, config, profile, prepare=plan)
            elif isinstance(ctrl, OracleController):
                results = oracle_rollout(ctrl, group, seeds, config, profile)
            elif capacity_user(ctrl) is not None:
                results = rollout(ctrl, group, seeds, config, profile, prepare=measure_capacity)
            else:
                results = rollout(ctrl, group, seeds, config, profile)
            for r in results:
                runs[r.scenario].setdefault(ctrl.name, []).append(r)
    if on_progress is not None:
        on_progress(total, total, "scoring")
    report: dict[str, Any] = {"slo_p99_ms": default_slo, "seeds": seeds, "scenarios": {}}
    for s in scenarios:
        entry: dict[str, Any] = {"kind": s.kind, "duration_s": s.duration_s, "controllers": {}}
        if scenario_slo(s, base) != default_slo:
            entry["slo_p99_ms"] = scenario_slo(s, base)
        for name, rs in runs[s.name].items():
            entry["controllers"][name] = aggregate(rs)
        report["scenarios"][s.name] = entry
    report["summary"] = summarize(report)
    return report, runs


def aggregate(results: list[RunResult]) -> dict[str, Any]:
    """Mean of the scores over seeds, with the per-seed values."""
    keys = [k for k in results[0].scores if all(isinstance(r.scores[k], (int, float)) for r in results)]
    out: dict[str, Any] = {k: float(np.mean([r.scores[k] for r in results])) for k in keys}
    rec = [r.scores["recovery_seconds"] for r in results]
    out["recovery_seconds"] = [float(np.mean(col)) for col in zip(*rec, strict=True)] if rec and rec[0] else []
    out["reward"] = float(np.mean([r.reward for r in results]))
    out["per_seed"] = {k: [r.scores[k] for r in results] for k in ("slo_violation_s", "replica_seconds")}
    return out


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Totals per scenario kind and controller, and ratios of each controller to hpa-tuned."""
    totals: dict[str, dict[str, dict[str, float]]] = {}
    for entry in report["scenarios"].values():
        kind = entry["kind"]
        for ctrl, sc in entry["controllers"].items():
            t = totals.setdefault(kind, {}).setdefault(
                ctrl, {"slo_violation_s": 0.0, "replica_seconds": 0.0, "core_seconds": 0.0}
            )
            for k in t:
                t[k] += sc[k]
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind, by_ctrl in totals.items():
        base = by_ctrl.get("hpa-tuned")
        if not base:
            continue
        for ctrl, t in by_ctrl.items():
            ratios.setdefault(kind, {})[ctrl] = {
                k: (t[k] / base[k] if base[k] > 0 else (None if t[k] > 0 else 1.0)) for k in t
            }
    return {"totals": totals, "vs_hpa_tuned": ratios}
