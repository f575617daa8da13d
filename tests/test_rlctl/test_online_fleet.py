"""The fleet controller (rlctl.online.fleet): sharding, the lease fence, a replica-kill drill on real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from online_support import redis_server

from rlctl.contract import TelemetrySample
from rlctl.errors import ConfigError
from rlctl.online.fleet import (
    FleetConfig,
    FleetReplica,
    InProcessBatch,
    decisions_stream,
    group_name,
    members_key,
    owner,
    services_key,
    shard,
)
from rlctl.online.fleet_bench import Telemetry, run_fleet
from rlctl.online.procs import RedisServer
from rlctl.online.store import TelemetryStore, telemetry_stream

SERVICES = [f"svc-{i:03d}" for i in range(200)]


def test_every_service_has_one_owner_and_a_dead_members_services_move_only() -> None:
    members = ["a", "b", "c", "d"]
    shards = {m: shard(SERVICES, members, m) for m in members}
    assert sorted(s for v in shards.values() for s in v) == SERVICES  # each exactly once
    assert all(len(v) > 20 for v in shards.values())  # spread, not piled on one replica
    survivors = ["a", "b", "d"]
    for s in SERVICES:
        before, after = owner(s, members), owner(s, survivors)
        assert after in survivors
        if before != "c":
            assert after == before  # nobody else's services move
    assert owner("svc", []) is None


def test_config_refuses_a_lease_too_long_for_a_takeover_within_one_interval() -> None:
    with pytest.raises(ConfigError, match=r"dead_after_s \+ poll_s = 1\.1 s must stay under the interval \(1 s\)"):
        FleetConfig(interval_s=1.0, dead_after_s=0.9, poll_s=0.2)
    with pytest.raises(ConfigError, match="must exceed two polls"):
        FleetConfig(interval_s=5.0, dead_after_s=0.3, poll_s=0.25)
    assert FleetConfig(interval_s=5.0).dead_after == pytest.approx(2.5)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server(appendonly=False) as s:
        yield s


@pytest.fixture(scope="module")
def policy() -> InProcessBatch:
    return InProcessBatch("default")


def _replica(server: RedisServer, policy: InProcessBatch, name: str, fleet: str) -> FleetReplica:
    store = TelemetryStore(server.url, group=group_name(fleet), consumer=name, timeout_s=5.0)
    return FleetReplica(FleetConfig(fleet=fleet, interval_s=1.0), store, policy, name)


@pytest.mark.real
def test_a_replica_whose_lease_expired_records_nothing_and_the_new_owner_decides_each_sample_once(
    server: RedisServer, policy: InProcessBatch
) -> None:
    fleet = "fence"
    services = SERVICES[:6]
    store = TelemetryStore(server.url, timeout_s=5.0)
    store.redis.sadd(services_key(fleet), *services)
    a = _replica(server, policy, "a", fleet)
    a.step()
    assert a.owned == services
    rows = Telemetry(len(services), 1.0).rows(time.time())
    ids = store.add_many([TelemetrySample.from_array(r, service=s) for r, s in zip(rows, services, strict=True)])
    entries = a.poll()
    assert sorted(e.id for e in entries) == sorted(ids)
    # a stalls: its lease runs out (by the server's clock) before it records; b takes over.
    store.redis.zadd(members_key(fleet), {"a": 0})
    b = _replica(server, policy, "b", fleet)
    b.step()
    assert b.owned == services and b.stats.claimed == len(ids)
    assert b.stats.samples == len(ids)
    records = [a._decide_one(s, [e], time.time()) for s in services for e in entries if e.service == s]
    assert a._write(records) == 0 and a.stats.fenced == len(records)
    decided = [i for _id, f in store.redis.xrange(decisions_stream(fleet)) for i in f["ids"].split()]
    assert sorted(decided) == sorted(ids)  # each sample once, by b
    for s in services:
        assert store.redis.xpending(telemetry_stream(s), group_name(fleet))["pending"] == 0


@pytest.mark.real
@pytest.mark.slow
def test_kill_drill_loses_nothing_acts_once_and_takes_over_within_one_interval() -> None:
    result = run_fleet(services=20, interval_s=1.0, replicas=2, ticks=8, kill=True, policy="default")
    kill = result["kill"]
    assert result["samples_produced"] == 160
    assert result["samples_lost"] == 0, result
    assert result["double_acted"] == 0, result
    assert result["pending_after"] == 0, result
    assert kill["victim_services"] > 0 and kill["acquired_by_survivors"] == kill["victim_services"], kill
    assert kill["takeover_s"] is not None and kill["takeover_s"] < 1.0, kill
    assert set(result["decisions_by_replica"]) == {"r0", "r1"}
    assert np.isfinite(result["decision_p99_s"])


@pytest.mark.real
def test_an_entry_a_live_replica_holds_past_a_lease_is_claimed_and_its_holder_cannot_record_it(
    server: RedisServer, policy: InProcessBatch
) -> None:
    fleet = "strand"
    services = SERVICES[100:108]  # streams of their own: the fleets share this module's redis-server
    store = TelemetryStore(server.url, timeout_s=5.0)
    store.redis.sadd(services_key(fleet), *services)
    a, b = _replica(server, policy, "a", fleet), _replica(server, policy, "b", fleet)
    for r in (a, b, a):
        r.step()
    assert a.owned and b.owned and sorted(a.owned + b.owned) == services
    rows = Telemetry(len(services), 1.0).rows(time.time())
    ids = store.add_many([TelemetrySample.from_array(r, service=s) for r, s in zip(rows, services, strict=True)])
    held = a._read(services, ">")  # a holds every entry, b's streams too (as after a reshard it missed)
    assert len(held) == len(services)
    time.sleep(a.config.dead_after + 0.2)
    a.heartbeat()  # a stays live: only the entries' idle time lets b take them
    b.heartbeat()
    assert b.decide(b.take_over(b.owned)) == len(b.owned)
    assert a.decide(held) == len(a.owned) and a.stats.fenced == len(b.owned)  # refused: b holds them now
    decided = [i for _id, f in store.redis.xrange(decisions_stream(fleet)) for i in f["ids"].split()]
    assert sorted(decided) == sorted(ids)  # each sample once
    by = {f["service"]: f["replica"] for _id, f in store.redis.xrange(decisions_stream(fleet))}
    assert {s for s, r in by.items() if r == "b"} == set(b.owned)
