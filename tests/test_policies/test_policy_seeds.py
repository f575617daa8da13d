"""A residual artifact as it ships (guard included, capacity required) and the judge over training seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies.guard import SLOGuard
from policies.ppo import PPOController, load_policy
from policies.seeds import artifact_paths, iqm, iqm_interval, judge
from policies.suites import get_suite
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY, KnobBounds, Knobs, clamp_array
from rlctl.errors import ConfigError
from rlctl.online.policy import ActRequest, PolicyModel, PolicyUnavailable, placeholder_artifact

RESIDUAL = {"residual": True, "guard": True, "residual_headroom": 1.0, "env": {"dt_s": 5.0}}


@pytest.fixture(scope="module")
def residual_artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("seeds")
    return [placeholder_artifact(root / f"seed{s}", seed=s, net_arch=(16, 16), config=RESIDUAL) for s in (0, 1)]


def test_iqm_is_the_mean_of_the_middle_half_and_its_interval_holds_it() -> None:
    values = [0.1, 0.5, 0.6, 0.7, 0.8, 9.0, 0.55, 0.65]
    assert iqm(values) == pytest.approx(np.mean(sorted(values)[2:6]))
    low, high = iqm_interval(values)
    assert low <= iqm(values) <= high
    assert iqm_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))


def test_an_artifact_trained_under_the_guard_ships_under_it_with_one_name(residual_artifacts: list[Path]) -> None:
    ctrl = load_policy(residual_artifacts[0])
    assert isinstance(ctrl, SLOGuard)
    assert ctrl.name == "ppo:placeholder-untrained"
    assert getattr(ctrl.inner, "needs_capacity", False)
    plain = placeholder_artifact(residual_artifacts[0].parent / "plain", net_arch=(16, 16))
    assert isinstance(load_policy(plain), PPOController)


def test_eval_refuses_a_second_guard_on_a_policy_trained_under_one(residual_artifacts: list[Path]) -> None:
    from rlctl.commands.policy import _parse_controllers

    with pytest.raises(ConfigError, match="trained under the SLO guard"):
        _parse_controllers(str(residual_artifacts[0]), [], guard=True)


def test_the_online_residual_policy_needs_a_capacity_and_stays_within_two_of_the_rule(
    residual_artifacts: list[Path],
) -> None:
    model = PolicyModel(residual_artifacts[0])
    assert model.window == 60  # the rule's 300 s look-back at 5 s
    window = np.zeros((60, N_TELEMETRY))
    window[:, COL["offered_qps"]] = 1000.0
    window[10, COL["offered_qps"]] = 4100.0  # a peak 250 s ago still counts
    window[:, COL["p99_ms"]] = 3.0
    knobs = clamp_array(np.array([3, 2, 100, 8192, 256, 16, 1, 1], dtype=float), KnobBounds())[None]
    with pytest.raises(PolicyUnavailable, match="capacity_qps"):
        model.decide([window], knobs)
    decision = model.decide([window], knobs, capacities=[500.0])[0]
    rule = 9  # ceil(4100 / 500)
    assert rule - 2 <= decision.target_knobs[KNOB_COL["replicas"]] <= rule + 2


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), float("inf"), 1e9])
def test_a_request_capacity_must_be_a_finite_positive_rate(bad: float) -> None:
    body = {"service": "s", "window": [[0.0] * N_TELEMETRY], "knobs": Knobs().to_dict(), "capacity_qps": bad}
    with pytest.raises(ValidationError, match="capacity_qps"):
        ActRequest.model_validate(body)


@pytest.mark.slow  # evaluates several artifacts over the validation suite
def test_judge_reports_iqm_and_interval_per_ratio_and_reversals(residual_artifacts: list[Path]) -> None:
    config, profile = EnvConfig(), ServiceProfile()
    scenarios = get_suite("smoke", profile, config.bounds.max_replicas)
    assert artifact_paths([residual_artifacts[0].parent])[-2:] == residual_artifacts  # a folder of artifacts
    controllers = [load_policy(p, name=f"ppo:{p.name}") for p in artifact_paths(residual_artifacts)]
    report = judge(controllers, scenarios, [0, 1], config, profile)
    assert report["pairs"] == 4
    kinds = {s.kind for s in scenarios}
    for kind in kinds:
        fig = report["figures"][f"replica_s_{kind}"]
        assert fig["n"] == 4
        assert fig["ci95"][0] <= fig["iqm"] <= fig["ci95"][1]
        assert fig["min"] <= fig["median"] <= fig["max"]
    assert set(report["policies"]) == {"ppo:seed0", "ppo:seed1"}
    with pytest.raises(ConfigError, match="distinct names"):
        judge([controllers[0], controllers[0]], scenarios, [0], config, profile)


def test_a_policy_trained_with_frozen_knobs_moves_only_the_knobs_it_was_trained_to_move(tmp_path: Path) -> None:
    frozen = placeholder_artifact(tmp_path / "frozen", net_arch=(16, 16), bounds=KnobBounds(allow=("replicas",)))
    ctrl = PPOController(frozen)
    ctrl.reset(1, KnobBounds(), 5.0)  # an evaluation that allows every knob
    assert ctrl.bounds.allow == ("replicas",)
    knobs = clamp_array(np.array([3, 2, 100, 8192, 256, 16, 1, 1], dtype=float), KnobBounds())[None]
    for _ in range(20):
        out = ctrl.decide(np.zeros((1, 12, N_TELEMETRY)), knobs)
        assert np.array_equal(out[0, 1:], knobs[0, 1:])
