"""Telemetry and audit streams in a real redis-server: encoding, consumer groups, restarts, the collector."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from online_support import redis_server

from rlctl.contract import N_TELEMETRY, TELEMETRY_FIELDS, TelemetrySample
from rlctl.errors import TelemetryError
from rlctl.online.procs import RedisServer
from rlctl.online.store import (
    AuditRecord,
    Collector,
    StoreUnavailable,
    TelemetryStore,
    decode_sample,
    encode_sample,
    telemetry_stream,
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


def sample(t: float, service: str = "svc", **fields: float) -> TelemetrySample:
    row = np.full(N_TELEMETRY, 1.0)
    s = TelemetrySample.from_array(row, service=service)
    import dataclasses

    return dataclasses.replace(s, timestamp_s=t, **fields)


def test_encode_decode_round_trip_keeps_nan_inf_and_negative() -> None:
    s = sample(123.25, p99_ms=math.nan, gomemlimit_bytes=math.inf, error_rate=-1.5, cpu_temp_c=-math.inf)
    fields = encode_sample(s)
    assert all(isinstance(v, str) for v in fields.values())
    assert set(fields) == {*TELEMETRY_FIELDS, "service"}
    back = decode_sample({k.encode(): v.encode() for k, v in fields.items()})
    assert back.timestamp_s == 123.25 and back.error_rate == -1.5 and back.service == "svc"
    assert math.isnan(back.p99_ms) and back.gomemlimit_bytes == math.inf and back.cpu_temp_c == -math.inf


def test_decode_missing_fields_are_nan_and_unknown_fields_are_an_error() -> None:
    assert math.isnan(decode_sample({"timestamp_s": "1"}).p99_ms)
    with pytest.raises(TelemetryError, match=r"unknown telemetry field\(s\) \['p99'\]"):
        decode_sample({"p99": "3"}, source="x")
    with pytest.raises(TelemetryError, match="field p99_ms='fast' is not a number"):
        decode_sample({"p99_ms": "fast"})


def test_audit_record_round_trip() -> None:
    rec = AuditRecord(service="s", time_s=1.5, reason="policy", telemetry_ids=["1-0", "2-0"], raw_action=[2, 1],
                      target_knobs={"replicas": 3}, actuation={"replicas": "ok: 2 -> 3"}, dry_run=True)  # fmt: skip
    fields = rec.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert AuditRecord.from_fields(fields) == rec


@pytest.mark.real  # redis-server
def test_group_read_ack_and_restart_rereads_only_unacknowledged(redis: RedisServer) -> None:
    store = TelemetryStore(redis.url, consumer="c1")
    ids = store.add_many([sample(float(t)) for t in range(5)])
    got = store.read("svc")
    assert [e.id for e in got] == ids and [e.sample.timestamp_s for e in got if e.sample] == [0, 1, 2, 3, 4]
    assert store.read("svc") == []  # delivered once
    assert store.ack("svc", ids[:3]) == 3
    assert store.pending_count("svc") == 2
    # A restarted controller (same consumer name) gets exactly the unacknowledged entries back, then new ones.
    restarted = TelemetryStore(redis.url, consumer="c1")
    new = store.add(sample(5.0))
    assert [e.id for e in restarted.read("svc")] == [*ids[3:], new]
    restarted.ack("svc", [*ids[3:], new])
    assert restarted.pending_count("svc") == 0
    assert store.length("svc") == 6  # acknowledged telemetry stays in the stream


@pytest.mark.real  # redis-server
def test_another_consumer_claims_entries_left_pending_too_long(redis: RedisServer) -> None:
    crashed = TelemetryStore(redis.url, consumer="crashed")
    ids = crashed.add_many([sample(1.0), sample(2.0)])
    crashed.read("svc")
    other = TelemetryStore(redis.url, consumer="other")
    assert other.read("svc", min_idle_ms=60_000) == []  # not idle long enough
    got = other.read("svc", min_idle_ms=0)
    assert [e.id for e in got] == ids


@pytest.mark.real  # redis-server
def test_maxlen_trims_approximately_and_trimmed_pending_entries_read_as_errors(redis: RedisServer) -> None:
    store = TelemetryStore(redis.url, maxlen=100)
    store.add_many([sample(float(t)) for t in range(1000)])
    assert 100 <= store.length("svc") < 1000
    tiny = TelemetryStore(redis.url, maxlen=1, consumer="t")
    store.redis.delete(telemetry_stream("t"))
    first = tiny.add(sample(1.0, service="t"))
    tiny.read("t")
    tiny.redis.xtrim(telemetry_stream("t"), maxlen=0)
    again = TelemetryStore(redis.url, consumer="t").read("t")
    assert [(e.id, e.sample, e.error) for e in again] == [(first, None, "entry was trimmed from the stream")]


@pytest.mark.real  # redis-server
def test_undecodable_entry_is_reported_not_raised(redis: RedisServer) -> None:
    store = TelemetryStore(redis.url)
    store.ensure_group("svc")
    bad = store.redis.xadd(telemetry_stream("svc"), {"p99_ms": "slow"})
    (entry,) = store.read("svc")
    assert entry.id == bad and entry.sample is None and "p99_ms='slow' is not a number" in (entry.error or "")


@pytest.mark.real  # redis-server
def test_killswitch_global_and_per_service(redis: RedisServer) -> None:
    store = TelemetryStore(redis.url)
    assert store.killswitch("a") is None
    store.set_killswitch(True, service="a", reason="incident 42")
    assert store.killswitch("a") == "rlctl:killswitch:a is set (incident 42)"
    assert store.killswitch("b") is None
    store.set_killswitch(True, reason="freeze")
    assert store.killswitch("b") == "rlctl:killswitch is set (freeze)"
    store.set_killswitch(False)
    store.set_killswitch(False, service="a")
    assert store.killswitch("a") is None


def test_unreachable_redis_raises_store_unavailable_quickly() -> None:
    from rlctl.online.procs import free_port

    store = TelemetryStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    assert not store.ping()
    with pytest.raises(StoreUnavailable, match=r"redis redis://127\.0\.0\.1:\d+/0: XADD of 1 sample\(s\) failed"):
        store.add(sample(1.0))


@pytest.mark.real  # redis-server
def test_collector_buffers_while_redis_is_down_and_flushes_in_order(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, directory=tmp_path / "r")
    server.start()
    try:
        store = TelemetryStore(server.url, timeout_s=1.0)
        clock = iter(range(100))
        collector = Collector(lambda: sample(float(next(clock))), store)
        assert collector.collect()[1] is None
        server.kill()
        for _ in range(3):
            s, err = collector.collect()
            assert s is not None and err is not None and "redis" in err
        assert len(collector.pending) == 3
        server.start()
        assert collector.collect()[1] is None
        stamps = [e.sample.timestamp_s for e in store.entries("svc") if e.sample]
        assert stamps == [0, 1, 2, 3, 4]  # nothing scraped was lost, order kept
    finally:
        server.cleanup()


def test_collector_reports_scrape_failures() -> None:
    def broken() -> TelemetrySample:
        raise TelemetryError("scrape http://x/metrics: connection refused")

    sample_, err = Collector(broken, None).collect()
    assert sample_ is None and err == "scrape: scrape http://x/metrics: connection refused"


@pytest.mark.real  # redis-server
def test_bench_redis_reports_the_ingest_rate() -> None:
    from rlctl.online.bench import bench_redis

    out = bench_redis(5000, batch=500)
    assert out["redis_samples"] == 5000 and out["redis_stream_length"] >= 5000 and out["redis_samples_per_s"] > 0


def test_fused_xadd_packing_is_byte_identical() -> None:
    from rlctl.online.store import pack_sample_xadd, pack_xadd

    for service in ("svc", "café"):
        s = sample(1.5, service=service, p99_ms=math.nan, gomemlimit_bytes=math.inf)
        assert pack_sample_xadd(s, 77) == pack_xadd(telemetry_stream(service), encode_sample(s), 77)
