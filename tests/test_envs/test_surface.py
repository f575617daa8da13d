"""The degradation-probability surface and the controller's trigger on it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_rlctl

from envs.profile import ServiceProfile
from envs.surface import (
    from_simulator,
    from_telemetry,
    logistic_fit,
    monotone_violations,
    plot_surface,
    read_telemetry,
    samples_to_jsonl,
    wilson_interval,
)
from rlctl.contract import TelemetrySample
from rlctl.errors import ConfigError
from rlctl.surface_trigger import Surface, SurfaceTrigger


@pytest.fixture(scope="module")
def sim_surface() -> Surface:
    return from_simulator(ServiceProfile(), seeds=60, seed=1)


def test_wilson_interval_matches_the_formula() -> None:
    lo, hi = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.2775, abs=1e-4)
    assert (lo[1], hi[1]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert lo[2] == pytest.approx(0.7225, abs=1e-4) and hi[2] == pytest.approx(1.0)


def test_simulated_surface_is_monotone_in_load_and_jitter(sim_surface: Surface) -> None:
    p = sim_surface.probability
    assert monotone_violations(p) == 0
    assert p[0, 0] < 0.05 and p[-1, -1] > 0.95  # light and calm vs saturated and jittery
    assert p[:, -1].mean() > p[:, 0].mean() and p[-1, :].mean() > p[0, :].mean()
    assert sim_surface.ci_low is not None and sim_surface.ci_high is not None
    assert np.all(sim_surface.ci_low <= p + 1e-12) and np.all(p <= sim_surface.ci_high + 1e-12)


def test_simulated_surface_is_seeded(sim_surface: Surface) -> None:
    again = from_simulator(ServiceProfile(), seeds=60, seed=1)
    assert np.array_equal(again.probability, sim_surface.probability)


def test_surface_json_round_trip_and_interpolation(sim_surface: Surface, tmp_path: Path) -> None:
    path = sim_surface.save(tmp_path / "s.json")
    loaded = Surface.load(path)
    assert np.allclose(loaded.probability, sim_surface.probability, atol=1e-6)
    x, y = loaded.x, loaded.y
    assert loaded.probability_at(x[3], y[2]) == pytest.approx(loaded.probability[3, 2])
    mid = loaded.probability_at((x[3] + x[4]) / 2, y[2])
    assert mid == pytest.approx((loaded.probability[3, 2] + loaded.probability[4, 2]) / 2)
    assert loaded.probability_at(10 * x[-1], 10 * y[-1]) == pytest.approx(loaded.probability[-1, -1])
    assert math.isnan(loaded.probability_at(math.nan, 1.0))


def test_surface_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "rlctl.surface/v1", "x": {"values": [1, 2]}, "y": {"values": [1]},
                               "probability": [[0.1], [1.5]]}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"bad.json: surface: every probability must be a finite number in \[0, 1\]"):
        Surface.load(bad)
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ConfigError, match="write it with `rlctl limits surface --json`"):
        Surface.load(bad)


def _sample(qps: float, rtt_std: float, replicas: float = 1.0, p99: float = 5.0) -> TelemetrySample:
    values: dict[str, Any] = dict.fromkeys(TelemetrySample.__dataclass_fields__, 0.0)
    values.pop("service")
    values.update(offered_qps=qps, served_qps=qps, rtt_std_ms=rtt_std, replicas=replicas, p99_ms=p99)
    return TelemetrySample(**values)


def _step_surface() -> Surface:
    # P = 0 below 1000 qps per replica, 0.5 at 1000, 1 at and above 2000 (RTT std irrelevant).
    return Surface(np.array([0.0, 1000.0, 2000.0]), np.array([0.0, 10.0]),
                   np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]))  # fmt: skip


def test_trigger_fires_on_the_fifth_consecutive_interval_over_threshold() -> None:
    trig = SurfaceTrigger(_step_surface(), threshold=0.15, consecutive=5)
    hot = _sample(1500.0, 1.0)  # P = 0.75
    assert trig.run([hot] * 4) == [False] * 4
    assert trig.update(hot) is True and trig.streak == 5
    assert trig.update(hot) is True  # stays on while it holds
    assert trig.update(_sample(100.0, 1.0)) is False and trig.streak == 0  # one calm interval re-arms


def test_trigger_uses_load_per_replica_and_breaks_on_unreadable_samples() -> None:
    trig = SurfaceTrigger(_step_surface(), threshold=0.15, consecutive=2)
    assert trig.update(_sample(3000.0, 1.0, replicas=3)) is False  # 1000/replica: P = 0.5 > 0.15, streak 1
    assert trig.probability == pytest.approx(0.5)
    assert trig.update(_sample(math.nan, 1.0)) is False and trig.streak == 0
    assert trig.run([_sample(3000.0, 1.0, replicas=3)] * 2) == [False, True]
    assert trig.update({"offered_qps": 100.0, "rtt_std_ms": 0.0, "replicas": 1}) is False


def test_trigger_threshold_is_strictly_greater() -> None:
    s = Surface(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.full((2, 2), 0.15))
    trig = SurfaceTrigger(s, consecutive=1)
    assert trig.update(_sample(0.5, 0.5)) is False
    with pytest.raises(ConfigError, match="consecutive=0 must be at least 1"):
        SurfaceTrigger(s, consecutive=0)


def test_trigger_on_the_simulated_surface_fires_under_rising_load(sim_surface: Surface) -> None:
    trig = SurfaceTrigger(sim_surface)
    rtt = float(sim_surface.y[0])
    calm = [_sample(0.1 * sim_surface.x[-1], rtt)] * 10
    assert not any(trig.run(calm))
    hot = [_sample(sim_surface.x[-1], rtt)] * 5
    assert trig.run(hot) == [False, False, False, False, True]


def test_logistic_fit_recovers_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(4000, 2))
    p = 1 / (1 + np.exp(-(-0.5 + 2.0 * x[:, 0] + 1.0 * x[:, 1])))
    y = (rng.uniform(size=4000) < p).astype(float)
    model = logistic_fit(x, y)
    assert model["converged"]
    coef, se = np.array(model["coef"]), np.array(model["stderr"])
    assert np.all(np.abs(coef - [-0.5, 2.0, 1.0]) < 3 * se + 0.05)
    assert np.all(se > 0) and np.all(se < 0.2)


def test_surface_from_telemetry_grows_with_load_and_jitter(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    samples = []
    for _ in range(3000):
        qps, jit = rng.uniform(100, 2000), rng.uniform(0, 4)
        p99 = 2.0 + 4.0 * (qps / 2000) ** 4 + 1.5 * jit + rng.normal(0, 0.5)
        samples.append(_sample(qps, jit, p99=p99))
    path = samples_to_jsonl(samples, tmp_path / "t.jsonl")
    surf = from_telemetry(read_telemetry(path), slo_p99_ms=8.0, x_bins=8, y_bins=6)
    p = surf.probability
    assert p[0, 0] < 0.1 and p[-1, -1] > 0.9
    assert monotone_violations(p, tol=0.1) == 0  # sampling noise below 0.1 per cell
    coef = surf.meta["logistic"]["coef"]
    assert coef[1] > 0 and coef[2] > 0  # more load, more jitter: more degradation


def test_read_telemetry_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"offered_qps": 1}\n{"offered_qps": 2, "p99": 3}\n')
    with pytest.raises(ConfigError, match=r"t.jsonl:2: unknown telemetry field\(s\) \['p99'\]"):
        read_telemetry(path)


def test_plot_writes_a_png(sim_surface: Surface, tmp_path: Path) -> None:
    out = plot_surface(sim_surface, tmp_path / "s.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_surface_from_simulator_and_from_telemetry(tmp_path: Path) -> None:
    proc = invoke_rlctl("boundary", "surface", "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"),
                     "--seeds", "20")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    surf = Surface.load(tmp_path / "s.json")
    assert surf.meta["source"] == "simulator" and monotone_violations(surf.probability) == 0
    assert (tmp_path / "s.png").stat().st_size > 1000
    samples = [_sample(q, 1.0, p99=2.0 + q / 100.0) for q in np.linspace(100, 1500, 200)]
    samples_to_jsonl(samples, tmp_path / "t.jsonl")
    proc = invoke_rlctl("boundary", "surface", "--json", str(tmp_path / "t.json"), "--from-telemetry",
                     str(tmp_path / "t.jsonl"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert Surface.load(tmp_path / "t.json").meta["source"] == "telemetry"
