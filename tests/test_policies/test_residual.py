"""The capacity rule and the residual policy over it (policies/residual.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.model.faults import effects_table
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile, randomize, stack_profiles
from envs.sim import EnvConfig, slo_capacity_qps
from envs.vec import GoServiceVecEnv
from policies.evaluate import evaluate
from policies.residual import CapacityRule, RuleConfig, RuleState, residual_target, rule_span, window_replicas
from policies.train import ResidualActions
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY, NOOP_ACTION, KnobBounds, clamp_array
from rlctl.errors import ConfigError

CFG = EnvConfig()
BOUNDS = CFG.bounds


def _p99(prof: dict[str, np.ndarray], knobs: np.ndarray, replicas: float, load: float) -> float:
    k = knobs.copy()[None]
    k[:, KNOB_COL["replicas"]] = replicas
    state = ServiceState.initial(prof)
    state.temp_c[:] = prof["t_amb_c"] + 40.0
    for _ in range(2):
        out = step_services(prof, k, np.array([replicas]), np.array([load]), effects_table([], 1, 5.0), state, 0.0, 5.0)
        state.backlog[:] = 0.0
    return float(out.telemetry[0, COL["p99_ms"]])


def test_capacity_is_the_load_where_p99_reaches_ninety_percent_of_the_slo_for_any_replica_count() -> None:
    rng = np.random.default_rng(3)
    profiles = [ServiceProfile()] + [randomize(ServiceProfile(), rng, 0.6) for _ in range(3)]
    knobs = clamp_array(CFG.initial_knobs.to_array(), BOUNDS)
    caps = slo_capacity_qps(stack_profiles(profiles), np.tile(knobs, (4, 1)), CFG.slo_p99_ms, CFG.dt_s)
    for profile, cap in zip(profiles, caps, strict=True):
        prof = stack_profiles([profile])
        for replicas in (1.0, 3.0, 8.0):
            assert _p99(prof, knobs, replicas, replicas * cap) <= 0.9 * CFG.slo_p99_ms
            assert _p99(prof, knobs, replicas, replicas * cap * 1.15) > 0.9 * CFG.slo_p99_ms


def _windows(loads: np.ndarray) -> np.ndarray:
    w = np.zeros((1, len(loads), N_TELEMETRY))
    w[0, :, COL["offered_qps"]] = loads
    return w


def test_the_stateless_rule_of_the_online_path_equals_the_stateful_one_of_the_simulator() -> None:
    config = RuleConfig(headroom=1.2, stabilise_s=60.0)
    span = rule_span(config, 5.0)
    assert span == 12
    rng = np.random.default_rng(0)
    loads = rng.uniform(0, 9000, 200)
    loads[50] = np.nan  # a missing sample reads as no load, in both
    state = RuleState(config)
    state.reset(1, 5.0)
    state.set_capacity([1000.0])
    for i in range(len(loads)):
        stateful = state.replicas(_windows(loads[i : i + 1]), BOUNDS)
        stateless = window_replicas(_windows(loads[: i + 1]), [1000.0], config, 5.0, BOUNDS)
        assert stateful == stateless, i


def test_the_rule_scales_up_at_once_and_down_only_after_its_window() -> None:
    rule = CapacityRule(RuleConfig(stabilise_s=30.0))
    rule.reset(1, BOUNDS, 5.0)
    rule.set_capacity([500.0])
    knobs = clamp_array(CFG.initial_knobs.to_array(), BOUNDS)[None]
    got = [rule.decide(_windows(np.array([q])), knobs)[0, KNOB_COL["replicas"]] for q in [900] * 3 + [2600] + [900] * 7]
    # ceil(900 / 500) = 2, ceil(2600 / 500) = 6 held for the 30 s window (6 samples), then 2.
    assert got == [2, 2, 2, 6, 6, 6, 6, 6, 6, 2, 2]
    assert rule.decide(_windows(np.array([1e9])), knobs)[0, KNOB_COL["replicas"]] == BOUNDS.max_replicas


def test_a_rule_without_capacities_or_with_bad_ones_is_refused() -> None:
    rule = CapacityRule()
    rule.reset(2, BOUNDS, 5.0)
    with pytest.raises(ConfigError, match="no capacity set"):
        rule.decide(np.zeros((2, 3, N_TELEMETRY)), np.zeros((2, 8)))
    with pytest.raises(ConfigError, match="finite and > 0"):
        rule.set_capacity([100.0, float("nan")])
    with pytest.raises(ConfigError, match="headroom must be in"):
        RuleConfig(headroom=0.5)


def test_residual_actions_offset_the_rule_and_step_the_other_knobs() -> None:
    knobs = clamp_array(CFG.initial_knobs.to_array(), BOUNDS)[None]
    rule = np.array([5.0])
    noop = np.array([NOOP_ACTION])
    assert residual_target(rule, knobs, noop, BOUNDS)[0, KNOB_COL["replicas"]] == 5
    up2 = noop.copy()
    up2[0, 0] = NOOP_ACTION[0] + 2
    up2[0, KNOB_COL["gogc"]] = NOOP_ACTION[KNOB_COL["gogc"]] + 1
    out = residual_target(rule, knobs, up2, BOUNDS)
    assert out[0, KNOB_COL["replicas"]] == 7  # an offset from the rule, not a step from the current 2
    assert out[0, KNOB_COL["gogc"]] > knobs[0, KNOB_COL["gogc"]]
    frozen = dataclasses.replace(BOUNDS, allow=("replicas",))
    out = residual_target(rule, knobs, up2, frozen)
    assert out[0, KNOB_COL["gogc"]] == knobs[0, KNOB_COL["gogc"]]
    assert out[0, KNOB_COL["replicas"]] == 7


def test_in_training_a_noop_policy_is_the_rule_with_each_service_capacity_measured_off_its_profile() -> None:
    mapping = ResidualActions(RuleConfig(), capacity_error=0.0)
    env = GoServiceVecEnv(4, config=EnvConfig(episode_s=300.0), action_map=mapping, seed=1)
    env.reset()
    knobs = env.batch.knobs
    expected = slo_capacity_qps(env.batch.prof, knobs, CFG.slo_p99_ms, CFG.dt_s)
    assert np.allclose(mapping.rule.capacity, expected)
    noop = np.tile(np.array(NOOP_ACTION), (4, 1))
    for _ in range(5):
        load = env.batch.window[:, -1, COL["offered_qps"]]
        need = np.clip(np.ceil(load / expected - 1e-9), BOUNDS.min_replicas, BOUNDS.max_replicas)
        env.step(noop)
        assert np.all(env.batch.knobs[:, KNOB_COL["replicas"]] >= need)


def test_eval_measures_each_service_capacity_for_the_rule() -> None:
    from policies.suites import validation_suite

    suite = [s for s in validation_suite(ServiceProfile(), BOUNDS.max_replicas, CFG.episode_s) if s.kind == "steady"]
    report, _ = evaluate([CapacityRule()], suite[:1], [0], CFG, ServiceProfile())
    scores = report["scenarios"][suite[0].name]["controllers"]["capacity"]
    assert scores["replica_seconds"] > 0
    assert np.isfinite(scores["slo_violation_s"])


def test_a_bounds_object_limits_the_rule(bounds: KnobBounds = KnobBounds(max_replicas=4)) -> None:
    out = window_replicas(_windows(np.array([1e6])), [100.0], RuleConfig(), 5.0, bounds)
    assert out[0] == 4


def test_a_rule_with_fixed_runtime_knobs_sets_them_and_is_measured_at_them() -> None:
    from policies.oracle import measure_capacity, oracle_runtimes
    from policies.rollout import rollout
    from policies.suites import validation_suite

    tuned = oracle_runtimes(CFG)[-1]
    assert tuned.gogc > CFG.initial_knobs.gogc
    suite = [s for s in validation_suite(ServiceProfile(), BOUNDS.max_replicas, CFG.episode_s) if s.kind == "steady"]
    caps = {}
    for label, runtime in (("defaults", None), ("tuned", tuned)):
        rule = CapacityRule(runtime=runtime)
        results = rollout(rule, suite[:1], [0], CFG, ServiceProfile(), prepare=measure_capacity)
        caps[label] = float(rule.rule.capacity[0])
        gogc = results[0].series["gogc"]
        assert np.all(gogc == (tuned.gogc if runtime else CFG.initial_knobs.gogc))
    assert caps["tuned"] > caps["defaults"]  # GOGC 800 and the largest pools serve more per replica
