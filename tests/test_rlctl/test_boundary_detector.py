"""BoundaryDetector: robust baseline, the multi-signal rule, consecutive samples, profiles, forecast."""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rlctl.boundary.detector import BoundaryDetector, DetectorConfig, capture_profiles, saturation_forecast
from rlctl.contract import TelemetrySample
from rlctl.errors import ConfigError


def sample(
    t: float, p99: float = 2.0, alloc: float = 1e6, goroutines: float = 20.0, util: float = 0.3
) -> TelemetrySample:
    return TelemetrySample.from_dict(
        {
            "timestamp_s": t,
            "interval_s": 5.0,
            "p99_ms": p99,
            "alloc_bytes_per_s": alloc,
            "goroutines": goroutines,
            "cpu_util": util,
        },
        source="test",
    )


def calm(rng: np.random.Generator, t: float) -> TelemetrySample:
    return sample(
        t, p99=2.0 + rng.normal(0, 0.1), alloc=1e6 * (1 + rng.normal(0, 0.03)), goroutines=20 + rng.integers(-2, 3)
    )


def warmed(config: DetectorConfig | None = None, n: int = 30, seed: int = 0) -> BoundaryDetector:
    det = BoundaryDetector(config)
    rng = np.random.default_rng(seed)
    for i in range(n):
        assert det.update(calm(rng, 5.0 * i)) is None
    return det


def test_steady_noise_never_fires() -> None:
    det = BoundaryDetector()
    rng = np.random.default_rng(42)
    events = [det.update(calm(rng, 5.0 * i)) for i in range(500)]
    assert not any(events)


def test_saturation_fires_on_the_second_consecutive_sample() -> None:
    det = warmed()
    first = det.update(sample(200, p99=10.0, goroutines=80))
    assert first is None and det.streak == 1
    event = det.update(sample(205, p99=12.0, goroutines=90))
    assert event is not None
    assert event.time_s == 205
    assert set(event.fired) == {"p99_rise", "p99_mad", "goroutines"}
    rise = next(s for s in event.signals if s.name == "p99_rise")
    assert rise.value == 12.0
    assert rise.threshold == pytest.approx(4.0 * event.baseline.p99_median)
    assert event.sample.p99_ms == 12.0
    assert det.events == [event]


def test_a_single_spike_does_not_fire() -> None:
    det = warmed()
    assert det.update(sample(200, p99=50.0, goroutines=200)) is None
    assert det.update(sample(205)) is None
    assert det.update(sample(210, p99=50.0, goroutines=200)) is None
    assert det.streak == 1


def test_p99_rise_alone_is_not_enough_when_required_partners_are_quiet() -> None:
    # Only goroutines may accompany the P99 rise here: a slow dependency raises P99
    # without piling up goroutines in this service.
    det = warmed(DetectorConfig(any_of=("goroutines",)))
    for t in (200, 205, 210):
        assert det.update(sample(t, p99=20.0)) is None
    assert det.update(sample(215, p99=20.0, goroutines=100)) is None  # streak restarts at 1
    assert det.update(sample(220, p99=20.0, goroutines=100)) is not None


def test_no_signal_fires_during_warmup() -> None:
    det = BoundaryDetector(DetectorConfig(warmup=5, consecutive=1))
    for i in range(4):
        assert det.update(sample(i, p99=2.0)) is None
    assert not det.warmed_up
    assert det.update(sample(4, p99=2.0)) is None
    assert det.warmed_up
    assert det.update(sample(5, p99=100.0, goroutines=500)) is not None


def test_baseline_does_not_learn_from_firing_samples() -> None:
    det = warmed()
    before = det.baseline()
    for i in range(100):
        det.update(sample(300 + 5 * i, p99=3.0, goroutines=21))  # above median + 3 MAD, below 4x
    after = det.baseline()
    assert after.p99_median == pytest.approx(before.p99_median)
    assert after.n == before.n


def test_baseline_learns_calm_samples_and_rolls() -> None:
    det = warmed(DetectorConfig(window=10), n=10)
    for i in range(10):
        det.update(sample(100 + i, p99=2.05, goroutines=20))
    assert det.baseline().p99_median == pytest.approx(2.05)  # the old window has rolled out


