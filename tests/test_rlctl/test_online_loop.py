"""The control loop with a real redis-server and a real gosvc; the drills for Redis and the Go service.

Drills run the loop in a thread at a 0.5 s interval, kill a part mid-run, and check that the
loop keeps deciding, falls back (or holds) on the first step after the kill and logs why,
resumes when the part returns, and loses no acknowledged telemetry.
"""

from __future__ import annotations

import io
import logging
import math
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import run_rlctl
from online_support import TOKEN, gosvc, redis_server, tiny_artifact, token_file, wait_until

from policies.guard import GuardConfig
from rlctl.contract import KNOB_COL, TelemetrySample
from rlctl.online.actuators import Actuators, AdminKnobsActuator
from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop, StepResult, run_in_thread
from rlctl.online.policy import HttpPolicy, InProcessPolicy, PolicyUnavailable
from rlctl.online.procs import GoService, RedisServer, free_port
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import AuditRecord, StoreUnavailable, TelemetryStore
from rlctl.telemetry.scrape import Scraper

pytestmark = pytest.mark.real  # redis-server, gosvc

INTERVAL = 0.5


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def service(tmp_path: Path) -> Iterator[GoService]:
    with gosvc(tmp_path, "--cpu-us", "20", "--gomaxprocs", "2") as svc:
        yield svc


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.mktemp("art") / "tiny")


def make_loop(
    service: GoService, redis: RedisServer | None, *, policy: object = None, consumer: str = "c", **safety: object
) -> ControlLoop:
    # Timeouts well above a loaded CI host's worst scheduling delay: a part that is down
    # refuses the connection at once, so the drills do not wait on them, and a live part
    # that is merely slow must not turn a step into a "hold" or "fallback".
    scraper = Scraper(service.metrics_url, service="svc", timeout_s=2.0)
    scraper.prime()  # the first scrape of a window needs a previous one for its rates
    admin = AdminKnobsActuator(service.admin_url, token=TOKEN, timeout_s=2.0)
    store = TelemetryStore(redis.url, consumer=consumer, timeout_s=1.0) if redis else None
    config = ControlConfig("svc", interval_s=INTERVAL, safety=SafetyConfig(**safety))  # type: ignore[arg-type]
    return ControlLoop(config, Actuators(admin=admin), scrape=scraper.scrape, store=store, policy=policy)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.results: list[StepResult] = []
        self.lock = threading.Lock()

    def __call__(self, r: StepResult) -> None:
        with self.lock:
            self.results.append(r)

    def after(self, t: float) -> list[StepResult]:
        with self.lock:
            return [r for r in self.results if r.time_s > t]


def test_steps_audit_and_ack_everything(service: GoService, redis: RedisServer) -> None:
    loop = make_loop(service, redis)
    results = [loop.step() for _ in range(3)]
    assert [r.reason for r in results] == ["hpa", "hpa", "hpa"]  # no policy: the HPA rule decides
    store = TelemetryStore(redis.url)
    audit = store.audit_records("svc")
    assert [a.reason for a in audit] == ["hpa"] * 3
    assert [a.telemetry_ids for a in audit] == [r.telemetry_ids for r in results]
    assert all(len(a.telemetry_ids) == 1 and a.feature_hash for a in audit)
    assert store.pending_count("svc") == 0 and store.length("svc") == 3
    assert audit[-1].current_knobs and audit[-1].current_knobs["gomaxprocs"] == 2


def test_in_process_policy_decides_and_the_audit_has_its_action(
    service: GoService, redis: RedisServer, artifact: Path
) -> None:
    policy = InProcessPolicy(artifact)
    loop = make_loop(service, redis, policy=policy)
    r = loop.step()
    assert r.reason == "policy" and r.controller == "ppo:tiny" and r.raw_action is not None and len(r.raw_action) == 8
    (rec,) = TelemetryStore(redis.url).audit_records("svc")
    assert rec.raw_action == r.raw_action and rec.controller == "ppo:tiny" and len(rec.feature_hash) == 16


