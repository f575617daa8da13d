"""The SLO guard around a controller (policies/guard.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import invoke_rlctl

from envs.profile import ServiceProfile
from envs.sim import EnvConfig, nominal_capacity_qps
from envs.vec import GoServiceVecEnv
from policies.base import Controller, FloatArray
from policies.baselines import HPAController
from policies.guard import GuardConfig, SLOGuard
from policies.ppo import PPOController
from policies.registry import make_baseline
from policies.rollout import rollout
from policies.suites import validation_suite
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY, NOOP_ACTION, KnobBounds, Knobs
from rlctl.errors import ConfigError

R = KNOB_COL["replicas"]


class Fixed(Controller):
    """Asks for ``replicas + delta`` and GOGC 200, whatever it sees."""

    name = "ppo:fixed"

    def __init__(self, delta: float = 0.0) -> None:
        self.delta = delta

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = knobs.copy()
        out[:, R] += self.delta
        out[:, KNOB_COL["gogc"]] = 200
        return out


def window(p99s: list[float]) -> FloatArray:
    w = np.zeros((1, len(p99s), N_TELEMETRY))
    w[0, :, COL["p99_ms"]] = p99s
    return w


def knobs(replicas: float) -> FloatArray:
    k = Knobs(replicas=int(replicas)).to_array()[None, :]
    return k.astype(np.float64)


def guard(inner: Controller, **kw: float) -> SLOGuard:
    g = SLOGuard(inner, GuardConfig(**kw))  # type: ignore[arg-type]
    g.reset(1, KnobBounds(), 5.0)
    return g


def test_sustained_miss_adds_replicas_in_proportion_to_the_overshoot() -> None:
    g = guard(Fixed())
    assert g.decide(window([2, 2, 16, 16]), knobs(4))[0, R] == 8  # 2x the SLO: +100 %, capped at 4
    g = guard(Fixed())
    assert g.decide(window([2, 2, 9, 9]), knobs(4))[0, R] == 5  # just over: at least +1
    g = guard(Fixed())
    assert g.decide(window([2, 2, 2, 16]), knobs(4))[0, R] == 4  # one sample over is not sustained


def surge(loads: list[float], p99s: list[float], replicas: list[float]) -> FloatArray:
    w = window(p99s)
    w[0, :, COL["offered_qps"]] = loads
    w[0, :, COL["replicas"]] = replicas
    return w


def test_a_surge_of_load_scales_to_the_load_at_once_without_a_cooldown() -> None:
    g = guard(Fixed())
    # 3 replicas met the SLO at 1,000 qps; 3,300 qps misses it: ceil(3 x 3.3) = 10 at once.
    assert g.decide(surge([1000, 1000, 3300], [4, 4, 1000], [3, 3, 3]), knobs(3))[0, R] == 10
    # Still rising: the target follows the load; it is absolute, so asking again adds nothing.
    g = guard(Fixed(), after=5)  # (rule 1 out of the way)
    assert g.decide(surge([1000, 3300, 4000], [4, 1000, 1000], [3, 3, 10]), knobs(10))[0, R] == 12
    assert g.decide(surge([1000, 3300, 4000], [4, 1000, 1000], [3, 10, 12]), knobs(12))[0, R] == 12
    # Next to rule 1 the larger target wins: two misses add +100 % capped at 4 to 10 replicas.
    g = guard(Fixed())
    assert g.decide(surge([1000, 3300, 4000], [4, 1000, 1000], [3, 3, 10]), knobs(10))[0, R] == 14


def test_surge_asks_nothing_when_the_load_has_not_risen_or_the_slo_is_met() -> None:
    g = guard(Fixed())  # a fault: same load, one miss; rule 1 waits for a second
    assert g.decide(surge([1000, 1000, 1000], [4, 4, 30], [3, 3, 3]), knobs(3))[0, R] == 3
    g = guard(Fixed())
    assert g.decide(surge([1000, 1000, 3000], [4, 4, 7], [3, 3, 3]), knobs(3))[0, R] == 3
    g = guard(Fixed())  # no sample met the SLO: nothing to scale from
    assert g.decide(surge([1000, 1000, 3000], [30, 30, 30], [3, 3, 3]), knobs(3))[0, R] == 6  # rule 1 only: +100 %


def test_surge_after_sets_the_confirmation_and_zero_turns_it_off() -> None:
    w = surge([1000, 1000, 3300], [4, 4, 1000], [3, 3, 3])
    assert guard(Fixed(), surge_after=0).decide(w, knobs(3))[0, R] == 3
    assert guard(Fixed(), surge_after=2).decide(w, knobs(3))[0, R] == 3
    w2 = surge([1000, 3300, 3300], [4, 1000, 1000], [3, 3, 3])
    assert guard(Fixed(), surge_after=2).decide(w2, knobs(3))[0, R] == 10
    with pytest.raises(ConfigError):
        GuardConfig(surge_after=-1)


def test_waits_a_replica_start_before_adding_again() -> None:
    g = guard(Fixed())
    added = [g.decide(window([16, 16]), knobs(r))[0, R] - r for r in (4, 8, 8, 8, 8, 8, 8)]
    assert added == [4, 0, 0, 0, 0, 0, 4]  # 30 s cooldown at 5 s per decision


def test_no_scale_down_while_hot_and_a_floor_after_acting() -> None:
    g = guard(Fixed(delta=-2))
    assert g.decide(window([2, 7]), knobs(6))[0, R] == 6  # 7 ms > 0.75 x 8 ms: hold
    g = guard(Fixed(delta=-2), floor_s=20.0)
    assert g.decide(window([16, 16]), knobs(4))[0, R] == 8
    calm = [g.decide(window([2, 2]), knobs(8))[0, R] for _ in range(5)]
    assert calm == [8, 8, 8, 6, 6]  # the floor holds 20 s, then the inner controller's scale-down


def test_passes_the_inner_decision_through_when_calm() -> None:
    g = guard(Fixed(delta=-1))
    out = g.decide(window([2, 2, 3]), knobs(5))
    np.testing.assert_array_equal(out, Fixed(delta=-1).decide(window([2]), knobs(5)))
    assert g.name == "ppo+guard:fixed"


def test_bad_guard_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="after >= 1"):
        GuardConfig(after=0)
    with pytest.raises(ConfigError, match="floor_s must be >= 0"):
        GuardConfig(floor_s=-1)


@pytest.mark.slow  # the policy with and without the guard over a long simulated scenario
def test_guard_cuts_the_policys_misses_under_cpu_stress() -> None:
    profile = ServiceProfile()
    scenario = [s for s in validation_suite(profile) if s.name == "fault-stress"]
    config = EnvConfig()
    raw = rollout(PPOController("default"), scenario, [0], config, profile)[0].scores
    guarded = rollout(SLOGuard(PPOController("default")), scenario, [0], config, profile)[0].scores
    assert guarded["slo_violation_s"] < 0.5 * raw["slo_violation_s"]
    assert guarded["replica_seconds"] < 1.3 * raw["replica_seconds"]


def test_eval_guard_needs_a_policy() -> None:
    result = invoke_rlctl("eval", "--guard", "--baseline", "hpa")
    assert result.returncode == 2
    assert "--guard wraps the policy" in result.stderr
    result = invoke_rlctl("eval", "--safety", "--baseline", "hpa")
    assert result.returncode == 2
    assert "--safety wraps the policy" in result.stderr


class Flapper(Controller):
    """Asks for two replicas more, then two fewer, then two more, and so on."""

    name = "ppo:flapper"

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self.up = True

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = knobs.copy()
        out[:, R] += 2 if self.up else -2
        self.up = not self.up
        return out


def test_the_production_safety_layer_stops_a_flapping_policy_in_the_simulator() -> None:
    from policies.production import ThroughSafetyLayer
    from rlctl.online.safety import SafetyConfig

    profile = ServiceProfile()
    scenario = [s for s in validation_suite(profile) if s.kind == "steady"][:1]
    config = EnvConfig()
    raw = rollout(Flapper(), scenario, [0, 1], config, profile)
    safe_ctrl = ThroughSafetyLayer(Flapper())
    assert safe_ctrl.name == "ppo+safety:flapper"
    safe = rollout(safe_ctrl, scenario, [0, 1], config, profile)
    hold = SafetyConfig().scale_down_after_up_s
    for run in safe:
        reps = run.series["replicas"]
        ups = np.flatnonzero(np.diff(reps) > 0) + 1
        downs = np.flatnonzero(np.diff(reps) < 0) + 1
        # No scale-down within the hold after a scale-up (as rlctl control actuates).
        for d in downs:
            last_up = ups[ups < d]
            assert last_up.size == 0 or (d - last_up[-1]) * config.dt_s >= hold
    assert all(r.scores["flaps_per_hour"] < 0.5 * w.scores["flaps_per_hour"] for r, w in zip(safe, raw, strict=True))


def overloaded_vec(shield: SLOGuard | None) -> GoServiceVecEnv:
    """Two services at three times one replica's capacity, starting with one replica."""
    from chaos.spec import LoadSpec, Scenario

    profile = ServiceProfile()
    load = LoadSpec(kind="constant", qps=3 * nominal_capacity_qps(profile))
    config = EnvConfig(episode_s=300.0, initial_knobs=Knobs(replicas=1))
    scenarios = [Scenario(name="overload", load=load, duration_s=300.0)]
    vec = GoServiceVecEnv(2, config=config, profile=profile, scenarios=scenarios, seed=0, shield=shield)
    vec.reset()
    return vec


