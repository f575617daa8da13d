"""The contract: knobs, actions, featurize, the schema hash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlctl.contract import (
    ACTION_NVEC,
    FEATURE_HIGH,
    FEATURE_LOW,
    GOGC_LADDER,
    N_FEATURES,
    N_TELEMETRY,
    NOOP_ACTION,
    SCHEMA_HASH,
    TELEMETRY_FIELDS,
    KnobBounds,
    Knobs,
    TelemetrySample,
    apply,
    apply_array,
    featurize,
    schema_description,
)
from rlctl.errors import ConfigError


def sample(**over: float) -> TelemetrySample:
    base = dict.fromkeys(TELEMETRY_FIELDS, 1.0)
    base.update(over)
    return TelemetrySample(**base)


def test_noop_action_changes_nothing() -> None:
    k = Knobs(replicas=3, gomaxprocs=2, gogc=200, object_pool_size=64)
    assert apply(k, NOOP_ACTION, KnobBounds()) == k


def test_apply_moves_one_rung_and_clamps() -> None:
    b = KnobBounds(max_replicas=4)
    k = apply(Knobs(replicas=3, gogc=100), [4, 2, 2, 1, 1, 1, 1, 0], b)
    assert k.replicas == 4  # +2 clamped at 4
    assert k.gomaxprocs == 3
    assert k.gogc == 200  # one rung up the ladder
    assert k.prefetch is False and k.turbo is True
    assert apply(Knobs(gogc=25), [2, 1, 0, 1, 1, 1, 0, 0], b).gogc == 25  # bottom rung holds


def test_allow_list_freezes_other_knobs() -> None:
    b = KnobBounds(allow=("replicas",))
    k = apply(Knobs(), [4, 2, 2, 2, 2, 2, 1, 1], b)
    assert k == Knobs(replicas=4)


def test_bounds_reject_inverted_range() -> None:
    with pytest.raises(ConfigError, match="min_replicas=5 is above max_replicas=2"):
        KnobBounds(min_replicas=5, max_replicas=2)


@settings(max_examples=200, deadline=None)
@given(
    knobs=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8),
    action=st.lists(st.integers(-10, 10), min_size=8, max_size=8),
)
def test_apply_never_leaves_bounds(knobs: list[float], action: list[int]) -> None:
    b = KnobBounds(max_replicas=10, max_gomaxprocs=4, min_gogc=50, max_gogc=400)
    out = apply_array(np.array(knobs), np.array(action), b)
    assert np.all(out >= b.lows()) and np.all(out <= b.highs())
    assert out[2] in GOGC_LADDER


@settings(max_examples=200, deadline=None)
@given(
    knobs=st.lists(st.floats(-100, 10_000, allow_nan=False), min_size=8, max_size=8),
    action=st.lists(st.integers(0, 4), min_size=8, max_size=8),
    bounds=st.sampled_from([KnobBounds(), KnobBounds(min_gogc=30, max_gogc=700, min_gomemlimit_mib=200,
                                                     max_conn_pool_size=100, min_object_pool_size=10)]),
)  # fmt: skip
def test_rung_lookup_tables_give_the_searched_rung(knobs: list[float], action: list[int], bounds: KnobBounds) -> None:
    """The lookup tables behind ``apply_array`` pick the same rung as searching the ladder,
    off-ladder and out-of-range values included (ties go to the lower rung)."""
    import rlctl.contract.knobs as contract

    got = apply_array(np.array(knobs), np.array(action), bounds)
    searched = contract._rung_tables
    try:
        contract._rung_tables = lambda _b: {}  # type: ignore[assignment]
        want = apply_array(np.array(knobs), np.array(action), bounds)
    finally:
        contract._rung_tables = searched
    np.testing.assert_array_equal(got, want)


def test_sample_roundtrip_and_unknown_field() -> None:
    s = sample(p99_ms=7.5)
    assert TelemetrySample.from_array(s.to_array()) == s
    assert TelemetrySample.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match="unknown telemetry field"):
        TelemetrySample.from_dict({"p99": 3.0}, source="collector")


def test_featurize_shapes_and_batch_equivalence() -> None:
    window = [sample(offered_qps=100.0 * i, p99_ms=2.0 + i) for i in range(12)]
    one = featurize(window)
    assert one.shape == (N_FEATURES,) and one.dtype == np.float32
    arr = np.stack([s.to_array() for s in window])
    batch = featurize(np.stack([arr, arr]))
    assert batch.shape == (2, N_FEATURES)
    np.testing.assert_array_equal(batch[0], one)


def test_featurize_reads_p99_against_the_slo() -> None:
    f = featurize([sample(p99_ms=16.0)], slo_p99_ms=8.0)
    assert f[5] == pytest.approx(math.log(2.0), rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=N_TELEMETRY, max_size=N_TELEMETRY))
def test_featurize_is_finite_and_bounded_for_any_input(row: list[float]) -> None:
    f = featurize(np.array([row, row]))
    assert np.all(np.isfinite(f))
    assert np.all(f >= FEATURE_LOW) and np.all(f <= FEATURE_HIGH)


def test_featurize_rejects_bad_slo_and_shape() -> None:
    with pytest.raises(ConfigError, match="slo_p99_ms"):
        featurize([sample()], slo_p99_ms=0.0)
    with pytest.raises(ConfigError, match="telemetry window has shape"):
        featurize(np.zeros((3, 5)))


def test_schema_hash_tracks_the_description() -> None:
    import hashlib
    import json

    desc = schema_description()
    assert desc["action_nvec"] == list(ACTION_NVEC)
    assert hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16] == SCHEMA_HASH
