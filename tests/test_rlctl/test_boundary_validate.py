"""The validation script's ground-truth definition and its comparison with a probe."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from rlctl.boundary import validate
from rlctl.boundary.validate import compare, ground_truth, pooled_comparison, robust_warmup
from rlctl.errors import ConfigError


def curve(p99s: list[float], start: float = 100.0, step: float = 50.0) -> list[dict[str, float]]:
    return [{"qps": start + i * step, "p99_ms": p} for i, p in enumerate(p99s)]


def test_warmup_skips_interference_and_keeps_the_quiet_levels() -> None:
    assert robust_warmup([2.0, 2.2, 2.1, 2.3, 2.0]) == [0, 1, 2, 3]
    # A burst during the first levels: those are dropped once lower ones arrive.
    assert robust_warmup([24.0, 136.0, 205.0, 70.0, 7.2, 5.4, 8.0, 6.0]) == [4, 5, 6, 7]


def test_ground_truth_interpolates_the_4x_crossing() -> None:
    # Baseline median of 2,2,2,2 is 2 ms: the threshold is 8 ms, crossed between 400 (4 ms)
    # and 450 qps (12 ms): halfway.
    truth = ground_truth(curve([2, 2, 2, 2, 2.5, 3, 4, 12, 40, 200]))
    assert truth["baseline_p99_ms"] == 2.0 and truth["threshold_p99_ms"] == 8.0
    assert truth["knee_qps"] == pytest.approx(425.0)
    assert truth["first_level_over_qps"] == 450.0
    assert truth["kneedle_to_boundary_qps"] is not None and 300.0 <= truth["kneedle_to_boundary_qps"] <= 450.0


def test_one_level_over_is_noise_not_the_knee() -> None:
    truth = ground_truth(curve([2, 2, 2, 2, 30, 2.5, 3, 4, 12, 40]))
    assert truth["first_level_over_qps"] == 500.0
    assert truth["knee_qps"] == pytest.approx(475.0)


def test_no_crossing_means_no_knee() -> None:
    truth = ground_truth(curve([2, 2, 2, 2, 2.5, 3, 4, 5]))
    assert truth["knee_qps"] is None


def probe_report(knee: float, stopped: float, step: float = 50.0, by: str = "detector") -> dict[str, object]:
    return {
        "knee_qps": knee,
        "knee_qps_second_method": knee,
        "stopped_at_qps": stopped,
        "stopped_by": by,
        "ramp": {"step_qps": step, "step_s": 3.0, "interval_s": 1.0},
        "detector": {"consecutive": 2},
    }


def test_compare_judges_knee_error_and_stop_delay() -> None:
    good = compare({"knee_qps": 1000.0}, probe_report(knee=950.0, stopped=1100.0))
    assert good["knee_error"] == pytest.approx(-0.05)
    assert good["knee_within_10pct"] and good["stopped_within_2_steps"]
    assert good["stop_steps_after_crossing"] == pytest.approx(2.0)
    assert good["stop_intervals_after_crossing"] == pytest.approx(6.0)
    assert good["probe_rule_first_held_at_qps"] == 1050.0
    late = compare({"knee_qps": 1000.0}, probe_report(knee=1200.0, stopped=1300.0))
    assert not late["knee_within_10pct"] and not late["stopped_within_2_steps"]
    never = compare({"knee_qps": 1000.0}, probe_report(knee=950.0, stopped=2000.0, by="max_qps"))
    assert not never["stopped_within_2_steps"] and never["probe_rule_first_held_at_qps"] is None


def test_pooled_comparison_takes_medians_so_one_drifted_repeat_does_not_decide() -> None:
    truth = {"knee_qps": 1000.0}
    probes = [probe_report(980.0, 1100.0), probe_report(1300.0, 1500.0), probe_report(1010.0, 1050.0)]
    per_repeat = [compare({"knee_qps": k}, p) for k, p in zip((1000.0, 1250.0, 990.0), probes, strict=True)]
    pooled = pooled_comparison(truth, probes, per_repeat)
    assert pooled["probe_knee_qps"] == 1010.0 and pooled["knee_error"] == pytest.approx(0.01)
    assert pooled["stop_steps_after_crossing"] == pytest.approx(2.0)  # median of 2, 10, 1 steps
    assert pooled["knee_within_10pct"] and pooled["stopped_within_2_steps"]
    assert pooled["probe_knees_qps"] == [980.0, 1300.0, 1010.0]
    unstopped = [*probes[:2], probe_report(1010.0, 1050.0, by="max_qps")]
    assert not pooled_comparison(truth, unstopped, per_repeat)["stopped_within_2_steps"]
    assert not pooled_comparison({"knee_qps": 800.0}, probes, per_repeat)["knee_within_10pct"]


@pytest.mark.real  # gosvc
def test_one_calibration_is_measured_and_every_service_of_the_run_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlctl.boundary.probe import REPO_GOSVC

    if not REPO_GOSVC.is_file():
        pytest.fail(f"{REPO_GOSVC} is missing: build it with `bash deploy/gosvc/build.sh --build-only`")
    gosvc = str(REPO_GOSVC)
    measured = validate.calibrate(gosvc, tmp_path, starts=3)
    assert len(measured["starts"]) == 3 and all(r > 0 for r in measured["starts"])
    assert measured["iters_per_us"] == sorted(measured["starts"])[1]
    # The run's calibration reaches the service: its start-up line and its /metrics gauge say so.
    monkeypatch.setitem(validate.ITERS_PER_US, "value", 250.5)
    with validate.Service(gosvc, ("--cpu-us", "10"), tmp_path / "svc.log") as svc:
        assert svc.started["cpu_iters_per_us"] == 250.5
        with urllib.request.urlopen(svc.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "gosvc_spin_iterations_per_cpu_second 2.505e+08" in text  # per second of CPU: 250.5 per us
    # ... and calibrate itself still measures (it does not read back the fixed value).
    again = validate.calibrate(gosvc, tmp_path, starts=1)
    assert again["starts"][0] != 250.5


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_a_bad_calibration_is_refused_before_anything_runs(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "v.json"
    with pytest.raises(ConfigError, match=r"--iters-per-us .*positive calibration"):
        validate.main(["--json", str(out), "--iters-per-us", bad, "--configs", "cpu"])
    assert not out.exists() and not (tmp_path / "v").exists()


def test_a_bad_knee_method_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    with pytest.raises(ConfigError, match=r"--knee-method 'mean': use one of kneedle, two-segment, crossing"):
        validate.main(["--json", str(out), "--knee-method", "mean", "--configs", "cpu"])
    assert not out.exists() and not (tmp_path / "v").exists()