def test_dry_run_changes_nothing(service: GoService, redis: RedisServer) -> None:
    class WantsGogc800:
        name, window = "greedy", None

        def act(self, service: str, window: object, knobs: np.ndarray) -> object:
            from rlctl.online.policy import Decision

            target = knobs.copy()
            target[KNOB_COL["gogc"]] = 800
            return Decision([2, 1, 2, 1, 1, 1, 0, 0], target, "greedy", "x", "y")

    loop = make_loop(service, redis, policy=WantsGogc800(), dry_run=True)
    r = loop.step()
    assert r.reason == "dry-run" and r.detail.startswith("would: policy")
    assert r.actuation == {"all": "skipped (dry-run): would change gogc"}
    assert r.safe[KNOB_COL["gogc"]] == 200  # one rung, as it would have been
    assert AdminKnobsActuator(service.admin_url, token=TOKEN).get()["gogc"] == 100
    assert TelemetryStore(redis.url).audit_records("svc")[-1].reason == "dry-run"


def test_killswitch_stops_actuation_and_lifting_it_resumes(service: GoService, redis: RedisServer) -> None:
    store = TelemetryStore(redis.url)
    store.set_killswitch(True, service="svc", reason="incident")
    loop = make_loop(service, redis)
    r = loop.step()
    assert (r.reason, r.detail, r.actuation) == ("killswitch", "rlctl:killswitch:svc is set (incident)", {})
    store.set_killswitch(False, service="svc")
    assert loop.step().reason == "hpa"


def test_stale_telemetry_holds_or_falls_back(service: GoService) -> None:
    old = time.time() - 60

    def stale() -> TelemetrySample:
        return TelemetrySample.from_dict({"timestamp_s": old, "offered_qps": 1, "p99_ms": 1, "cpu_util": 0.5})

    admin = AdminKnobsActuator(service.admin_url, token=TOKEN)
    for action, reason in (("hold", "hold"), ("hpa", "fallback")):
        config = ControlConfig("svc", interval_s=INTERVAL, safety=SafetyConfig(stale_action=action))  # type: ignore[arg-type]
        r = ControlLoop(config, Actuators(admin=admin), scrape=stale).step()
        assert (r.reason, r.cause) == (reason, "telemetry-stale")
        assert r.detail.startswith("newest sample is 60.") and r.detail.endswith("(limit 1.5 s = 3 intervals)")


def test_restarted_controller_rereads_what_it_did_not_acknowledge(service: GoService, redis: RedisServer) -> None:
    first = make_loop(service, redis, consumer="ctl")
    first.step()
    # The first controller dies between reading and acknowledging: its entries stay pending.
    store = TelemetryStore(redis.url, consumer="ctl")
    unacked = store.add_many([TelemetrySample.from_dict({"timestamp_s": time.time() + i, "service": "svc"})
                              for i in (0.001, 0.002)])  # fmt: skip
    assert [e.id for e in store.read("svc")] == unacked
    assert store.pending_count("svc") == 2
    second = make_loop(service, redis, consumer="ctl")
    r = second.step()
    assert set(unacked) <= set(r.telemetry_ids) and r.acked == len(r.telemetry_ids)
    assert store.pending_count("svc") == 0


def test_controller_metrics_endpoint(service: GoService, redis: RedisServer) -> None:
    metrics = ControllerMetrics()
    port = free_port()
    server = metrics.serve(port)
    try:
        loop = make_loop(service, redis)
        loop.metrics = metrics
        for _ in range(3):
            for _ in range(5):  # traffic, so that the window has a P99
                urllib.request.urlopen(f"{service.url}/work", timeout=5).read()
            loop.step()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
    assert 'rlctl_decisions_total{reason="hpa",service="svc"} 3.0' in text
    assert 'rlctl_boundary_saturation_ratio{service="svc"}' in text
    assert 'rlctl_redis_up{service="svc"} 1.0' in text and "rlctl_last_p99_ms" not in text
    # Base units: the newest sample's P99 (a millisecond field of the contract) is exported in seconds.
    p99_ms = loop.history[-1].p99_ms
    assert math.isfinite(p99_ms) and f'rlctl_last_p99_seconds{{service="svc"}} {p99_ms / 1e3!r}' in text


