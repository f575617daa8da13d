"""A residual policy on the production path: capacity required and carried, the trained guard kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException

from policies import registry
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY, KnobBounds, Knobs
from rlctl.errors import ConfigError
from rlctl.online.policy import ActRequest, InProcessPolicy, placeholder_artifact
from rlctl.online.serve import PolicyServer

RESIDUAL = {"residual": True, "guard": True, "residual_headroom": 1.0, "env": {"dt_s": 5.0}}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return placeholder_artifact(tmp_path_factory.mktemp("residual") / "a", net_arch=(16, 16), config=RESIDUAL)


def _window(n: int = 60, load: float = 2000.0) -> np.ndarray:
    w = np.zeros((n, N_TELEMETRY))
    w[:, COL["offered_qps"]] = load
    w[:, COL["p99_ms"]] = 3.0
    w[:, COL["replicas"]] = 2.0
    return w


def test_the_in_process_policy_refuses_to_start_without_a_capacity(artifact: Path) -> None:
    with pytest.raises(ConfigError, match="--capacity-qps"):
        InProcessPolicy(artifact)
    policy = InProcessPolicy(artifact, capacity_qps=400.0)
    assert policy.window == 60
    decision = policy.act("svc", _window(), Knobs().to_array())
    assert 3 <= decision.target_knobs[KNOB_COL["replicas"]] <= 7  # ceil(2000 / 400) = 5, +-2


def test_the_policy_server_answers_422_without_a_capacity_and_decides_with_one(artifact: Path) -> None:
    server = PolicyServer(str(artifact))
    body = {"service": "s", "window": _window().tolist(), "knobs": Knobs().to_dict()}
    with pytest.raises(HTTPException) as err:
        server.decide([ActRequest.model_validate(body)])
    assert err.value.status_code == 422 and "capacity_qps" in str(err.value.detail)
    (answer,) = server.decide([ActRequest.model_validate({**body, "capacity_qps": 400.0})])
    assert 3 <= answer.target_knobs["replicas"] <= 7


def test_control_runs_a_policy_trained_under_the_guard_under_it(artifact: Path) -> None:
    plan = registry.control_plan(str(artifact), interval_s=5.0, bounds=KnobBounds(), slo_p99_ms=8.0)
    assert plan.policy == str(artifact) and plan.guard is not None
    with pytest.raises(ConfigError, match="trained under the SLO guard"):
        registry.build(f"ppo+guard:{artifact}", registry.Context(*_sim_context()))


def _sim_context() -> tuple[object, object]:
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig

    return EnvConfig(), ServiceProfile()
