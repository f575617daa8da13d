"""``rlctl control --pareto-every``: the front refreshed for the live load, exported as metrics, advisory only."""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from conftest import invoke_rlctl
from prometheus_client import CollectorRegistry, generate_latest

from envs.profile import ServiceProfile
from policies import pareto as P
from rlctl.contract import KNOB_COL, KNOB_FIELDS, TELEMETRY_FIELDS, KnobBounds, Knobs, TelemetrySample
from rlctl.online.actuators import Actuators
from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop
from rlctl.online.pareto_refresh import DEFAULT_PROFILE, ParetoRefresher, RefreshConfig, recent_load, start_for_loop
from rlctl.online.safety import SafetyConfig

HELD = tuple(k for k in KNOB_FIELDS if k not in ("prefetch", "turbo"))
#: A small space (4 replicas, GOMAXPROCS 1-2): every setting is scored in well under a second.
BOUNDS = KnobBounds(max_replicas=4, max_gomaxprocs=2, allow=HELD)


def refresher(load: float | None, *, knobs: np.ndarray | None = None, service: str = "svc") -> ParetoRefresher:
    cfg = RefreshConfig(service=service, every_s=60.0, bounds=BOUNDS, method="exhaustive")
    box = {"load": math.nan if load is None else load}
    held = (lambda: knobs) if knobs is not None else None
    return ParetoRefresher(cfg, load=lambda: box["load"], knobs=held, registry=CollectorRegistry())


def value(r: ParetoRefresher, name: str, **labels: str) -> float | None:
    got = r.registry.get_sample_value(name, {"service": "svc", **labels})
    return None if got is None else float(got)


def test_the_knee_for_the_live_load_is_published_as_the_physics_say() -> None:
    r = refresher(1000.0)
    pub = r.refresh_once()
    assert pub is not None and pub["method"] == "exhaustive"
    assert set(pub["points"]) == {"knee", "cheapest", "lowest_p99"}
    # The same front, computed directly: the published knee is its knee.
    prof = P.profile_arrays(ServiceProfile.load(DEFAULT_PROFILE))
    exact = P.exhaustive_front(prof, P.KnobSpace(bounds=BOUNDS), np.array([1000.0]), 8.0)
    truth = P.front_report(exact, slo_p99_ms=8.0)
    assert pub["points"]["knee"]["knobs"] == truth["knees"]["knee"]["knobs"]
    assert pub["front_points"] == len(truth["front"])
    for point, p in pub["points"].items():
        for knob in KNOB_FIELDS:
            assert value(r, "rlctl_pareto_knob", point=point, knob=knob) == float(p["knobs"][knob])
        p99 = value(r, "rlctl_pareto_predicted_p99_seconds", point=point)
        assert p99 is not None and 0 < p99 <= 0.008 and p99 == pytest.approx(p["objectives"]["p99_ms"] / 1e3)
        assert value(r, "rlctl_pareto_predicted_cores", point=point) == pytest.approx(p["objectives"]["cores_used"])
    assert value(r, "rlctl_pareto_load_requests_per_second") == 1000.0
    assert value(r, "rlctl_pareto_refreshes_total", outcome="ok") == 1.0
    # More load, more replicas at the knee's P99 or a higher P99: the front follows the load.
    r.load = lambda: 3000.0
    hot = r.refresh_once()
    assert hot is not None and value(r, "rlctl_pareto_load_requests_per_second") == 3000.0
    assert hot["points"]["cheapest"]["objectives"]["cores_used"] > pub["points"]["cheapest"]["objectives"]["cores_used"]


def test_no_load_or_no_feasible_setting_is_counted_and_the_last_front_stays() -> None:
    r = refresher(None)
    assert r.refresh_once() is None and value(r, "rlctl_pareto_refreshes_total", outcome="no-load") == 1.0
    assert value(r, "rlctl_pareto_knob", point="knee", knob="replicas") is None
    r.load = lambda: 800.0
    assert r.refresh_once() is not None
    knee = value(r, "rlctl_pareto_knob", point="knee", knob="replicas")
    r.load = lambda: 1e6  # far past what 4 replicas serve
    assert r.refresh_once() is None and value(r, "rlctl_pareto_refreshes_total", outcome="infeasible") == 1.0
    assert value(r, "rlctl_pareto_knob", point="knee", knob="replicas") == knee
    assert value(r, "rlctl_pareto_load_requests_per_second") == 800.0


def test_held_knobs_keep_the_value_the_service_reports() -> None:
    now = Knobs(replicas=3, turbo=False, prefetch=True).to_array()
    now[KNOB_COL["gogc"]] = math.nan  # unknown knobs do not matter: they are searched
    pub = refresher(1000.0, knobs=now).refresh_once()
    assert pub is not None
    assert all(p["knobs"]["turbo"] is False and p["knobs"]["prefetch"] is True for p in pub["points"].values())