def test_policy_server_that_never_answers_times_out_into_the_fallback(service: GoService) -> None:
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(8)  # accepts connections, never answers
        url = f"http://127.0.0.1:{sink.getsockname()[1]}"
        loop = make_loop(service, None, policy=HttpPolicy(url, timeout_s=0.2))
        t = time.monotonic()
        r = loop.step()
        assert time.monotonic() - t < INTERVAL
        assert (r.reason, r.cause) == ("fallback", "policy-timeout")
        assert r.detail == f"{url}/act: no answer within 0.2 s"
    with pytest.raises(PolicyUnavailable, match="Connection refused") as err:
        HttpPolicy(url, timeout_s=0.2).act("svc", np.zeros((1, 27)), np.ones(8))
    assert err.value.cause == "policy-error"


@pytest.mark.slow
def test_drill_redis_killed_mid_run(service: GoService, tmp_path: Path, artifact: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="rlctl.online.loop")
    redis = RedisServer(appendonly=True, directory=tmp_path / "r")
    redis.start()
    rec = Recorder()
    loop = make_loop(service, redis, policy=InProcessPolicy(artifact))
    thread = run_in_thread(loop, on_step=rec)
    try:
        wait_until(lambda: sum(r.reason == "policy" for r in rec.results) >= 3, 15)
        redis.kill()
        killed = time.time()
        first = wait_until(lambda: rec.after(killed)[:1], 5)[0]
        assert (first.reason, first.cause) == ("fallback", "redis-down"), first  # the very next step
        assert "redis" in first.detail
        wait_until(lambda: len(rec.after(killed)) >= 4, 10)
        assert all(r.reason == "fallback" and r.cause == "redis-down" for r in rec.after(killed))
        assert any("fallback (redis-down)" in m for m in caplog.messages)
        redis.start()
        restarted = time.time()
        wait_until(lambda: [r for r in rec.after(restarted) if r.reason == "policy"], 10)
    finally:
        loop.stop()
        thread.join(5)
    try:
        assert not thread.is_alive()
        store = TelemetryStore(redis.url)
        loop.step()  # one more step acknowledges whatever the last one read
        in_stream = {e.id for e in store.entries("svc")}
        audited = [i for a in store.audit_records("svc") for i in a.telemetry_ids]
        assert audited and set(audited) <= in_stream  # acknowledged telemetry survived the crash
        assert store.pending_count("svc") == 0
        # Decisions made while Redis was down were buffered and written when it came back.
        assert any(a.cause == "redis-down" for a in store.audit_records("svc"))
        # Every sample scraped during the outage reached the stream.
        stamps = sorted(e.sample.timestamp_s for e in store.entries("svc") if e.sample)
        outage = [r.time_s for r in rec.results if r.cause == "redis-down"]
        assert sum(1 for s in stamps if min(outage) - 0.1 <= s <= max(outage) + 0.6) >= len(outage)
    finally:
        redis.cleanup()