def test_frozen_baseline_after_warmup() -> None:
    det = BoundaryDetector(DetectorConfig(warmup=3, window=3, learn_after_warmup=False))
    for i, p in enumerate((1.0, 1.1, 0.9)):
        det.update(sample(i, p99=p))
    for i in range(10):
        det.update(sample(10 + i, p99=1.0 + 0.01 * i))
    assert det.baseline().p99_median == pytest.approx(1.0)


def test_median_and_mad_ignore_one_spike_in_the_baseline() -> None:
    det = BoundaryDetector(DetectorConfig(warmup=10, window=10))
    for i in range(10):
        det.update(sample(i, p99=2.0 + 0.1 * (i % 3)))  # calm samples: 2.0, 2.1, 2.2
    b_clean = det.baseline()
    det2 = BoundaryDetector(DetectorConfig(warmup=10, window=10))
    for i in range(10):
        det2.update(sample(i, p99=200.0 if i == 0 else 2.0 + 0.1 * (i % 3)))
    b_spike = det2.baseline()
    assert b_spike.p99_median == pytest.approx(b_clean.p99_median, abs=0.11)
    assert b_spike.p99_spread < 0.3  # a mean + 3 sigma rule would put the threshold near 200 ms


def test_rearms_after_the_rule_stops_holding() -> None:
    det = warmed()
    det.update(sample(200, p99=20, goroutines=100))
    assert det.update(sample(205, p99=20, goroutines=100)) is not None
    assert det.update(sample(210, p99=20, goroutines=100)) is None  # same excursion: no second event
    det.update(sample(215))
    det.update(sample(220, p99=20, goroutines=100))
    assert det.update(sample(225, p99=20, goroutines=100)) is not None
    assert len(det.events) == 2


