"""The safety layer: bounds, step limits, cooldowns, stale telemetry; property tests with hypothesis.

The end-to-end property drives a real control loop against a real gosvc: whatever the
telemetry (NaN, inf, negative, missing fields) and whatever the policy answers, the knobs the
service reports afterwards are inside their bounds and moved at most one step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from online_support import MemoryReplicas, gosvc

from rlctl.contract import (
    COL,
    KNOB_COL,
    KNOB_FIELDS,
    LADDERS,
    N_TELEMETRY,
    TELEMETRY_FIELDS,
    KnobBounds,
    Knobs,
    TelemetrySample,
    clamp_array,
)
from rlctl.errors import ConfigError
from rlctl.online.actuators import Actuators, AdminKnobsActuator
from rlctl.online.loop import ControlConfig, ControlLoop
from rlctl.online.policy import Decision
from rlctl.online.procs import GoService
from rlctl.online.safety import SafetyConfig, SafetyLayer, allowed_ladder, ladder_index

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
wild_float = st.one_of(any_float, st.sampled_from([0.0, -1.0, 1e300, -1e300, math.nan, math.inf, -math.inf]))


def legal_value(name: str, bounds: KnobBounds) -> st.SearchStrategy[float]:
    col = KNOB_COL[name]
    if name in LADDERS:
        return st.sampled_from([float(v) for v in allowed_ladder(name, bounds)])
    lo, hi = bounds.lows()[col], bounds.highs()[col]
    return st.integers(int(lo), int(hi)).map(float)


def legal_knobs(bounds: KnobBounds) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(*(legal_value(n, bounds) for n in KNOB_FIELDS)).map(lambda t: np.array(t))


@st.composite
def random_bounds(draw: st.DrawFn) -> KnobBounds:
    lo_r = draw(st.integers(1, 8))
    lo_p = draw(st.integers(1, 4))
    allow = tuple(n for n in KNOB_FIELDS if draw(st.booleans()))
    return KnobBounds(min_replicas=lo_r, max_replicas=draw(st.integers(lo_r, 20)), min_gomaxprocs=lo_p,
                      max_gomaxprocs=draw(st.integers(lo_p, 8)), min_gogc=draw(st.sampled_from([25, 50, 100])),
                      max_gogc=draw(st.sampled_from([200, 400, 800])), allow=allow)  # fmt: skip


def assert_in_bounds(row: np.ndarray, bounds: KnobBounds) -> None:
    lows, highs, mask = bounds.lows(), bounds.highs(), bounds.allowed_mask()
    for i, name in enumerate(KNOB_FIELDS):
        if not mask[i]:
            continue
        assert lows[i] <= row[i] <= highs[i], f"{name}={row[i]} outside [{lows[i]}, {highs[i]}]"
        if name in LADDERS:
            assert row[i] in allowed_ladder(name, bounds), f"{name}={row[i]} is off its ladder"


def assert_step_ok(before: np.ndarray, after: np.ndarray, cfg: SafetyConfig) -> None:
    limits = cfg.step_limits()
    for i, name in enumerate(KNOB_FIELDS):
        if name in LADDERS:
            rungs = allowed_ladder(name, cfg.bounds)
            step = abs(ladder_index(after[i], rungs) - ladder_index(before[i], rungs))
        else:
            step = abs(after[i] - before[i])
        assert step <= limits[i], f"{name}: {before[i]} -> {after[i]} exceeds the step limit {limits[i]}"


# --------------------------------------------------------------------------- properties of limit()


@settings(max_examples=400, deadline=None)
@given(data=st.data(), bounds=random_bounds())
@pytest.mark.slow  # hundreds of generated cases
def test_any_target_from_legal_knobs_stays_in_bounds_and_within_one_step(
    data: st.DataObject, bounds: KnobBounds
) -> None:
    cfg = SafetyConfig(bounds=bounds)
    current = data.draw(legal_knobs(bounds))
    target = np.array(data.draw(st.lists(wild_float, min_size=8, max_size=8)))
    safe, _notes = SafetyLayer(cfg, 1.0).limit(current, target, now_s=0.0)
    assert_in_bounds(safe, bounds)
    assert_step_ok(current, safe, cfg)
    for i in np.flatnonzero(~bounds.allowed_mask()):
        assert safe[i] == current[i]  # knobs outside allow never move


@settings(max_examples=400, deadline=None)
@given(current=st.lists(wild_float, min_size=8, max_size=8), target=st.lists(wild_float, min_size=8, max_size=8))
def test_any_current_and_target_end_in_bounds_one_step_from_the_clamped_current(current: list, target: list) -> None:
    cfg = SafetyConfig()
    safe, _ = SafetyLayer(cfg, 1.0).limit(np.array(current), np.array(target), now_s=0.0)
    assert np.isfinite(safe).all()
    assert_in_bounds(safe, cfg.bounds)
    assert_step_ok(clamp_array(np.array(current), cfg.bounds), safe, cfg)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(wild_float, min_size=N_TELEMETRY, max_size=N_TELEMETRY), max_size=6), now=any_float)
@pytest.mark.slow  # hundreds of generated cases
def test_check_telemetry_never_raises_and_names_a_cause(rows: list, now: float) -> None:
    window = np.array(rows, dtype=np.float64).reshape(-1, N_TELEMETRY)
    verdict = SafetyLayer(SafetyConfig(), 1.0).check_telemetry(window, now)
    assert verdict is None or (
        verdict[0] in ("telemetry-missing", "telemetry-stale", "telemetry-nonfinite") and verdict[1]
    )
    if verdict is None:  # whatever is acted on is fresh and has usable required fields
        last = window[-1]
        assert now - last[COL["timestamp_s"]] <= 3.0
        assert math.isfinite(last[COL["cpu_util"]]) and last[COL["cpu_util"]] >= 0


# --------------------------------------------------------------------------- rules, one by one


def test_step_limits_bite_with_notes() -> None:
    layer = SafetyLayer(SafetyConfig(), 5.0)
    cur = Knobs(replicas=4, gomaxprocs=2, gogc=100).to_array()
    tgt = Knobs(replicas=12, gomaxprocs=8, gogc=800, gomemlimit_mib=128).to_array()
    safe, notes = layer.limit(cur, tgt, 0.0)
    got = Knobs.from_array(safe)
    assert (got.replicas, got.gomaxprocs, got.gogc, got.gomemlimit_mib) == (6, 3, 200, 4096)
    assert "replicas: step limited to 2, 12 -> 6" in notes
    assert "gogc: step limited to 1 rung(s), 800 -> 200" in notes


def test_out_of_bounds_knob_is_brought_inside_at_once() -> None:
    layer = SafetyLayer(SafetyConfig(bounds=KnobBounds(max_replicas=8)), 5.0)
    safe, notes = layer.limit(Knobs(replicas=20).to_array(), Knobs(replicas=20).to_array(), 0.0)
    assert safe[KNOB_COL["replicas"]] == 8
    assert "replicas: 20 is out of bounds or off its ladder, taken as 8" in notes


def test_no_scale_down_within_a_minute_of_a_scale_up() -> None:
    layer = SafetyLayer(SafetyConfig(), 1.0)
    two, four = Knobs(replicas=2).to_array(), Knobs(replicas=4).to_array()
    layer.commit(two, four, now_s=100.0)
    safe, notes = layer.limit(four, Knobs(replicas=3).to_array(), now_s=130.0)
    assert safe[KNOB_COL["replicas"]] == 4
    assert notes == ["replicas: scale-down held, 30.0 s after a scale-up (scale_down_after_up_s=60)"]
    safe, _ = layer.limit(four, Knobs(replicas=5).to_array(), now_s=130.0)
    assert safe[KNOB_COL["replicas"]] == 5  # scaling up further is fine
    safe, _ = layer.limit(four, Knobs(replicas=3).to_array(), now_s=161.0)
    assert safe[KNOB_COL["replicas"]] == 3


def test_per_knob_cooldown() -> None:
    layer = SafetyLayer(SafetyConfig(cooldown_s={"turbo": 300.0, "gogc": 10.0}), 1.0)
    on, off = Knobs(turbo=True).to_array(), Knobs(turbo=False).to_array()
    layer.commit(on, off, now_s=0.0)
    safe, notes = layer.limit(off, on, now_s=299.0)
    assert safe[KNOB_COL["turbo"]] == 0 and "turbo: held by its 300 s cooldown (299.0 s since the last change)" in notes
    assert layer.limit(off, on, now_s=301.0)[0][KNOB_COL["turbo"]] == 1


def test_telemetry_checks() -> None:
    layer = SafetyLayer(SafetyConfig(), 0.5)
    row = np.full(N_TELEMETRY, 1.0)
    row[COL["timestamp_s"]] = 100.0
    assert layer.check_telemetry(None, 100.0) == ("telemetry-missing", "no telemetry sample yet")
    assert layer.check_telemetry(row[None], 101.0) is None
    assert layer.check_telemetry(row[None], 101.6) == (
        "telemetry-stale", "newest sample is 1.6 s old (limit 1.5 s = 3 intervals)")  # fmt: skip
    bad = row.copy()
    bad[COL["p99_ms"]], bad[COL["cpu_util"]] = math.nan, -1.0
    assert layer.check_telemetry(bad[None], 100.0) == (
        "telemetry-nonfinite", "newest sample has unusable p99_ms=nan, cpu_util=-1.0")  # fmt: skip
    idle = row.copy()
    idle[COL["offered_qps"]], idle[COL["p99_ms"]] = 0.0, math.nan
    assert layer.check_telemetry(idle[None], 100.0) is None  # no request, no latency: fine


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="max_step_replicas=0 must be at least 1"):
        SafetyConfig(max_step_replicas=0)
    with pytest.raises(ConfigError, match=r"cooldown_s names unknown knob\(s\) \['gc'\]"):
        SafetyConfig(cooldown_s={"gc": 1.0})
    with pytest.raises(ConfigError, match="choose 'hold' or 'hpa'"):
        SafetyConfig(stale_action="panic")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- end to end on a real service


class AdversarialPolicy:
    """Answers whatever the test tells it to, garbage included."""

    name = "adversarial"
    window = None

    def __init__(self) -> None:
        self.next: np.ndarray = Knobs().to_array()

    def act(self, service: str, window: object, knobs: object) -> Decision:
        return Decision([9, -3, 7, 1, 1, 1, 5, 0], self.next, "adversarial", "x", "y")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoService]:
    with gosvc(tmp_path_factory.mktemp("safety"), "--cpu-us", "50") as svc:
        yield svc


usable = st.floats(0.0, 1e4)
REQUIRED = ("offered_qps", "p99_ms", "cpu_util")
OTHER = tuple(f for f in TELEMETRY_FIELDS if f not in REQUIRED and f != "timestamp_s")
#: Usable required fields three times in four (so the policy path runs), else anything; any other
#: field missing, NaN, inf, negative or huge.
telemetry_dicts = st.tuples(
    st.fixed_dictionaries({name: st.one_of(usable, usable, usable, wild_float) for name in REQUIRED}),
    st.dictionaries(st.sampled_from(OTHER), wild_float, max_size=len(OTHER)),
).map(lambda t: {**t[0], **t[1]})
targets = st.one_of(
    legal_knobs(KnobBounds()).map(list),
    st.lists(st.one_of(st.integers(-100, 10_000).map(float), wild_float), min_size=8, max_size=8),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=targets, telemetry=telemetry_dicts, fresh=st.sampled_from([True, True, True, False]))
def test_live_property_any_telemetry_any_policy_output(service: GoService, tmp_path: Path, target: list,
                                                       telemetry: dict, fresh: bool) -> None:  # fmt: skip
    """Any telemetry (fields missing, NaN, inf, negative) and any policy output: the service's knobs,
    read back from the service itself, stay in bounds and move at most one step per interval."""
    cfg = SafetyConfig(stale_action="hpa", cooldown_s={})
    admin = AdminKnobsActuator(service.admin_url, token_file=Path(service.token_file or ""))
    replicas = MemoryReplicas(2)
    policy = AdversarialPolicy()
    policy.next = np.array(target)

    def scrape() -> TelemetrySample:
        data = dict(telemetry)
        if fresh:
            data["timestamp_s"] = time.time()
        return TelemetrySample.from_dict(data, source="hypothesis")

    loop = ControlLoop(ControlConfig("prop", interval_s=1.0, safety=cfg), Actuators(admin=admin, replicas=replicas),
                       scrape=scrape, policy=policy)  # fmt: skip
    before = loop.actuators.read(np.full(8, np.nan))[0]
    result = loop.step()
    after = loop.actuators.read(np.full(8, np.nan))[0]
    event(f"{result.reason}/{result.cause}" + (" actuated" if result.actuation else ""))
    assert not any(v.startswith("error") for v in result.actuation.values()), result.actuation
    live = cfg.bounds.allowed_mask() & np.isin(np.arange(8), [KNOB_COL[n] for n in loop.actuators.controllable()])
    bounds_live = KnobBounds(allow=tuple(n for i, n in enumerate(KNOB_FIELDS) if live[i]))
    assert_in_bounds(after, bounds_live)
    assert_step_ok(clamp_array(before, cfg.bounds), clamp_array(after, cfg.bounds), cfg)