@pytest.mark.slow
def test_drill_go_service_killed(tmp_path: Path, redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rlctl.online.loop")
    port = free_port()
    tok = token_file(tmp_path)
    svc = GoService(["--cpu-us", "20"], token_file=tok, addr=f"127.0.0.1:{port}").start()
    rec = Recorder()
    loop = make_loop(svc, redis)
    thread = run_in_thread(loop, on_step=rec)
    try:
        wait_until(lambda: sum(r.reason == "hpa" for r in rec.results) >= 2, 10)
        svc.kill()
        killed = time.time()
        first = wait_until(lambda: rec.after(killed)[:1], 5)[0]
        assert (first.reason, first.cause) == ("hold", "service-down"), first
        assert "scrape" in first.detail and first.actuation.get("read-admin", "").startswith("error: GET")
        wait_until(lambda: len(rec.after(killed)) >= 3, 10)
        assert all(r.reason == "hold" and not r.scraped for r in rec.after(killed))
        assert any("hold (service-down)" in m for m in caplog.messages)
        svc = GoService(["--cpu-us", "20"], token_file=tok, addr=f"127.0.0.1:{port}").start()
        back = time.time()
        wait_until(lambda: [r for r in rec.after(back) if r.reason == "hpa"], 10)
    finally:
        loop.stop()
        thread.join(5)
        svc.stop()
    assert not thread.is_alive()
    store = TelemetryStore(redis.url)
    assert any(a.cause == "service-down" for a in store.audit_records("svc"))
    assert store.pending_count("svc") <= 1


@pytest.mark.parametrize("each_replica", [False, True])
def test_cli_control_runs_and_audits(
    service: GoService, redis: RedisServer, tmp_path: Path, each_replica: bool
) -> None:
    tok = token_file(tmp_path)
    extra = ["--each-replica"] if each_replica else []
    proc = run_rlctl("control", "--service", "cli", "--metrics", service.metrics_url, "--admin", service.admin_url,
                     "--admin-token-file", str(tok), "--redis", redis.url, "--interval", "1", "--max-steps", "3",
                     "--no-status", "--metrics-port", "0", "--policy", "hpa", *extra, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "stopped after 3 decisions" in proc.stderr
    assert [a.reason for a in TelemetryStore(redis.url).audit_records("cli")] == ["hpa"] * 3


class FlakyAuditStore(TelemetryStore):
    """A real store whose next audit writes fail as a timed-out Redis call does."""

    fail_audits = 0

    def audit_many(self, records: Sequence[AuditRecord]) -> list[str]:
        if self.fail_audits > 0:
            self.fail_audits -= 1
            raise StoreUnavailable("redis XADD rlctl:audit:svc: Timeout reading from socket")
        return super().audit_many(records)


def test_run_writes_the_last_steps_buffered_audit_record_when_it_stops(service: GoService, redis: RedisServer) -> None:
    loop = make_loop(service, redis)
    store = FlakyAuditStore(redis.url, consumer="f", timeout_s=1.0)
    loop.store = store
    loop.run(max_steps=2, on_step=lambda r: setattr(store, "fail_audits", 1 if loop.steps == 1 else 0))
    # The second step's write failed; the record was kept and written when run() returned.
    assert [a.reason for a in TelemetryStore(redis.url).audit_records("svc")] == ["hpa", "hpa"]
    assert not loop.audit_buffer


def test_flush_says_what_stayed_unwritten_and_keeps_it(service: GoService, redis: RedisServer) -> None:
    loop = make_loop(service, redis)
    loop.step()
    store = FlakyAuditStore(redis.url, consumer="f", timeout_s=1.0)
    loop.store = store
    written = TelemetryStore(redis.url).audit_records("svc")[0]
    loop.audit_buffer.extend([written, written])
    store.fail_audits = 1
    assert loop.flush() == (
        "0 samples and 2 audit records not written: redis XADD rlctl:audit:svc: Timeout reading from socket"
    )
    assert len(loop.audit_buffer) == 2
    assert loop.flush() is None and not loop.audit_buffer
    assert len(TelemetryStore(redis.url).audit_records("svc")) == 3


def test_cli_control_stops_on_sigterm_after_the_step_and_writes_every_audit_record(
    service: GoService, redis: RedisServer, tmp_path: Path
) -> None:
    import signal
    import subprocess

    from conftest import REPO, RLCTL

    proc = subprocess.Popen(
        [str(RLCTL), "control", "--service", "term", "--metrics", service.metrics_url, "--admin", service.admin_url,
         "--admin-token-file", str(token_file(tmp_path)), "--redis", redis.url, "--interval", "0.5",
         "--no-status", "--metrics-port", "0", "--policy", "hpa"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        wait_until(lambda: len(TelemetryStore(redis.url).audit_records("term")) >= 2, 60)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    decisions = int(err.split("stopped after ")[1].split()[0])
    assert decisions >= 2
    assert len(TelemetryStore(redis.url).audit_records("term")) == decisions


def test_cli_control_bad_input_exits_2() -> None:
    proc = run_rlctl("control", "--service", "x", "--metrics", "http://127.0.0.1:9/metrics", "--policy", "p",
                     "--policy-url", "http://127.0.0.1:9")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "ConfigError: pass either --policy-url (a policy server) or --policy (in-process), not both"
    )


def test_cli_killswitch(redis: RedisServer) -> None:
    assert run_rlctl("killswitch", "on", "--service", "a", "--redis", redis.url, "--reason", "drill").returncode == 0
    assert TelemetryStore(redis.url).killswitch("a") == "rlctl:killswitch:a is set (drill)"
    assert run_rlctl("killswitch", "off", "--service", "a", "--redis", redis.url).returncode == 0
    assert TelemetryStore(redis.url).killswitch("a") is None


def test_step_result_p99_is_a_number_after_traffic(service: GoService, redis: RedisServer) -> None:
    loop = make_loop(service, redis)
    loop.step()
    for _ in range(20):
        urllib.request.urlopen(f"{service.url}/work", timeout=5).read()
    r = loop.step()
    assert math.isfinite(r.p99_ms) and r.p99_ms > 0


def test_guard_raises_the_policys_replicas_on_a_sustained_miss_and_says_so(
    service: GoService, redis: RedisServer, artifact: Path
) -> None:
    # An SLO of 1 microsecond: every P99 of the real service is a miss, two in a row a sustained one.
    guard = GuardConfig(slo_p99_ms=0.001, after=2)
    scraper = Scraper(service.metrics_url, service="svc", timeout_s=2.0)
    scraper.prime()
    config = ControlConfig("svc", interval_s=INTERVAL, guard=guard)
    loop = ControlLoop(config, Actuators(), scrape=scraper.scrape, store=TelemetryStore(redis.url, consumer="g"),
                       policy=InProcessPolicy(artifact))  # fmt: skip
    results = []
    for _ in range(3):
        for _ in range(20):
            urllib.request.urlopen(f"{service.url}/work", timeout=5).read()
        results.append(loop.step())
    assert all(r.controller == "ppo+guard:tiny" for r in results)
    raised = [r for r in results if "SLO guard: replicas" in r.detail]
    assert raised, [r.detail for r in results]
    r = raised[0]
    assert r.target[KNOB_COL["replicas"]] >= r.current[KNOB_COL["replicas"]] + 1
    records = TelemetryStore(redis.url).audit_records("svc")
    assert any("SLO guard" in rec.detail and rec.controller == "ppo+guard:tiny" for rec in records)
    unguarded = make_loop(service, redis, policy=InProcessPolicy(artifact), consumer="u").step()
    assert unguarded.controller == "ppo:tiny" and "SLO guard" not in unguarded.detail


def test_replica_set_scraper_sums_replicas_exactly(tmp_path: Path) -> None:
    from rlctl.online.actuators import ProcessReplicaActuator
    from rlctl.online.sources import ReplicaSetScraper

    with ProcessReplicaActuator(["--cpu-us", "10", "--gomaxprocs", "1"], token_file=token_file(tmp_path)) as reps:
        reps.set_replicas(2)
        scraper = ReplicaSetScraper(reps.metrics_urls, service="rs")
        scraper.scrape()
        for i, url in enumerate(reps.urls()):
            for _ in range(10 * (i + 1)):
                urllib.request.urlopen(f"{url}/work", timeout=5).read()
        s = scraper.scrape()
    assert s.replicas == 2 and s.gomaxprocs == 1  # per-replica settings are not summed
    assert s.served_qps * s.interval_s == pytest.approx(30, abs=0.5)  # 10 + 20 requests, both replicas
    assert math.isfinite(s.p99_ms) and s.error_rate == 0.0


def test_status_view_renders(service: GoService, redis: RedisServer) -> None:
    from rich.console import Console

    from rlctl.commands.control import _status_table

    loop = make_loop(service, redis)
    Console(file=io.StringIO()).print(_status_table(loop.status()))  # before any step
    loop.step()
    status = loop.status()
    assert status["reason"] == "hpa" and status["redis_ok"] and status["knobs"]["gomaxprocs"] == 2
    console = Console(record=True, width=160)
    console.print(_status_table(status))
    text = console.export_text()
    assert "decision" in text and "hpa" in text and "saturation in 60 s" in text


def test_each_address_resolves_a_host_to_one_url_per_address() -> None:
    from rlctl.online.sources import each_address

    assert each_address("http://127.0.0.1:8080/admin/knobs")() == ["http://127.0.0.1:8080/admin/knobs"]
    assert each_address("http://[::1]:9/metrics")() == ["http://[::1]:9/metrics"]
    assert each_address("http://no-such-host.invalid:80/metrics")() == []


@pytest.mark.slow
def test_online_code_never_imports_the_simulator_or_the_trainer(tmp_path: Path) -> None:
    """Production runs the controller and the policy server without envs/ or the trainer."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import rlctl.online.loop, rlctl.online.serve, rlctl.online.bench, rlctl.online.e2e, rlctl.commands.control\n"
        "from rlctl.online.policy import InProcessPolicy, placeholder_artifact\n"
        f"InProcessPolicy(placeholder_artifact({str(tmp_path / 'p')!r}))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'envs' or m in ('policies.train', 'policies.evaluate')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_fallback_never_scales_down_under_overload_after_an_hour_of_policy_decisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The HPA fallback's clock is the telemetry's, not its call count. Reproduction: a fallback
    at 2 replicas, an hour in which the policy took the service to 12, then the policy fails
    under overload. A rule that advanced 5 s per call saw its 2-replica scale-up "5 s ago" and
    capped the scale-up at 2 * 2 + 2 = 6: 12 replicas under overload went down to 6."""
    import rlctl.online.loop as loop_mod
    from rlctl.online.policy import Decision

    clock = {"t": 1_000_000.0}
    monkeypatch.setattr(loop_mod, "time", type("Clock", (), {
        "time": staticmethod(lambda: clock["t"]), "monotonic": staticmethod(lambda: clock["t"]),
    }))  # fmt: skip

    class Replicas:
        n = 2

        def get_replicas(self) -> int:
            return self.n

        def set_replicas(self, n: int) -> int:
            self.n = n
            return n

    class FlakyPolicy:
        name, window, fail = "ppo:flaky", None, True

        def act(self, service: str, window: object, knobs: np.ndarray) -> Decision:
            if self.fail:
                raise RuntimeError("policy server crashed")
            target = knobs.copy()
            target[KNOB_COL["replicas"]] = 12
            return Decision([0] * 8, target, self.name, "x", "y")

    load = {"util": 0.8}

    def scrape() -> TelemetrySample:
        return TelemetrySample.from_dict({
            "timestamp_s": clock["t"], "interval_s": 5.0, "offered_qps": 1000.0, "served_qps": 1000.0,
            "p99_ms": 20.0, "p50_ms": 5.0, "error_rate": 0.0, "cpu_util": load["util"],
        })  # fmt: skip

    reps, policy = Replicas(), FlakyPolicy()
    safety = SafetyConfig(max_step_replicas=16, scale_down_after_up_s=0.0)
    config = ControlConfig("svc", interval_s=5.0, safety=safety)
    loop = ControlLoop(config, Actuators(replicas=reps), scrape=scrape, policy=policy)  # type: ignore[arg-type]
    first = loop.step()  # the fallback at 2 replicas, 80 % against a 70 % target: up to 3
    assert (first.reason, first.cause) == ("fallback", "policy-error") and reps.n == 3
    policy.fail = False
    for _ in range(720):  # an hour of policy decisions: 12 replicas
        clock["t"] += 5.0
        assert loop.step().reason == "policy"
    assert reps.n == 12
    policy.fail, load["util"] = True, 1.0  # overload, and the policy fails
    seen = []
    for _ in range(24):  # two minutes of fallback under overload
        clock["t"] += 5.0
        before = reps.n
        r = loop.step()
        assert (r.reason, r.cause) == ("fallback", "policy-error")
        assert r.target[KNOB_COL["replicas"]] >= before and reps.n >= before, (before, r.target, r.notes)
        seen.append(reps.n)
    assert seen[0] > 12 and seen[-1] == config.safety.bounds.max_replicas  # it scaled up, to the bound