def test_nan_signals_never_fire() -> None:
    det = warmed(DetectorConfig(consecutive=1))
    signals = det.evaluate(sample(200, p99=math.nan, alloc=math.nan, goroutines=math.nan))
    assert not any(s.fired for s in signals)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"require": ("p99_up",)}, "unknown signal"),
        ({"require": (), "any_of": ()}, "nothing could ever fire"),
        ({"warmup": 2}, "below 3"),
        ({"window": 4, "warmup": 5}, "smaller than warmup"),
        ({"consecutive": 0}, "at least 1"),
        ({"k_mad": 0.0}, "k_mad"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- profiles


#: The bearer token the fake's /admin/debug/pprof/ wants (like gosvc's admin listener).
PPROF_TOKEN = "0123456789abcdef0123"


class _Pprof(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        bodies = {"/debug/pprof/goroutine?debug=1": b"goroutine profile: total 42\n", "/debug/pprof/heap": b"\x1f\x8b"}
        path = self.path
        if path.startswith("/admin/"):
            if self.headers.get("Authorization") != f"Bearer {PPROF_TOKEN}":
                self.send_error(401)
                return
            path = path.removeprefix("/admin")
        body = bodies.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pprof_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pprof)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debug/pprof"
    finally:
        server.shutdown()
        server.server_close()


def test_event_captures_goroutine_and_heap_profiles(pprof_url: str, tmp_path: Path) -> None:
    det = BoundaryDetector(DetectorConfig(consecutive=1, warmup=3), pprof_url=pprof_url, profile_dir=tmp_path)
    for i in range(3):
        det.update(sample(i))
    event = det.update(sample(10, p99=50, goroutines=500))
    assert event is not None
    assert set(event.profiles) == {"goroutine", "heap"}
    assert Path(event.profiles["goroutine"]).read_text() == "goroutine profile: total 42\n"
    assert Path(event.profiles["heap"]).read_bytes() == b"\x1f\x8b"
    assert event.profile_errors == {}
    assert event.to_dict()["profiles"] == event.profiles


def test_profiles_behind_a_bearer_token(pprof_url: str, tmp_path: Path) -> None:
    secured = pprof_url.replace("/debug/pprof", "/admin/debug/pprof")
    paths, errors = capture_profiles(secured, tmp_path / "with", token=PPROF_TOKEN)
    assert set(paths) == {"goroutine", "heap"} and errors == {}
    paths, errors = capture_profiles(secured, tmp_path / "without")
    assert paths == {} and set(errors) == {"goroutine", "heap"}
    assert "HTTP 401" in errors["heap"] and "--pprof-token-file" in errors["heap"]
    _, errors = capture_profiles(pprof_url.replace("/debug/pprof", "/nope"), tmp_path / "missing")
    assert "HTTP 404" in errors["heap"] and "admin listener" in errors["heap"]


def test_profile_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    det = BoundaryDetector(
        DetectorConfig(consecutive=1, warmup=3), pprof_url="http://127.0.0.1:9/debug/pprof", profile_dir=tmp_path
    )
    for i in range(3):
        det.update(sample(i))
    event = det.update(sample(10, p99=50, goroutines=500))
    assert event is not None and event.profiles == {}
    assert set(event.profile_errors) == {"goroutine", "heap"}


# --------------------------------------------------------------------------- forecast


def test_forecast_extrapolates_the_p99_trend() -> None:
    # P99 climbs 0.2 ms per 5 s from 2 ms; the boundary is 4 x 2 ms = 8 ms.
    samples = [sample(5.0 * i, p99=2.0 + 0.2 * i, util=math.nan) for i in range(10)]
    now = 2.0 + 0.2 * 9
    expected = (now + 0.04 * 60) / 8.0
    assert saturation_forecast(samples, 60, baseline_p99_ms=2.0) == pytest.approx(expected)
    assert saturation_forecast(samples, 0, baseline_p99_ms=2.0) == pytest.approx(now / 8.0)


def test_forecast_uses_utilisation_when_it_is_closer_to_the_boundary() -> None:
    samples = [sample(10.0 * i, p99=2.0, util=0.5 + 0.01 * i) for i in range(6)]
    assert saturation_forecast(samples, 60, baseline_p99_ms=2.0) == pytest.approx(0.55 + 0.06)


def test_forecast_edge_cases() -> None:
    assert math.isnan(saturation_forecast([]))
    assert saturation_forecast([sample(0, p99=4.0, util=math.nan)], baseline_p99_ms=2.0) == pytest.approx(0.5)
    falling = [sample(5.0 * i, p99=8.0 - 0.5 * i, util=math.nan) for i in range(10)]
    assert saturation_forecast(falling, 600, baseline_p99_ms=2.0) == 0.0  # never negative


def test_detector_forecast_uses_its_baseline() -> None:
    det = warmed()
    ratio = det.forecast(60)
    assert 0.2 < ratio < 0.4  # calm: P99 at about 1/4 of the 4x threshold, utilisation 0.3


def test_noisy_warmup_samples_are_not_the_baseline() -> None:
    # A neighbour's burst inflates the first warm-up samples; the quiet ones set the baseline.
    cfg = DetectorConfig(warmup=3, window=3, consecutive=2, learn_after_warmup=False, warmup_outlier_ratio=2.0)
    det = BoundaryDetector(cfg)
    for i, p99 in enumerate((24.0, 136.0, 205.0, 70.0, 7.2, 5.4, 8.0)):
        assert det.update(sample(i, p99=p99)) is None
    assert det.warmed_up
    assert det.baseline().p99_median == pytest.approx(7.2)
    assert det.update(sample(10, p99=40.0, goroutines=90)) is None
    assert det.update(sample(11, p99=45.0, goroutines=95)) is not None  # 4 x 7.2 = 28.8 ms


def test_without_outlier_rejection_the_noisy_warmup_hides_the_boundary() -> None:
    det = BoundaryDetector(DetectorConfig(warmup=3, window=3, learn_after_warmup=False))
    for i, p99 in enumerate((24.0, 136.0, 205.0)):
        det.update(sample(i, p99=p99))
    assert det.baseline().p99_median == 136.0
    assert det.update(sample(10, p99=45.0, goroutines=95)) is None
    assert det.update(sample(11, p99=45.0, goroutines=95)) is None


def test_warmup_arms_after_its_sample_limit_even_if_inconsistent() -> None:
    cfg = DetectorConfig(warmup=3, window=3, warmup_outlier_ratio=1.5, warmup_max_samples=6)
    det = BoundaryDetector(cfg)
    for i, p99 in enumerate((1.0, 2.0, 4.0, 8.0, 16.0)):
        det.update(sample(i, p99=p99))
        assert not det.warmed_up
    det.update(sample(5, p99=32.0))
    assert det.warmed_up
    assert det.baseline().n == 3 and det.baseline().p99_median == 2.0  # the three lowest: 1, 2, 4
    with pytest.raises(ConfigError, match="above 1"):
        DetectorConfig(warmup_outlier_ratio=0.5)
