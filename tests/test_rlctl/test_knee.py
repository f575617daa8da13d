"""Knee location (Kneedle and the two-segment fit) and the highest load inside the SLO."""

from __future__ import annotations

import numpy as np
import pytest

from rlctl.boundary.knee import find_knee, kneedle_knee, max_qps_at_slo, threshold_crossing, two_segment_knee
from rlctl.errors import ConfigError


def hinge(x: np.ndarray, at: float, flat: float = 1.0, slope: float = 0.02) -> np.ndarray:
    return flat + slope * np.maximum(0.0, x - at)


def test_two_segment_fit_finds_the_breakpoint_between_measured_loads() -> None:
    x = np.arange(100.0, 3100.0, 200.0)
    knee = two_segment_knee(x, hinge(x, 2000.0))
    assert knee == pytest.approx(2000.0, rel=1e-3)


def test_kneedle_and_hinge_agree_on_a_hockey_stick() -> None:
    x = np.arange(100.0, 3100.0, 100.0)
    result = find_knee(x, hinge(x, 2000.0), slo_p99_ms=8.0)
    assert result.knee_qps == pytest.approx(2000.0, abs=100.0)
    assert result.knee_qps_second_method == pytest.approx(2000.0, rel=1e-3)
    assert result.agree and result.agreement is not None and result.agreement <= 0.05


def test_queueing_curve_knee_sits_before_saturation() -> None:
    # P99 of an M/M/1-like queue, capacity 3200 qps: latency ~ 1 / (1 - rho).
    x = np.arange(100.0, 3100.0, 200.0)
    result = find_knee(x, 1.0 / (1.0 - x / 3200.0), slo_p99_ms=8.0)
    assert result.knee_qps is not None and result.knee_qps_second_method is not None
    assert 2000.0 <= result.knee_qps <= 2800.0
    assert 2000.0 <= result.knee_qps_second_method <= 2800.0
    # P99 = 8 ms at rho = 7/8: 2800 qps, between the measured 2700 (6.4 ms) and 2900 (10.7 ms)
    assert result.max_qps_at_slo == pytest.approx(2700 + 200 * (8 - 6.4) / (10.6667 - 6.4), rel=1e-3)


def test_straight_line_has_no_knee() -> None:
    x = np.arange(10.0)
    assert kneedle_knee(x, 2 * x + 1) is None
    assert two_segment_knee(x, 2 * x + 1) is None
    result = find_knee(x, 2 * x + 1, slo_p99_ms=100.0)
    assert result.knee_qps is None and result.agreement is None and not result.agree


def test_a_concave_bend_is_not_a_knee_for_the_hinge() -> None:
    x = np.arange(10.0)
    assert two_segment_knee(x, np.minimum(x, 5.0)) is None  # flattens out: an elbow


def test_input_order_and_duplicates_do_not_matter() -> None:
    x = np.arange(100.0, 3100.0, 200.0)
    y = hinge(x, 2000.0)
    order = np.random.default_rng(0).permutation(x.size)
    xs, ys = np.concatenate([x[order], [x[0]]]), np.concatenate([y[order], [y[0]]])
    assert find_knee(xs, ys, slo_p99_ms=8).to_dict() == find_knee(x, y, slo_p99_ms=8).to_dict()


def test_too_few_points() -> None:
    assert kneedle_knee([1.0, 2.0], [1.0, 5.0]) is None
    assert two_segment_knee([1.0, 2.0, 3.0], [1.0, 1.0, 5.0]) is None


def test_max_qps_at_slo() -> None:
    loads = [100, 200, 300, 400]
    assert max_qps_at_slo(loads, [2, 4, 6, 10], 8.0) == pytest.approx(350.0)
    assert max_qps_at_slo(loads, [2, 4, 6, 7], 8.0) == 400.0  # never crossed: the last load
    assert max_qps_at_slo(loads, [9, 10, 11, 12], 8.0) is None  # no load met the SLO
    # Noise above the SLO at a lower load does not hide a higher load inside it.
    assert max_qps_at_slo(loads, [2, 9, 6, 20], 8.0) == pytest.approx(300 + 100 * 2 / 14)


def test_mismatched_lengths_and_bad_slo() -> None:
    with pytest.raises(ConfigError, match="one P99 per load"):
        find_knee([1, 2, 3], [1, 2], slo_p99_ms=8)
    with pytest.raises(ConfigError, match="slo_p99_ms"):
        find_knee([1, 2, 3], [1, 2, 3], slo_p99_ms=0)