def test_the_training_env_applies_the_guard_to_the_learners_actions() -> None:
    keep = np.tile(np.asarray(NOOP_ACTION, dtype=np.int64), (2, 1))
    plain, shielded = overloaded_vec(None), overloaded_vec(SLOGuard(None))
    for _ in range(4):
        plain.step(keep)
        shielded.step(keep)
    assert (plain.batch.knobs[:, R] == 1).all()  # "keep" keeps one overloaded replica
    assert (shielded.batch.knobs[:, R] >= 2).all()  # the guard added replicas under the same actions
    shield = shielded.shield
    assert isinstance(shield, SLOGuard) and (shield._floor_left > 0).all()
    shielded._draw([1])  # a new episode on service 1 forgets its guard state, not service 0's
    assert shield._floor_left[0] > 0 and shield._floor_left[1] == 0 and shield._since[1] == np.inf


def test_a_guard_without_a_controller_only_shields() -> None:
    g = SLOGuard(None)
    assert g.name == "guard"
    g.reset(1, KnobBounds(), 5.0)
    with pytest.raises(TypeError, match="shield"):
        g.decide(window([2, 2]), knobs(3))
    assert g.shield(knobs(3), window([16, 16]), knobs(3))[0, R] == 6


@pytest.mark.slow  # three baselines over a long simulated scenario
def test_baselines_run_under_the_guard_for_a_fair_comparison() -> None:
    profile, config = ServiceProfile(), EnvConfig()
    guarded = make_baseline("hpa-0.8+guard", config, profile)
    assert isinstance(guarded, SLOGuard) and guarded.name == "hpa-0.8+guard"
    assert isinstance(guarded.inner, HPAController) and guarded.inner.config.target_cpu == 0.8
    scenario = [s for s in validation_suite(profile) if s.name == "fault-stress"]
    raw = rollout(make_baseline("hpa-0.8", config, profile), scenario, [0], config, profile)[0].scores
    shielded = rollout(guarded, scenario, [0], config, profile)[0].scores
    assert shielded["slo_violation_s"] < raw["slo_violation_s"]
    with pytest.raises(ConfigError, match=r"'hpa-tuned\+guard'.*hindsight.*hpa-0.6\+guard"):
        make_baseline("hpa-tuned+guard", config, profile)


def test_eval_refuses_a_guard_around_the_oracle() -> None:
    result = invoke_rlctl("eval", "--baseline", "oracle+guard", "--suite", "smoke", "--seeds", "1")
    assert result.returncode == 2
    assert "'oracle+guard'" in result.stderr and "hpa-0.6+guard" in result.stderr