def test_the_load_is_the_mean_of_the_last_minute() -> None:
    def row(t: float, qps: float) -> np.ndarray:
        return sample(t, qps).to_array()

    rows = [row(0.0, 10_000.0), row(100.0, 400.0), row(130.0, 600.0), row(160.0, math.nan)]
    assert recent_load(rows) == pytest.approx(500.0)  # t=0 is over a minute older than the newest sample
    assert math.isnan(recent_load([]))


def test_a_bad_period_is_refused() -> None:
    r = invoke_rlctl("control", "--service", "svc", "--metrics", "http://127.0.0.1:9/metrics", "--redis", "none",
                     "--pareto-every", "5")  # fmt: skip
    assert r.returncode == 2 and "--pareto-every" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ advisory only


def sample(t: float, qps: float, cpu: float = 0.95) -> TelemetrySample:
    row = dict.fromkeys(TELEMETRY_FIELDS, 1.0)
    row.update(timestamp_s=t, interval_s=0.2, offered_qps=qps, served_qps=qps, p50_ms=4.0, p99_ms=12.0, error_rate=0.0,
               cpu_util=cpu, replicas=2.0, gomaxprocs=2.0, gogc=100.0, gomemlimit_bytes=math.inf, cpu_temp_c=math.nan,
               cpu_freq_ghz=math.nan, numa_remote_fraction=math.nan)  # fmt: skip
    return TelemetrySample(**row, service="svc")


class Replicas:
    """An in-memory replica actuator that records every call."""

    def __init__(self) -> None:
        self.n = 2
        self.calls: list[int] = []

    def get_replicas(self) -> int:
        return self.n

    def set_replicas(self, n: int) -> int:
        self.calls.append(n)
        self.n = n
        return n


Steps = list[tuple[str, list[float]]]


def run_loop(with_refresher: bool, steps: int = 12) -> tuple[Steps, Replicas, CollectorRegistry]:
    replicas = Replicas()
    clock = iter(range(10**6))
    loads = [900.0, 1200.0, 1800.0, 2400.0]

    def scrape() -> TelemetrySample:
        i = next(clock)
        return sample(time.time(), loads[min(i // 3, 3)], cpu=0.6 + 0.05 * i)

    # No cooldowns: the safety layer's clock must not turn a thread's scheduling into a different decision.
    safety = SafetyConfig(bounds=KnobBounds(min_replicas=1, max_replicas=8), cooldown_s=dict.fromkeys(KNOB_FIELDS, 0.0),
                          scale_down_after_up_s=0.0)  # fmt: skip
    config = ControlConfig("svc", interval_s=0.2, safety=safety)
    metrics = ControllerMetrics()
    loop = ControlLoop(config, Actuators(replicas=replicas), scrape=scrape, metrics=metrics)
    refresh = None
    if with_refresher:
        cfg = RefreshConfig(service="svc", every_s=0.05, bounds=BOUNDS, method="exhaustive")
        refresh = start_for_loop(loop, cfg)  # a refresh every 50 ms, in its thread, while the loop steps
    out = []
    try:
        for _ in range(steps):
            r = loop.step()
            out.append((r.reason, [float(v) for v in np.nan_to_num(r.applied, nan=-1.0)]))
            time.sleep(0.05)
    finally:
        if refresh is not None:
            refresh.stop()
            assert refresh.last is not None  # it did refresh meanwhile, from the loop's live load
            assert refresh.last["load_qps"] > 0
    return out, replicas, metrics.registry


def test_the_refresher_never_changes_what_the_loop_decides_or_actuates() -> None:
    plain, plain_replicas, _ = run_loop(False)
    advised, advised_replicas, registry = run_loop(True)
    assert advised == plain  # every step's decision and the knobs it applied
    assert advised_replicas.calls == plain_replicas.calls and plain_replicas.calls  # the same actuator calls, some
    # ... and the advice is on the controller's own /metrics registry.
    assert registry.get_sample_value("rlctl_pareto_knob", {"service": "svc", "point": "knee", "knob": "replicas"})
    assert threading.active_count() < 50


@pytest.mark.real  # promtool
def test_the_pareto_metrics_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make system)"
    metrics = ControllerMetrics()
    r = ParetoRefresher(RefreshConfig(service="svc", bounds=BOUNDS, method="exhaustive"), load=lambda: 1000.0,
                        registry=metrics.registry)  # fmt: skip
    assert r.refresh_once() is not None
    text = generate_latest(r.registry).decode()
    assert "rlctl_pareto_knob{" in text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    pareto = [ln for ln in (check.stdout + check.stderr).splitlines() if "rlctl_pareto" in ln]
    assert not pareto, pareto