def test_low_load_interference_spikes_do_not_move_the_knee() -> None:
    x = np.arange(100.0, 1500.0, 100.0)
    clean = hinge(x, 1000.0, flat=2.0, slope=0.5)
    noisy = clean.copy()
    noisy[1:4] = [136.0, 205.0, 70.0]  # a neighbour's burst while the load was low
    on_envelope = find_knee(x, noisy, slo_p99_ms=8.0)
    assert on_envelope.knee_qps == find_knee(x, clean, slo_p99_ms=8.0).knee_qps
    assert on_envelope.knee_qps_second_method == pytest.approx(1000.0, rel=0.02)
    raw = find_knee(x, noisy, slo_p99_ms=8.0, envelope=False)
    assert raw.knee_qps_second_method is not None
    assert abs(raw.knee_qps_second_method - 1000.0) > 20.0  # the raw hinge fit is pulled by the spikes
    # The SLO figure stays on the measured curve.
    assert on_envelope.max_qps_at_slo == raw.max_qps_at_slo == pytest.approx(1012.0)


def test_a_small_regime_step_below_the_boundary_is_not_the_knee() -> None:
    # The mutex-contended test-bed as a probe measured it (2026-11-28): P99 steps from 2.6
    # to 3.5 ms at 500 req/s, then the cliff; the probe stopped one interval into it.
    loads = [200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950]
    p99 = [2.7, 2.8, 2.7, 2.6, 2.6, 2.6, 3.5, 3.6, 3.7, 3.7, 3.5, 4.1, 4.5, 4.7, 6.2, 15.0]
    knee = kneedle_knee(loads, p99, last=True)
    assert knee is not None and 800 <= knee <= 900
    assert kneedle_knee(loads, p99) == 450  # kneed's first knee


def test_the_reported_knee_can_come_from_the_two_segment_fit() -> None:
    # A gradual rise then a cliff: Kneedle's greatest curvature is at the rise, the hinge at the cliff.
    x = np.arange(100.0, 1000.0, 50.0)
    y = 3.0 + 0.004 * np.maximum(0.0, x - 500.0) + 0.15 * np.maximum(0.0, x - 850.0)
    kneedle = find_knee(x, y, slo_p99_ms=8.0, last_knee=True)
    hinge_first = find_knee(x, y, slo_p99_ms=8.0, last_knee=True, method="two-segment")
    assert (kneedle.method, hinge_first.method) == ("kneedle", "two-segment")
    # The same two knees, swapped: the reported one and its cross-check.
    assert hinge_first.knee_qps == kneedle.knee_qps_second_method
    assert hinge_first.knee_qps_second_method == kneedle.knee_qps
    assert hinge_first.agreement == kneedle.agreement
    assert hinge_first.methods == ("two_segment_least_squares", "kneedle")
    assert hinge_first.to_dict()["knee_method"] == "two-segment"
    assert hinge_first.knee_p99_ms == pytest.approx(float(np.interp(hinge_first.knee_qps, x, y)))
    assert kneedle.knee_qps != hinge_first.knee_qps


def test_an_unknown_knee_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="'median' is not one of kneedle, two-segment, crossing"):
        find_knee([1, 2, 3, 4], [1, 1, 2, 5], slo_p99_ms=8, method="median")


def test_threshold_crossing_is_the_last_upward_crossing_interpolated() -> None:
    x = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    # A spike at 200 that the curve came back from, then the boundary between 500 and 600.
    y = [2.0, 9.0, 2.5, 3.0, 4.0, 20.0]
    assert threshold_crossing(x, y, 8.0) == pytest.approx(500.0 + 100.0 * (8.0 - 4.0) / (20.0 - 4.0))
    assert threshold_crossing(x[::-1], y[::-1], 8.0) == threshold_crossing(x, y, 8.0)  # order does not matter
    assert threshold_crossing(x, [2, 3, 4, 5, 6, 7], 8.0) is None  # never crossed at the end
    assert threshold_crossing(x, [9, 10, 11, 12, 13, 14], 8.0) is None  # over from the start: no crossing seen
    assert threshold_crossing([100.0], [20.0], 8.0) is None


def test_the_crossing_method_reports_it_with_kneedle_as_cross_check() -> None:
    x = np.arange(100.0, 1000.0, 50.0)
    y = 3.0 + 0.004 * np.maximum(0.0, x - 500.0) + 0.15 * np.maximum(0.0, x - 850.0)
    result = find_knee(x, y, slo_p99_ms=8.0, last_knee=True, method="crossing", crossing_ms=12.0)
    assert result.methods == ("p99_threshold_crossing", "kneedle")
    assert result.knee_qps == pytest.approx(threshold_crossing(x, y, 12.0))
    assert result.knee_qps_second_method == find_knee(x, y, slo_p99_ms=8.0, last_knee=True).knee_qps
    assert result.knee_p99_ms == 12.0
    no_threshold = find_knee(x, y, slo_p99_ms=8.0, method="crossing")
    assert no_threshold.knee_qps is None and no_threshold.knee_qps_second_method is not None
    with pytest.raises(ConfigError, match=r"crossing_ms=-1\.0 must be a positive"):
        find_knee(x, y, slo_p99_ms=8.0, method="crossing", crossing_ms=-1.0)
