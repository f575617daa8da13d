"""The serving path decodes like the offline controller: same windows, same actions, step after step.

SB3's per-dimension mode of the shipped policy is "keep every knob" almost always; a server
that used it would never scale. The server is stateless, so the decoder's accumulator travels
with each request (``carry``) and must reproduce :class:`policies.ppo.PPOController` exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.go_service import GoServiceEnv
from envs.profile import ServiceProfile
from policies.ppo import PPOController
from policies.suites import validation_suite
from rlctl.contract import NOOP_ACTION, KnobBounds, Knobs
from rlctl.online.policy import ActRequest, InProcessPolicy, PolicyModel
from rlctl.online.serve import PolicyServer


def _windows(steps: int = 120) -> list[np.ndarray]:
    """Telemetry windows of a simulated flash crowd with no control (the policy should act on them)."""
    profile = ServiceProfile()
    flash = next(s for s in validation_suite(profile) if "flash" in s.name)
    env = GoServiceEnv(scenario=flash, profile=profile, randomize_profile=0.0)
    env.reset(seed=3)
    out = []
    for _ in range(steps):
        env.step(np.asarray(NOOP_ACTION))
        out.append(env.telemetry_window())
    return out


def test_server_decisions_match_the_offline_controller_and_move_knobs() -> None:
    offline = PPOController("default")
    bounds = KnobBounds()
    offline.reset(1, bounds, 5.0)
    server = PolicyServer("default")
    carry = None
    moved = 0
    for w in _windows():
        want = offline.actions(w[None])[0]
        body = {"service": "s", "window": w.tolist(), "knobs": Knobs().to_dict(), "carry": carry}
        req = ActRequest.model_validate(body)
        (resp,) = server.decide([req])
        assert resp.action == [int(a) for a in want]
        carry = resp.carry
        assert len(carry) == 6 and all(-1.0 <= c <= 1.0 for c in carry)
        moved += resp.action != list(NOOP_ACTION)
    assert moved > 0, "the policy never moved a knob on a flash crowd: decoding is broken"


def test_in_process_policy_keeps_one_carry_per_service() -> None:
    policy = InProcessPolicy("default")
    model = PolicyModel("default")
    ws = _windows(10)
    knobs = np.asarray([[2, 2, 100, 512, 256, 64, 1, 1]], dtype=np.float64)
    carry = None
    for w in ws:
        a = policy.act("a", w, knobs[0])
        policy.act("b", ws[0], knobs[0])  # another service must not disturb a's accumulator
        (d,) = model.decide([w], knobs, [carry])
        assert a.action == d.action
        carry = d.carry


def test_carry_out_of_range_is_a_clear_422_reason() -> None:
    with pytest.raises(ValueError, match="carry"):
        body = {"service": "s", "window": [[0.0] * 27], "knobs": Knobs().to_dict(), "carry": [5.0] * 6}
        ActRequest.model_validate(body)
