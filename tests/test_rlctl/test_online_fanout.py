"""Runtime knobs on every ready replica: EndpointSlices from the fake API server, real gosvc replicas, real Redis.

The replicas listen for the admin API on distinct loopback addresses (127.0.0.2, .3, ...) and
one port, as pods do on their own IPs; the fake API server's EndpointSlice points at them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fakek8s import FakeKubeAPI, endpoint_slice
from online_support import TOKEN, redis_server, token_file, wait_until

from rlctl.contract import KNOB_COL
from rlctl.errors import ActuatorError, ConfigError
from rlctl.harness.admin import AdminClient
from rlctl.online.actuators import Actuators, AdminKnobsActuator
from rlctl.online.fanout import (
    Endpoint,
    EndpointSliceSource,
    KnobFanout,
    endpoint_name,
    parse_endpoint_list,
    static_endpoints,
)
from rlctl.online.loop import ControlConfig, ControlLoop
from rlctl.online.policy import Decision
from rlctl.online.procs import GoService, RedisServer, free_port
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import TelemetryStore
from rlctl.telemetry.scrape import Scraper

NS, SVC = "shop", "gosvc-admin"


# ----------------------------------------------------------------------------- pure parts


def test_endpoint_lists_from_the_command_line_and_from_a_file(tmp_path: Path) -> None:
    assert parse_endpoint_list("http://127.0.0.2:9091, http://127.0.0.3:9091/admin/knobs") == [
        "http://127.0.0.2:9091", "http://127.0.0.3:9091/admin/knobs"]  # fmt: skip
    listed = tmp_path / "replicas"
    listed.write_text("# the local replicas\nhttp://127.0.0.2:9091\n\nhttp://127.0.0.3:9091  # second\n")
    assert parse_endpoint_list(str(listed)) == ["http://127.0.0.2:9091", "http://127.0.0.3:9091"]
    eps = static_endpoints(parse_endpoint_list(str(listed)))()
    assert eps == [Endpoint("127.0.0.2:9091", "http://127.0.0.2:9091/admin/knobs"),
                   Endpoint("127.0.0.3:9091", "http://127.0.0.3:9091/admin/knobs")]  # fmt: skip
    with pytest.raises(ConfigError, match=r"--knob-endpoints 'replicas.txt': neither a URL list nor an existing file"):
        parse_endpoint_list("replicas.txt")
    with pytest.raises(ConfigError, match=r"'http://127.0.0.2' is not an admin URL; write http://HOST:PORT"):
        parse_endpoint_list("http://127.0.0.2")
    with pytest.raises(ConfigError, match=r"\['http://a:1'\] listed more than once"):
        parse_endpoint_list("http://a:1,http://a:1")
    with pytest.raises(ConfigError, match="expected NAMESPACE/SERVICE"):
        EndpointSliceSource.from_spec("gosvc-admin", api_client=None)


def test_control_refuses_two_replica_lists() -> None:
    from conftest import invoke_rlctl

    r = invoke_rlctl("control", "--service", "s", "--metrics", "http://127.0.0.1:9/metrics", "--redis", "none",
                     "--admin", "http://127.0.0.1:9", "--knob-endpoints", "http://127.0.0.1:9",
                     "--max-steps", "1")  # fmt: skip
    assert r.returncode == 2 and "pass one of --admin, --knob-endpoints" in r.stderr


def test_endpoint_slices_give_ready_and_not_ready_endpoints_and_the_named_port() -> None:
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, endpoint_slice(SVC, [("10.0.0.1", True, "gosvc-a"), ("10.0.0.2", False, "gosvc-b"),
                                                        ("10.0.0.3", None, "gosvc-c")], port=9091))  # fmt: skip
        other = endpoint_slice("other", [("10.0.9.9", True, "other-a")], port=9091)
        api.put_endpoint_slice(NS, other)
        api.put_endpoint_slice(NS, endpoint_slice(SVC, [("10.0.0.4", True, "gosvc-d")], port=8080,
                                                  port_name="http", name="gosvc-admin-http"))  # fmt: skip
        eps = EndpointSliceSource(api.api_client(), NS, SVC)()
        # Not ready is kept (and skipped by the fan-out); an unset ready condition reads as ready (the API's rule);
        # another Service's slice is not listed; a slice without the admin port gives nothing.
        assert [(e.name, e.url, e.ready) for e in eps] == [
            ("gosvc-a", "http://10.0.0.1:9091/admin/knobs", True),
            ("gosvc-b", "http://10.0.0.2:9091/admin/knobs", False),
            ("gosvc-c", "http://10.0.0.3:9091/admin/knobs", True),
        ]
        (listed,) = [r for r in api.calls("GET") if r.path.endswith("/endpointslices")]
        assert listed.query["labelSelector"] == [f"kubernetes.io/service-name={SVC}"]
        api.fail("GET", "endpointslices", 403, times=1)
        with pytest.raises(ActuatorError, match=r"forbidden to list endpointslices in namespace shop: RBAC lacks verb"):
            EndpointSliceSource(api.api_client(), NS, SVC)()


def test_the_watch_keeps_the_endpoints_current() -> None:
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, endpoint_slice(SVC, [("10.0.0.1", True, "gosvc-a")], port=9091))
        source = EndpointSliceSource(api.api_client(), NS, SVC, watch_timeout_s=5).start()
        try:
            assert [e.name for e in source()] == ["gosvc-a"]
            lists = len(api.calls("GET"))
            api.put_endpoint_slice(NS, endpoint_slice(SVC, [("10.0.0.1", True, "gosvc-a"),
                                                            ("10.0.0.2", True, "gosvc-b")], port=9091))  # fmt: skip
            wait_until(lambda: [e.name for e in source()] == ["gosvc-a", "gosvc-b"], 5.0)
            api.delete_endpoint_slice(NS, f"{SVC}-admin")
            wait_until(lambda: source() == [], 5.0)
            watches = [r for r in api.calls("GET") if r.query.get("watch") == ["true"]]
            assert watches and len(api.calls("GET")) - lists <= 3  # the changes came by watch, not by listing
        finally:
            source.stop()


# ----------------------------------------------------------------------------- real replicas


class Replicas:
    """gosvc processes with their admin API on 127.0.0.<2+i>:<port> (one port, distinct addresses)."""

    def __init__(self, tmp: Path) -> None:
        self.token_file = token_file(tmp)
        self.port = free_port()
        self.procs: dict[int, GoService] = {}

    def address(self, i: int) -> str:
        return f"127.0.0.{2 + i}"

    def start(self, i: int) -> GoService:
        args = ["--admin-addr", f"{self.address(i)}:{self.port}", "--cpu-us", "10", "--gomaxprocs", "1"]
        self.procs[i] = GoService(args, token_file=self.token_file).start()
        return self.procs[i]

    def gogc(self, i: int) -> int:
        return AdminClient(f"http://{self.address(i)}:{self.port}", token=TOKEN, timeout_s=2.0).get_knobs()["gogc"]

    def slice(self, ready: dict[int, bool]) -> dict[str, Any]:
        return endpoint_slice(SVC, [(self.address(i), r, f"gosvc-{i}") for i, r in ready.items()], port=self.port)

    def close(self) -> None:
        for p in self.procs.values():
            p.stop()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    reps = Replicas(tmp_path)
    try:
        yield reps
    finally:
        reps.close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


class WantsGogc:
    """A policy that asks for one GOGC value (the rest as they are)."""

    name = "wants-gogc"

    def __init__(self, gogc: int) -> None:
        self.gogc = gogc

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision:
        target = np.asarray(knobs, dtype=np.float64).copy()
        target[KNOB_COL["gogc"]] = self.gogc
        return Decision([0] * 8, target, self.name, "x", "y")


def loop_over(api: FakeKubeAPI, reps: Replicas, redis: RedisServer, policy: WantsGogc, *, watch: bool = False) -> Any:
    source = EndpointSliceSource(api.api_client(), NS, SVC)
    if watch:
        source.start()
    admin = AdminKnobsActuator(endpoints=source, token=TOKEN, timeout_s=1.0, attempts=3, backoff_s=0.05)
    scraper = Scraper(reps.procs[0].metrics_url, service="svc", timeout_s=2.0)
    scraper.prime()
    safety = SafetyConfig(cooldown_s={})
    loop = ControlLoop(ControlConfig("svc", interval_s=1.0, safety=safety), Actuators(admin=admin),
                       scrape=scraper.scrape, store=TelemetryStore(redis.url, consumer="c"), policy=policy)  # fmt: skip
    return loop, source


def replica_entries(actuation: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in actuation.items() if k.startswith("admin@")}


@pytest.mark.real  # gosvc x3, redis-server
def test_one_change_reaches_every_ready_replica_and_the_audit_has_each(replicas: Replicas, redis: RedisServer) -> None:
    for i in range(3):
        replicas.start(i)
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, replicas.slice({0: True, 1: True, 2: True}))
        loop, _ = loop_over(api, replicas, redis, WantsGogc(200))
        r = loop.step()
        assert r.reason == "policy" and r.applied[KNOB_COL["gogc"]] == 200
        assert [replicas.gogc(i) for i in range(3)] == [200, 200, 200]  # read back from each replica
        (record,) = TelemetryStore(redis.url).audit_records("svc")
        entries = replica_entries(record.actuation)
        assert sorted(entries) == ["admin@gosvc-0", "admin@gosvc-1", "admin@gosvc-2"]
        assert all(v.startswith("ok: gogc=200 (1 attempt") for v in entries.values()), entries
        assert record.actuation["admin"] == "ok: gogc=200"
        # In sync: the next step sends nothing, and says nothing per replica.
        assert replica_entries(loop.step().actuation) == {}
        assert loop.actuators.admin.fanout.in_sync() == ["gosvc-0", "gosvc-1", "gosvc-2"]


@pytest.mark.real  # gosvc x3, redis-server
def test_a_replica_that_misses_a_change_is_retried_reported_and_caught_up(
    replicas: Replicas, redis: RedisServer
) -> None:
    for i in range(3):
        replicas.start(i)
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, replicas.slice({0: True, 1: True, 2: True}))
        policy = WantsGogc(200)
        loop, _ = loop_over(api, replicas, redis, policy)
        loop.step()
        replicas.procs[1].stop()  # down, but still listed as ready (the probe has not noticed yet)
        policy.gogc = 400
        r = loop.step()
        entries = replica_entries(r.actuation)
        assert entries["admin@gosvc-1"].startswith("missed: PUT http://127.0.0.3:")
        missed = entries["admin@gosvc-1"]
        assert "cannot reach the admin endpoint" in missed and "(3 attempts," in missed  # retried, then reported
        assert [entries[f"admin@gosvc-{i}"][:12] for i in (0, 2)] == ["ok: gogc=400", "ok: gogc=400"]
        assert r.actuation["admin"].startswith("error: 1 of 3 ready replica(s) missed {'gogc': 400}: gosvc-1: ")
        assert (replicas.gogc(0), replicas.gogc(2)) == (400, 400)
        audit = TelemetryStore(redis.url).audit_records("svc")
        assert audit[-1].actuation["admin@gosvc-1"] == entries["admin@gosvc-1"]  # reported in the audit
        # Back (a fresh process, with its flags' GOGC): the next step's reconcile gives it the current knobs.
        replicas.start(1)
        assert replicas.gogc(1) == 100
        r = loop.step()
        assert replica_entries(r.actuation) == {"admin@gosvc-1": r.actuation["admin@gosvc-1"]}
        assert r.actuation["admin@gosvc-1"].startswith("ok: gogc=400 (1 attempt")
        assert [replicas.gogc(i) for i in range(3)] == [400, 400, 400]
        assert TelemetryStore(redis.url).audit_records("svc")[-1].actuation["admin@gosvc-1"].startswith("ok: gogc=400")


@pytest.mark.real  # gosvc x4, redis-server
def test_not_ready_replicas_are_skipped_and_get_the_knobs_once_ready(replicas: Replicas, redis: RedisServer) -> None:
    for i in range(4):
        replicas.start(i)
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, replicas.slice({0: True, 1: True, 2: True, 3: False}))
        loop, source = loop_over(api, replicas, redis, WantsGogc(200), watch=True)
        try:
            r = loop.step()
            entries = replica_entries(r.actuation)
            assert entries["admin@gosvc-3"] == "skipped: not ready"
            assert [replicas.gogc(i) for i in range(4)] == [200, 200, 200, 100]
            assert replica_entries(loop.step().actuation) == {}  # still not ready: left alone
            assert replicas.gogc(3) == 100
            # The fourth replica becomes ready (seen through the watch): the next step gives it the knobs.
            api.put_endpoint_slice(NS, replicas.slice({0: True, 1: True, 2: True, 3: True}))
            wait_until(lambda: all(e.ready for e in source()), 5.0)
            r = loop.step()
            assert list(replica_entries(r.actuation)) == ["admin@gosvc-3"]
            assert r.actuation["admin@gosvc-3"].startswith("ok: gogc=200")
            assert [replicas.gogc(i) for i in range(4)] == [200, 200, 200, 200]
            audit = TelemetryStore(redis.url).audit_records("svc")
            assert audit[0].actuation["admin@gosvc-3"] == "skipped: not ready"
            assert audit[-1].actuation["admin@gosvc-3"].startswith("ok: gogc=200")
        finally:
            source.stop()


@pytest.mark.real  # gosvc x2
def test_a_refused_value_is_not_retried_and_does_not_become_the_target(replicas: Replicas) -> None:
    for i in range(2):
        replicas.start(i)
    urls = [f"http://{replicas.address(i)}:{replicas.port}" for i in range(2)]
    fanout = KnobFanout(static_endpoints(urls), token=TOKEN, timeout_s=1.0, attempts=3, backoff_s=0.05)
    assert {r.outcome for r in fanout.put({"gogc": 200}).values()} == {"applied"}
    results = fanout.put({"gogc": 0})  # out of range: every replica answers 400
    assert all(r.outcome == "missed" and r.rejected and r.attempts == 1 for r in results.values())
    assert "HTTP 400" in results[f"{replicas.address(0)}:{replicas.port}"].detail
    assert fanout.target == {"gogc": 200} and fanout.reconcile() == {}
    with contextlib.suppress(Exception):
        fanout.put({"gogc": 0})
    assert [replicas.gogc(i) for i in range(2)] == [200, 200]


@pytest.mark.real  # gosvc x2, redis-server
def test_control_reads_the_replicas_from_endpoint_slices(
    replicas: Replicas, redis: RedisServer, tmp_path: Path
) -> None:
    from conftest import invoke_rlctl

    for i in range(2):
        replicas.start(i)
    AdminClient(f"http://{replicas.address(0)}:{replicas.port}", token=TOKEN).put_knobs({"gogc": 400})
    with FakeKubeAPI() as api:
        api.put_endpoint_slice(NS, replicas.slice({0: False, 1: True}))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        r = invoke_rlctl("control", "--service", "svc", "--metrics", replicas.procs[1].metrics_url,
                         "--knob-endpoint-slices", f"{NS}/{SVC}", "--kubeconfig", str(kubeconfig),
                         "--admin-token-file", str(replicas.token_file), "--redis", redis.url,
                         "--interval", "0.3", "--max-steps", "2", "--metrics-port", "0", "--no-status")  # fmt: skip
        assert r.returncode == 0, r.stderr
        slices = [q for q in api.calls("GET") if q.path.endswith("/endpointslices")]
        assert slices[0].query.get("watch") is None and any(q.query.get("watch") == ["true"] for q in slices)
    audit = TelemetryStore(redis.url).audit_records("svc")
    assert len(audit) == 2 and not any(k.startswith("read-") for a in audit for k in a.actuation)
    assert audit[-1].current_knobs and audit[-1].current_knobs["gogc"] == 100  # read from the ready replica only


class Answers500:
    """An admin endpoint that answers ``failures`` PUTs with 500, then accepts them (as gosvc would)."""

    def __init__(self, failures: int) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.failures = failures
        self.puts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.puts.append(body)
                failing = len(outer.puts) <= outer.failures
                data = json.dumps({"error": "injected"} if failing else body).encode()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_5xx_is_retried_with_backoff_within_the_budget() -> None:
    flaky, down = Answers500(failures=2), Answers500(failures=100)
    try:
        fanout = KnobFanout(static_endpoints([flaky.url, down.url]), token=TOKEN, timeout_s=1.0, attempts=3,
                            backoff_s=0.05)  # fmt: skip
        results = fanout.put({"gogc": 200})
        ok, missed = results[endpoint_name(flaky.url)], results[endpoint_name(down.url)]
        assert (ok.outcome, ok.attempts) == ("applied", 3) and ok.seconds >= 0.05 + 0.1  # two waits: 0.05, 0.1 s
        assert (missed.outcome, missed.attempts, missed.rejected) == ("missed", 3, False)
        assert "HTTP 500: injected" in missed.detail
        assert missed.text().startswith("missed: PUT ") and "(3 attempts, " in missed.text()
        assert len(down.puts) == 3 and fanout.in_sync() == [endpoint_name(flaky.url)]
        # The next reconcile tries the missed one again (three more), not the one in sync; while it keeps
        # missing, reconciles pass it by: one after its 2nd miss in a row, three after its 3rd.
        assert list(fanout.reconcile()) == [endpoint_name(down.url)] and len(down.puts) == 6 and len(flaky.puts) == 3
        assert fanout.misses == {endpoint_name(down.url): 2}
        tried = [bool(fanout.reconcile()) for _ in range(6)]
        assert tried == [False, True, False, False, False, True] and len(down.puts) == 12
    finally:
        flaky.close()
        down.close()


@pytest.mark.real  # gosvc x1
def test_a_replica_back_from_not_ready_gets_the_knobs_again(replicas: Replicas) -> None:
    replicas.start(0)
    url = f"http://{replicas.address(0)}:{replicas.port}"
    state = {"ready": True}
    fanout = KnobFanout(lambda: [Endpoint("gosvc-0", f"{url}/admin/knobs", state["ready"])], token=TOKEN)
    assert fanout.put({"gogc": 400})["gosvc-0"].outcome == "applied" and fanout.reconcile() == {}
    state["ready"] = False  # e.g. its container restarts: the readiness probe fails first
    replicas.procs[0].stop()
    replicas.start(0)
    assert fanout.reconcile() == {} and replicas.gogc(0) == 100  # not ready: left alone
    state["ready"] = True
    assert fanout.reconcile()["gosvc-0"].outcome == "applied" and replicas.gogc(0) == 400
