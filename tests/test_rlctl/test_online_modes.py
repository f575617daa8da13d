"""The controller's three modes (act, advise, shadow), its Events and the shadow report.

Against the project's fake Kubernetes API server (``tests/fakek8s.py``) with the real
``kubernetes`` client: ``act`` patches the Deployment's scale, ``advise`` and ``shadow`` never
write to the Deployment or its scale (checked on the server's request log); decisions that
change something are Events ``kubectl describe`` finds (its field selector on
``involvedObject``), rate-limited with a count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_rlctl
from fakek8s import FakeKubeAPI
from online_support import gosvc, redis_server

from rlctl.contract import KNOB_COL, KNOB_FIELDS, TELEMETRY_FIELDS, KnobBounds, TelemetrySample
from rlctl.errors import ConfigError
from rlctl.online.actuators import Actuators, K8sScaleActuator, ReadOnlyActuators
from rlctl.online.events import DecisionEvents
from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop, StepResult
from rlctl.online.modes import shadow_report
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import AuditRecord, TelemetryStore

NS, NAME = "default", "gosvc"
DESCRIBE = f"involvedObject.kind=Deployment,involvedObject.name={NAME},involvedObject.namespace={NS}"


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        api.add_deployment(NS, NAME, 2)
        yield api


class HotService:
    """Synthetic telemetry of a service running hot (CPU 0.95 against a 0.7 target), fresh every call."""

    def __init__(self, cpu: float = 0.95) -> None:
        self.cpu = cpu
        self.t = time.time() - 1.0

    def __call__(self) -> TelemetrySample:
        self.t = max(self.t + 0.2, time.time())
        row = dict.fromkeys(TELEMETRY_FIELDS, 1.0)
        row.update(timestamp_s=self.t, interval_s=0.2, offered_qps=500.0, served_qps=500.0, p50_ms=4.0,
                   p99_ms=12.0, error_rate=0.0, cpu_util=self.cpu, replicas=2.0, gomaxprocs=1.0, gogc=100.0,
                   gomemlimit_bytes=math.inf, cpu_temp_c=math.nan, cpu_freq_ghz=math.nan,
                   numa_remote_fraction=math.nan)  # fmt: skip
        return TelemetrySample(**row, service="svc")


def make_loop(
    fake: FakeKubeAPI, mode: str, *, events: bool = True, scrape: Any = None
) -> tuple[ControlLoop, DecisionEvents | None]:
    client = fake.api_client()
    inner = Actuators(replicas=K8sScaleActuator(client, f"{NS}/{NAME}"))
    actuators = inner if mode == "act" else ReadOnlyActuators(inner, mode=mode)
    sink = DecisionEvents(client, f"{NS}/{NAME}", mode=mode, slo_p99_ms=8.0, min_interval_s=30.0) if events else None
    config = ControlConfig("svc", interval_s=0.2, mode=mode,
                           safety=SafetyConfig(bounds=KnobBounds(min_replicas=1, max_replicas=8)))  # fmt: skip
    loop = ControlLoop(config, actuators, scrape=scrape or HotService(), metrics=ControllerMetrics(), events=sink)
    return loop, sink


def steps(loop: ControlLoop, n: int) -> list[StepResult]:
    return [loop.step() for _ in range(n)]


def deployment_writes(fake: FakeKubeAPI) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.writes() if r.path.startswith("/apis/apps/")]


def describe_events(fake: FakeKubeAPI) -> list[Any]:
    """What ``kubectl describe deployment gosvc`` lists, asked through the real client."""
    from kubernetes import client

    uid = fake.deployments[(NS, NAME)]["uid"]
    core = client.CoreV1Api(fake.api_client())
    return list(core.list_namespaced_event(NS, field_selector=f"{DESCRIBE},involvedObject.uid={uid}").items)


# ------------------------------------------------------------------------- the three modes


def test_act_patches_the_scale_and_says_so_in_an_event_kubectl_describe_lists(fake: FakeKubeAPI) -> None:
    loop, sink = make_loop(fake, "act")
    results = steps(loop, 4)
    assert fake.deployments[(NS, NAME)]["replicas"] > 2
    assert any(w.startswith(f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale")
               for w in deployment_writes(fake))  # fmt: skip
    changed = [r for r in results if r.applied[KNOB_COL["replicas"]] != r.current[KNOB_COL["replicas"]]]
    assert changed and changed[0].actuation["replicas"].startswith("ok: 2 -> ")
    (event,) = describe_events(fake)
    assert event.reason == "ScaledUp" and event.type == "Normal"
    assert event.involved_object.kind == "Deployment" and event.involved_object.name == NAME
    assert event.message.startswith("replicas 2 -> ") and " by hpa (act): P99 12 ms over the 8 ms SLO" in event.message
    assert event.reporting_component == "rlctl-controller" and event.source.component == "rlctl-controller"
    assert event.count >= 1 and sink is not None and sink.errors == 0


@pytest.mark.parametrize("mode", ["advise", "shadow"])
def test_advise_and_shadow_never_write_the_deployment_or_its_scale(fake: FakeKubeAPI, mode: str) -> None:
    loop, _ = make_loop(fake, mode)
    results = steps(loop, 1)
    wanted = loop.metrics.registry.get_sample_value("rlctl_desired_replicas", {"service": "svc"})
    assert wanted is not None and wanted > 2, "the advice an autoscaler would scale to"
    results += steps(loop, 5)
    assert fake.deployments[(NS, NAME)]["replicas"] == 2
    assert deployment_writes(fake) == []
    assert any(r.path.endswith("/scale") for r in fake.calls("GET")), "the replicas in effect are still read"
    word = "advised" if mode == "advise" else "shadow"
    decided = [r for r in results if "replicas" in r.actuation]
    assert decided and all(r.actuation["replicas"].startswith(f"{word}: 2 -> ") for r in decided)
    assert all(r.actuation["mode"] == mode for r in results)
    assert all(r.applied[KNOB_COL["replicas"]] == 2 for r in results)
    assert loop.metrics.registry.get_sample_value("rlctl_controller_mode", {"service": "svc", "mode": mode}) == 1.0
    events = describe_events(fake)
    if mode == "shadow":  # changes nothing, not even the event list
        assert fake.writes() == [] and events == []
    else:  # one Event for the advice; the same advice again is not a new decision
        assert [e.reason for e in events] == ["Advised"] and events[0].count == 1
        assert "the autoscaler carries it out" in events[0].message and "(advise)" in events[0].message
        assert {r.path for r in fake.writes()} == {f"/api/v1/namespaces/{NS}/events"}


def test_the_read_only_actuators_refuse_a_write_even_if_asked(fake: FakeKubeAPI) -> None:
    inner = Actuators(replicas=K8sScaleActuator(fake.api_client(), f"{NS}/{NAME}"))
    ro = ReadOnlyActuators(inner, mode="advise")
    now, results = ro.apply(np.full(len(KNOB_FIELDS), 2.0), np.full(len(KNOB_FIELDS), 5.0))
    assert results == {"all": "error: refused: a controller in advise mode writes nothing"}
    assert now[KNOB_COL["replicas"]] == 2.0 and fake.writes() == []
    assert ro.controllable() == ("replicas",)
    assert ro.reconcile() == {}


def test_the_advice_does_not_flap_with_the_telemetry_clock(fake: FakeKubeAPI) -> None:
    # Samples 0.19 s apart at a 0.2 s interval: with sync_s = the interval the rule would skip
    # every other sync and answer "what runs" (2) in between; the advice must stay put.
    hot = HotService()

    def slightly_early() -> TelemetrySample:
        hot.t -= 0.01
        return hot()

    loop, _ = make_loop(fake, "advise", scrape=slightly_early)
    # The same in act mode (the rule keeps its behavior there): it syncs on every step too.
    act = ControlConfig("svc", interval_s=0.2).hpa_config()
    assert loop.config.hpa_config().sync_s == 0.1 and act.sync_s == 0.1 and act.behavior
    wanted = []
    for _ in range(6):
        loop.step()
        wanted.append(loop.metrics.registry.get_sample_value("rlctl_desired_replicas", {"service": "svc"}))
    assert all(w is not None and w > 2 for w in wanted), wanted


def test_an_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="mode 'watch' is not one of act, advise, shadow"):
        ControlConfig("svc", mode="watch")


def test_a_failing_events_api_never_stops_a_decision(fake: FakeKubeAPI) -> None:
    fake.fail("POST", r"/events$", 403, message="events is forbidden")
    loop, sink = make_loop(fake, "act")
    steps(loop, 4)
    assert fake.deployments[(NS, NAME)]["replicas"] > 2
    assert sink is not None and sink.errors >= 1 and fake.events == {}


# ------------------------------------------------------------------------- Events: the rate limit


def _result(current: int, applied: int, *, reason: str = "policy", t: float = 0.0) -> StepResult:
    cur = np.full(len(KNOB_FIELDS), np.nan)
    cur[KNOB_COL["replicas"]] = current
    app = cur.copy()
    app[KNOB_COL["replicas"]] = applied
    return StepResult(time_s=t, reason=reason, cause="", detail="action [1, 0, 0, 0, 0, 0, 0, 0]",
                      controller="ppo:default", current=cur, target=app, safe=app, applied=app,
                      actuation={"replicas": f"ok: {current} -> {applied}"}, notes=[], telemetry_ids=[], acked=0,
                      redis_ok=True, scraped=True, duration_s=0.01, p99_ms=9.5, saturation=1.2)  # fmt: skip


def test_events_are_rate_limited_per_reason_and_keep_the_count(fake: FakeKubeAPI) -> None:
    now = [1000.0]
    sink = DecisionEvents(fake.api_client(), f"{NS}/{NAME}", mode="act", min_interval_s=30.0, series_s=600.0,
                          clock=lambda: now[0])  # fmt: skip
    for t in (0, 5, 10, 15, 20):  # five scale-ups in 20 s: one write
        now[0] = 1000.0 + t
        sink.record(_result(2, 3))
    sink.record(_result(3, 2))  # another reason: its own Event
    assert sink.written == 2 and sink.held_back == 4
    now[0] = 1035.0  # the window passed: the same Event, count 1 + 4 held back + 1
    sink.record(_result(3, 4))
    up = [e for e in fake.list_events(DESCRIBE) if e["reason"] == "ScaledUp"]
    assert len(up) == 1 and up[0]["count"] == 6 and up[0]["message"].startswith("replicas 3 -> 4 by ppo:default")
    now[0] = 1040.0
    sink.record(_result(4, 5))
    sink.flush()  # what was held back is written on stopping
    (latest,) = [e for e in fake.list_events(DESCRIBE) if e["reason"] == "ScaledUp"]
    assert latest["count"] == 7 and latest["message"].startswith("replicas 4 -> 5")
    now[0] = 1040.0 + 601.0  # a long quiet spell: a new Event
    sink.record(_result(5, 6))
    assert len([e for e in fake.list_events(DESCRIBE) if e["reason"] == "ScaledUp"]) == 2
    assert sink.written == 5 and sink.errors == 0


def test_an_event_that_expired_is_started_again(fake: FakeKubeAPI) -> None:
    now = [0.0]
    sink = DecisionEvents(fake.api_client(), f"{NS}/{NAME}", min_interval_s=30.0, clock=lambda: now[0])
    sink.record(_result(2, 3))
    fake.events.clear()  # the API server dropped it (events live an hour)
    now[0] = 40.0
    sink.record(_result(3, 4))  # the patch finds nothing
    assert sink.errors == 1 and fake.events == {}
    now[0] = 45.0
    sink.record(_result(4, 5))
    (event,) = fake.list_events(DESCRIBE)
    assert event["count"] == 1 and event["message"].startswith("replicas 4 -> 5")


def test_the_event_is_a_valid_core_v1_event_with_a_readable_why(fake: FakeKubeAPI) -> None:
    import kubernetes_validate

    sink = DecisionEvents(fake.api_client(), f"{NS}/{NAME}", mode="act", slo_p99_ms=8.0)
    fallback = _result(2, 4, reason="fallback")
    fallback.cause, fallback.detail, fallback.controller = "policy-timeout", "no answer in 0.4 s", "hpa"
    fallback.notes = ["replicas: +3 limited to +2"]
    sink.record(fallback)
    (event,) = fake.list_events(DESCRIBE)
    assert event["reason"] == "FallbackScaledUp" and event["type"] == "Warning"
    assert event["message"] == (
        "replicas 2 -> 4 by hpa (act): P99 9.5 ms over the 8 ms SLO, saturation in 60 s 1.20, "
        "policy-timeout: no answer in 0.4 s, safety: replicas: +3 limited to +2"
    )
    assert event["involvedObject"]["uid"] == fake.deployments[(NS, NAME)]["uid"]
    body = {k: v for k, v in event.items() if k != "metadata"} | {"metadata": {"name": event["metadata"]["name"]}}
    kubernetes_validate.validate(body, kubernetes_validate.latest_version(), strict=True)


def test_holds_dry_runs_and_unchanged_steps_write_no_event(fake: FakeKubeAPI) -> None:
    sink = DecisionEvents(fake.api_client(), f"{NS}/{NAME}", mode="act")
    sink.record(_result(2, 2))
    held = _result(2, 2, reason="hold")
    sink.record(held)
    sink.record(_result(2, 3, reason="dry-run"))
    assert fake.writes() == [] and sink.written == 0


# ------------------------------------------------------------------------- the shadow report


def _audit(t: float, ran: int, would: int, *, mode: str = "shadow", reason: str = "policy") -> AuditRecord:
    return AuditRecord(service="svc", time_s=t, reason=reason, controller="ppo:default",
                       current_knobs={"replicas": ran, "gogc": 100}, safe_knobs={"replicas": would, "gogc": 200},
                       actuation={"mode": mode})  # fmt: skip


def _sample(t: float, p99: float) -> TelemetrySample:
    row = dict.fromkeys(TELEMETRY_FIELDS, 1.0)
    row.update(timestamp_s=t, p99_ms=p99)
    return TelemetrySample(**row, service="svc")


def test_the_shadow_report_pairs_would_with_what_ran_next() -> None:
    # The autoscaler ran 2, 2, 3, 4, 4; the shadow wanted 3, 4, 4, 4, 3 (one interval ahead).
    ran, would = [2, 2, 3, 4, 4], [3, 4, 4, 4, 3]
    records = [_audit(100.0 + 5 * i, r, w) for i, (r, w) in enumerate(zip(ran, would, strict=True))]
    records.insert(2, _audit(109.0, 9, 9, mode="act"))  # another controller's record: not compared
    samples = [_sample(100.0 + 5 * i, p) for i, p in enumerate([12.0, 11.0, 6.0, 5.0, 5.0])]
    rep = shadow_report([*records, _audit(125.0, 4, 9, reason="hold")], telemetry=samples, slo_p99_ms=8.0)
    assert rep["decisions"] == 6 and rep["held"] == 1 and rep["reasons"] == {"policy": 5, "hold": 1}
    assert rep["timeline"][-1]["would"] == 4.0  # a hold would keep what runs; it is not compared
    rep = shadow_report(records, telemetry=samples, slo_p99_ms=8.0)
    assert rep["decisions"] == 5 and rep["compared"] == 4 and rep["held"] == 0 and rep["interval_s"] == 5.0
    # pairs (would, did): (3,2) (4,3) (4,4) (4,4)
    assert rep["would_more"] == 2 and rep["would_fewer"] == 0 and rep["agree_share"] == 0.5
    assert rep["mean_abs_diff_replicas"] == 0.5 and rep["max_abs_diff_replicas"] == 1
    assert rep["replica_seconds"] == {"would": 75.0, "did": 65.0}
    assert rep["over_slo"] == {"slo_p99_ms": 8.0, "decisions": 2, "where_would_more": 2, "where_agree": 0}
    assert rep["knob_disagreements"]["gogc"] == 4
    assert rep["timeline"][0] == {"time_s": 100.0, "reason": "policy", "controller": "ppo:default", "ran": 2.0,
                                  "would": 3.0, "did": 2.0, "p99_ms": 12.0}  # fmt: skip
    assert rep["timeline"][-1]["did"] is None
    observed = [(100.0, 2.0), (104.0, 3.0), (111.0, 4.0)]
    rep = shadow_report(records, observed=observed, slo_p99_ms=8.0)
    assert rep["did_from"] == "observed" and [p["did"] for p in rep["timeline"]] == [3.0, 3.0, 4.0, 4.0, 4.0]
    json.dumps(rep, allow_nan=False)


@pytest.mark.real  # redis-server
def test_shadow_report_cli_reads_the_audit_stream(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        store = TelemetryStore(redis.url)
        now = time.time()
        store.audit_many([_audit(now - 20 + 5 * i, r, w) for i, (r, w) in enumerate([(2, 3), (2, 3), (3, 3)])])
        store.add_many([_sample(now - 20 + 5 * i, 9.0) for i in range(3)])
        proc = invoke_rlctl("shadow-report", "--service", "svc", "--redis", redis.url, "--json", "-")
        assert proc.returncode == 0, proc.stderr
        rep = json.loads(proc.stdout)
        assert rep["decisions"] == 3 and rep["would_more"] == 1 and rep["agree_share"] == 0.5
        assert rep["over_slo"]["decisions"] == 2
        proc = invoke_rlctl("shadow-report", "--service", "other", "--redis", redis.url)
        assert proc.returncode == 2
        assert "no shadow-mode decisions of service 'other'" in proc.stderr
        assert "rlctl control --service other --mode shadow" in proc.stderr


@pytest.mark.real  # gosvc
@pytest.mark.parametrize("mode", ["act", "advise", "shadow"])
def test_rlctl_control_mode_through_the_cli(tmp_path: Path, fake: FakeKubeAPI, mode: str) -> None:
    # The Deployment runs 2 replicas, the bounds allow 1: every mode decides 2 -> 1.
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    with gosvc(tmp_path) as service:
        proc = invoke_rlctl(
            "control", "--service", "svc", "--metrics", service.metrics_url, "--redis", "none",
            "--k8s-deployment", f"{NS}/{NAME}", "--kubeconfig", str(kubeconfig), "--mode", mode,
            "--interval", "0.2", "--max-steps", "5", "--metrics-port", "0", "--max-replicas", "1", "--no-status",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(r.path.endswith("/scale") for r in fake.calls("GET"))
    reasons = [e["reason"] for e in fake.list_events(DESCRIBE)]
    if mode == "act":
        assert fake.deployments[(NS, NAME)]["replicas"] == 1
        assert [w.split()[0] for w in deployment_writes(fake)] == ["PATCH"]
        assert reasons == ["ScaledDown"]
    else:
        assert deployment_writes(fake) == [] and fake.deployments[(NS, NAME)]["replicas"] == 2
        assert reasons == (["Advised"] if mode == "advise" else [])


def test_the_scaled_object_stand_in_does_kedas_arithmetic() -> None:
    from rlctl.online.modes_e2e import scaled_object_replicas as replicas

    assert replicas(3.0, 1, 0) == 3 and replicas(2.4, 1, 0) == 3  # ceil(advice / threshold 1)
    assert replicas(10.0, 1, 0) == 4 and replicas(0.0, 3, 0) == 1  # the bounds
    assert replicas(10.5, 10, 0, max_replicas=16) == 10  # within the HPA's 10 % tolerance
    assert replicas(12.0, 10, 0, max_replicas=16) == 12
    assert replicas(math.nan, 2, 2) == 2 and replicas(math.nan, 2, 3) == 4  # fallback after 3 failed polls
