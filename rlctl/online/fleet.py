"""One controller deployment for many services: sharded over replicas by Redis, decided in batches.

Every replica of the deployment runs :class:`FleetReplica` (``python -m rlctl.online.fleet``).
Telemetry stays where the single-service controller reads it, one Stream per service
(``rlctl:telemetry:<service>``), read through one consumer group per fleet
(``rlctl-fleet-<fleet>``); each replica is a consumer of that group.

======================================  ==========================================================
key                                     holds
======================================  ==========================================================
``rlctl:fleet:<fleet>:services``        a Set: the services the fleet controls (re-read every
                                        interval, so services can be added while it runs)
``rlctl:fleet:<fleet>:members``         a Sorted Set: replica -> its last heartbeat (Redis
                                        server time, ms): the lease of each replica
``rlctl:fleet:<fleet>:decisions``       a Stream, one entry per decision: the service, the
                                        telemetry ids (and their timestamps) it consumed, the
                                        replica, what it decided, when it was recorded
``rlctl:fleet:<fleet>:events``          a Stream: replicas starting, acquiring and releasing
                                        services, claiming a dead replica's entries, stopping
======================================  ==========================================================

**Sharding.** Each replica heartbeats every ``poll_s`` into the members set; a replica whose
heartbeat is older than ``dead_after_s`` (server time) is dead. A service belongs to the live
replica with the highest rendezvous hash of (replica, service), so every replica computes the
same owner from the same members, and a dead replica's services spread over the survivors
while nobody else's move. A replica reads (``XREADGROUP ... >``) only the streams it owns.

**No sample decided twice.** The consumer group delivers each entry to one consumer. A
replica records its decisions and acknowledges their entries in one Lua script that first
checks the replica's own lease: a replica that was declared dead (its heartbeat too old,
by the server's clock) records nothing and acknowledges nothing, and a decision is recorded
only if every entry it consumed is still pending for the recording replica, so once another
replica has claimed an entry only that one can record it. A replica also
renews its lease before each chunk of ``DECIDE_CHUNK`` services it acts on, and acts on
nothing more once a renewal finds that the lease had lapsed (it was stalled longer than
``dead_after_s``): the others may have claimed its entries. What it acted on between the last
renewal and a refused record is acted on again by the new owner (knob targets are absolute,
so acting twice on one sample sets the same values).

**No sample lost; takeover within one interval.** When the live members change, a replica
takes over the streams it now owns: it claims (``XPENDING`` + ``XCLAIM``) the entries pending
for consumers that are no longer live and re-reads its own pending ones (``XREADGROUP ... 0``),
then decides them with the new ones. Detection takes ``dead_after_s`` (default half the
interval), the next poll at most ``poll_s`` more. Every three intervals a sweep does the same for
all owned streams, also claiming entries a live replica has held longer than ``dead_after_s``
(it stalled, or it lost the stream in a reshard before it decided them).

**One decision path, batched.** Per service the replica keeps a
:class:`~rlctl.online.loop.ControlLoop` (its window, safety layer, HPA fallback, SLO guard) and
decides through that loop's own steps (``decide``, ``shield``, ``actuate``); only the
policy call is batched: the windows of every service with new telemetry go to the policy in
one call (:class:`InProcessBatch`: one forward pass of :class:`~rlctl.online.policy.PolicyModel`;
:class:`HttpBatch`: one ``POST /act/many`` to the Ray Serve deployment, whose ``@serve.batch``
runs it in batches of up to 64). What the loop does around the decision (scraping, its own
Redis reads, the boundary detector's forecast, per-service audit streams) the fleet does
not: the decisions stream is its audit.

The loop's private steps are used on purpose: ``ControlLoop.step`` also scrapes, reads and
acknowledges Redis per service and runs the boundary detector (about 0.6 ms per service),
which a batch of 1,000 services cannot afford; the steps themselves are the loop's, so the
modes (``act``/``advise``/``shadow``), dry run, guard and safety limits are the same.

Known limits: a service taken over starts with a fresh safety layer (cooldowns and step
limits restart) and a fresh decoder carry; its window is re-read from its stream. Acting is
at least once across a takeover (``fenced`` in :class:`ReplicaStats` counts the decisions
whose record was refused), recording exactly once.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rlctl.contract import (
    COL,
    DEFAULT_SLO_P99_MS,
    DEFAULT_WINDOW,
    KNOB_COL,
    KNOB_FIELDS,
    N_TELEMETRY,
    SCHEMA_HASH,
    TELEMETRY_FIELDS,
    Knobs,
)
from rlctl.errors import ConfigError, TelemetryError
from rlctl.online.actuators import Actuators
from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop, knobs_from_sample
from rlctl.online.policy import (
    ActManyResponse,
    Decision,
    PolicyModel,
    PolicyUnavailable,
    knobs_dict,
    window_payload,
)
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import TelemetryStore, decode_sample, telemetry_stream

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

FLEET_PREFIX = "rlctl:fleet:"


def services_key(fleet: str) -> str:
    return f"{FLEET_PREFIX}{fleet}:services"


def members_key(fleet: str) -> str:
    return f"{FLEET_PREFIX}{fleet}:members"


def decisions_stream(fleet: str) -> str:
    return f"{FLEET_PREFIX}{fleet}:decisions"


def events_stream(fleet: str) -> str:
    return f"{FLEET_PREFIX}{fleet}:events"


def group_name(fleet: str) -> str:
    return f"rlctl-fleet-{fleet}"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FleetConfig:
    """Settings of one fleet deployment (every replica runs the same)."""

    fleet: str = "default"
    """The fleet's name: its keys are ``rlctl:fleet:<fleet>:*``, its consumer group ``rlctl-fleet-<fleet>``."""
    interval_s: float = 5.0
    """Seconds between samples of each service; the takeover goal is one interval."""
    window: int = DEFAULT_WINDOW
    """Samples each service's window keeps (at least the policy's)."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    dead_after_s: float | None = None
    """A replica whose heartbeat is older than this is dead; default half the interval (a busy host
    stalls a live replica for a second or more; shorter leases then lapse, and batches are redone)."""
    poll_s: float | None = None
    """Longest block of one read, and the heartbeat period; default 10 % of the interval, at most 0.25 s."""
    read_count: int = 100
    """Entries per stream per read at most (a backlog is read over several polls)."""
    decisions_maxlen: int = 1_000_000
    """Approximate cap of the decisions stream (``XADD MAXLEN ~``)."""
    mode: str = "act"
    """``act``, ``advise`` or ``shadow``, as :class:`~rlctl.online.loop.ControlConfig`'s."""

    def __post_init__(self) -> None:
        if not self.fleet or any(c.isspace() or c == ":" for c in self.fleet):
            raise ConfigError(f"fleet: name {self.fleet!r} must be non-empty, without spaces or ':'")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ConfigError(f"fleet: interval_s={self.interval_s} must be a positive number of seconds")
        if not self.dead_after > 2 * self.poll:
            raise ConfigError(f"fleet: dead_after_s={self.dead_after:g} must exceed two polls ({self.poll:g} s "
                              "each): a live replica heartbeats once per poll")  # fmt: skip
        if self.dead_after + self.poll >= self.interval_s:
            raise ConfigError(f"fleet: dead_after_s + poll_s = {self.dead_after + self.poll:g} s must stay under the "
                              f"interval ({self.interval_s:g} s) for a takeover within one interval")  # fmt: skip

    @property
    def dead_after(self) -> float:
        return self.dead_after_s if self.dead_after_s is not None else 0.5 * self.interval_s

    @property
    def poll(self) -> float:
        return self.poll_s if self.poll_s is not None else min(0.1 * self.interval_s, 0.25)


def owner(service: str, members: Sequence[str]) -> str | None:
    """The member that owns ``service``: the highest rendezvous hash (None without members)."""
    best, best_h = None, b""
    for m in members:
        h = hashlib.blake2b(f"{m}\x00{service}".encode(), digest_size=8).digest()
        if best is None or h > best_h:
            best, best_h = m, h
    return best


def shard(services: Iterable[str], members: Sequence[str], me: str) -> list[str]:
    """The services of ``services`` that ``me`` owns among ``members``."""
    return sorted(s for s in services if owner(s, members) == me)


# ----------------------------------------------------------------------------- the policy, batched


class BatchPolicy(Protocol):
    """Decides for many services at once: one :class:`Decision` or :class:`PolicyUnavailable` each."""

    name: str
    window: int

    def decide_many(
        self, services: Sequence[str], windows: Sequence[FloatArray], knobs: FloatArray
    ) -> list[Decision | PolicyUnavailable]: ...


class InProcessBatch:
    """The policy in this process: all services in one forward pass of :class:`PolicyModel`."""

    def __init__(self, policy: str = "default", *, capacity_qps: float | None = None) -> None:
        self.model = PolicyModel(policy)
        self.name = self.model.name
        self.window = self.model.window
        self.capacity_qps = capacity_qps
        self.carry: dict[str, list[float] | None] = {}

    def decide_many(
        self, services: Sequence[str], windows: Sequence[FloatArray], knobs: FloatArray
    ) -> list[Decision | PolicyUnavailable]:
        if not services:
            return []
        try:
            decisions = self.model.decide(windows, knobs, [self.carry.get(s) for s in services],
                                          [self.capacity_qps] * len(services))  # fmt: skip
        except PolicyUnavailable as exc:
            return [exc] * len(services)
        for s, d in zip(services, decisions, strict=True):
            self.carry[s] = d.carry
        return list(decisions)


class HttpBatch:
    """The Ray Serve deployment's ``POST /act/many``: all services in one request."""

    def __init__(self, url: str, *, window: int = DEFAULT_WINDOW, timeout_s: float = 2.0) -> None:
        base = url.rstrip("/")
        for suffix in ("/act/many", "/act"):
            base = base.removesuffix(suffix)
        self.url = base + "/act/many"
        self.name = f"http:{self.url}"
        self.window = window
        self.timeout_s = timeout_s
        self.carry: dict[str, list[float]] = {}

    def decide_many(
        self, services: Sequence[str], windows: Sequence[FloatArray], knobs: FloatArray
    ) -> list[Decision | PolicyUnavailable]:
        if not services:
            return []
        requests = []
        for s, w, k in zip(services, windows, knobs, strict=True):
            req: dict[str, Any] = {"service": s, "window": window_payload(w[-self.window :]), "knobs": knobs_dict(k)}
            if self.carry.get(s):
                req["carry"] = self.carry[s]
            requests.append(req)
        body = json.dumps({"requests": requests}).encode()
        http = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as resp:
                answer = ActManyResponse.model_validate_json(resp.read())
        except TimeoutError:
            late = PolicyUnavailable("policy-timeout", f"{self.url}: no answer in {self.timeout_s:g} s")
            return [late] * len(services)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return [PolicyUnavailable("policy-error", f"{self.url}: {exc}")] * len(services)
        out: list[Decision | PolicyUnavailable] = []
        for s, r in zip(services, answer.responses, strict=True):
            if r.schema_hash != SCHEMA_HASH:
                out.append(PolicyUnavailable("policy-error", f"{self.url} serves contract schema {r.schema_hash}, "
                                                             f"this controller speaks {SCHEMA_HASH}"))  # fmt: skip
                continue
            if r.carry:
                self.carry[s] = r.carry
            target = Knobs(**r.target_knobs).to_array()  # type: ignore[arg-type]
            out.append(Decision(r.action, target, r.policy, r.schema_hash, r.feature_hash, r.carry or None))
        return out


class _Primed:
    """The per-service loop's policy: answers with the decision the batch made for that service."""

    def __init__(self, name: str, window: int) -> None:
        self.name = name
        self.window = window
        self.answers: dict[str, Decision | PolicyUnavailable] = {}

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision:
        answer = self.answers.pop(service, None)
        if answer is None:
            raise PolicyUnavailable("policy-error", f"{service}: no batched decision for this window")
        if isinstance(answer, PolicyUnavailable):
            raise answer
        return answer


def _no_scrape() -> Any:
    raise TelemetryError("the fleet reads telemetry from Redis only")


class MemoryReplicas:
    """A replica count kept in memory (``--actuators memory``): benchmarks and drills act on it."""

    def __init__(self, replicas: int = 2) -> None:
        self.replicas = replicas

    def get_replicas(self) -> int:
        return self.replicas

    def set_replicas(self, n: int) -> int:
        self.replicas = n
        return n


# ----------------------------------------------------------------------------- Redis scripts

# Renew this replica's lease (server time); return (1 when the lease had lapsed meanwhile, the live members).
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local lapsed = 0
if prev and now - tonumber(prev) > tonumber(ARGV[2]) then lapsed = 1 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {lapsed, redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')}
"""

#: Intervals between sweeps of all owned streams for entries of consumers that are not live (a
#: member's death is handled at once, on the reshard; the sweep is for consumers nobody saw die).
SWEEP_INTERVALS = 3

#: Services decided (and recorded) per chunk of a batch; the lease is renewed before each chunk.
DECIDE_CHUNK = 100

# Record decisions and acknowledge their entries, only while the lease holds, and each decision
# only if all its entries are still pending for this replica (none claimed away meanwhile).
# KEYS: members, decisions, telemetry streams...; ARGV: me, dead_after_ms, maxlen, group, then per
# decision: key index, number of ids, ids..., number of field pairs, fields...
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not beat) or (now - tonumber(beat) > tonumber(ARGV[2])) then return {-1, 0} end
local i, n, skipped = 5, 0, 0
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local nids = tonumber(ARGV[i + 1])
  local ids = {}
  for j = 1, nids do ids[j] = ARGV[i + 1 + j] end
  i = i + 2 + nids
  local nf = tonumber(ARGV[i])
  local fields = {'recorded_ms', tostring(now), 'replica', ARGV[1]}
  for j = 1, 2 * nf do fields[#fields + 1] = ARGV[i + j] end
  i = i + 1 + 2 * nf
  local mine = true
  for j = 1, nids do
    local p = redis.call('XPENDING', key, ARGV[4], ids[j], ids[j], 1)
    if #p == 0 or p[1][2] ~= ARGV[1] then mine = false end
  end
  if mine then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
    redis.call('XACK', key, ARGV[4], unpack(ids))
    n = n + 1
  else
    skipped = skipped + 1
  end
end
return {n, skipped}
"""


# ----------------------------------------------------------------------------- one replica

_EXACT_FIELDS = frozenset((*TELEMETRY_FIELDS, "service"))


def _row(fields: Mapping[str, str], source: str) -> FloatArray:
    """A stream entry as a contract row: the fast path for entries with exactly the contract's
    fields; anything else goes through :func:`~rlctl.online.store.decode_sample` and its checks."""
    try:
        if fields.keys() == _EXACT_FIELDS:
            return np.array([float(fields[name]) for name in TELEMETRY_FIELDS])
        return decode_sample(fields, source=source).to_array()
    except (TelemetryError, ValueError) as exc:
        log.warning("fleet: unusable entry (the safety layer holds on it): %s: %s", source, exc)
        return np.full(N_TELEMETRY, np.nan)


def _bulk(arg: Any) -> bytes:
    data = str(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pack(*args: Any) -> bytes:
    """One command in the Redis wire protocol: redis-py's generic packer is slow for 10,000s of arguments."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


@dataclass
class _Entry:
    service: str
    id: str
    row: FloatArray


@dataclass
class ReplicaStats:
    """What one replica did, reported in its ``stopped`` event.

    ``decisions`` recorded; ``samples`` consumed by chunks recorded in full (a chunk with a
    refused decision is not counted); ``fenced`` decisions not recorded (lease lapsed, or the
    entries were claimed by another replica); ``claimed`` entries taken from other consumers;
    ``acquired`` services taken on at reshards; ``decide_s`` wall time of each batch.
    """

    batches: int = 0
    decisions: int = 0
    samples: int = 0
    fenced: int = 0
    claimed: int = 0
    acquired: int = 0
    max_batch: int = 0
    decide_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = np.asarray(self.decide_s or [math.nan])
        return {"batches": self.batches, "decisions": self.decisions, "samples": self.samples, "fenced": self.fenced,
                "claimed": self.claimed, "acquired": self.acquired, "max_batch": self.max_batch,
                "batch_p50_s": round(float(np.percentile(d, 50)), 4),
                "batch_p99_s": round(float(np.percentile(d, 99)), 4)}  # fmt: skip


class FleetReplica:
    """One replica of the fleet controller.

    :param config: the fleet's settings (every replica the same).
    :param store: the Redis store (its client does the reads; the group is the fleet's).
    :param policy: the batched policy (:class:`InProcessBatch` or :class:`HttpBatch`).
    :param consumer: this replica's name in the group and the members set (unique per replica).
    :param actuators: a factory of each service's actuators (default: none, decisions are only
        recorded; ``MemoryReplicas`` for drills).
    """

    def __init__(
        self,
        config: FleetConfig,
        store: TelemetryStore,
        policy: BatchPolicy,
        consumer: str,
        *,
        actuators: Callable[[str], Actuators] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.redis = store.redis
        self.policy = policy
        self.me = consumer
        self.group = group_name(config.fleet)
        self.actuators = actuators or (lambda _service: Actuators())
        self.metrics = ControllerMetrics()
        self.primed = _Primed(policy.name, max(policy.window, config.window))
        self.loops: dict[str, ControlLoop] = {}
        self.services: list[str] = []
        self.members: list[str] = []
        self.owned: list[str] = []
        self.groups: set[str] = set()
        self.stats = ReplicaStats()
        self.lapsed = False
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._record = self.redis.register_script(_RECORD)
        self.redis.script_load(_RECORD)
        self._next_services = 0.0
        self._sharded_on: tuple[list[str], list[str]] = ([], [])
        self._next_sweep = 0.0
        self._stop = threading.Event()

    # ------------------------------------------------------------------ membership

    def event(self, kind: str, **fields: Any) -> None:
        body = {"replica": self.me, "kind": kind, "time_s": repr(time.time()),
                **{k: json.dumps(v) for k, v in fields.items()}}  # fmt: skip
        self.redis.xadd(events_stream(self.config.fleet), body, maxlen=100_000, approximate=True)

    def heartbeat(self) -> list[str]:
        """Renew the lease; returns the live members. :attr:`lapsed`: the lease had run out before this
        renewal, so the others may have claimed our pending entries (and we must not act on them)."""
        dead_ms = int(self.config.dead_after * 1000)
        lapsed, live = self._heartbeat(keys=[members_key(self.config.fleet)], args=[self.me, dead_ms])
        self.lapsed = bool(int(lapsed))
        return sorted(str(m) for m in live)

    def refresh_services(self) -> None:
        if time.monotonic() < self._next_services:
            return
        self._next_services = time.monotonic() + self.config.interval_s
        services = sorted(str(s) for s in self.redis.smembers(services_key(self.config.fleet)))
        new = [s for s in services if s not in self.groups]
        if new:
            pipe = self.redis.pipeline(transaction=False)
            for s in new:
                pipe.xgroup_create(telemetry_stream(s), self.group, id="0", mkstream=True)
            for s, r in zip(new, pipe.execute(raise_on_error=False), strict=True):
                if r is True or "BUSYGROUP" in str(r):
                    self.groups.add(s)
                else:
                    log.warning("fleet %s: creating the group on %s failed: %s", self.config.fleet, s, r)
        self.services = [s for s in services if s in self.groups]

    def reshard(self, members: list[str]) -> list[str]:
        """Recompute the owned services; returns the ones newly acquired."""
        self.members = members
        owned = shard(self.services, members, self.me)
        before = set(self.owned)
        acquired = [s for s in owned if s not in before]
        released = [s for s in self.owned if s not in set(owned)]
        for s in released:
            self.loops.pop(s, None)
        for s in acquired:  # their state now, not in the first batch's latency
            self._loop(s)
        self.owned = owned
        if acquired or released:
            self.stats.acquired += len(acquired)
            self.event("reshard", members=members, acquired=len(acquired), released=len(released), owned=len(owned))
        return acquired

    def take_over(self, services: Sequence[str]) -> list[_Entry]:
        """Claim entries pending for consumers that are not live (or held longer than a lease), then
        re-read this replica's pending entries of those streams."""
        if not services:
            return []
        live = set(self.members)
        pipe = self.redis.pipeline(transaction=False)
        for s in services:
            pipe.xpending_range(telemetry_stream(s), self.group, "-", "+", 10_000)
        claims: dict[str, list[str]] = {}
        mine: list[str] = []  # streams with entries pending for this replica once the claims are done
        idle_ms = int(self.config.dead_after * 1000)
        for s, rows in zip(services, pipe.execute(), strict=True):
            # Entries of consumers that are not live, and entries a live one has held longer than a lease
            # (it stalled, or no longer owns the stream and will not re-read them): the record script
            # refuses the old holder's decision on them once they are ours.
            ids = [str(r["message_id"]) for r in rows if str(r["consumer"]) != self.me
                   and (str(r["consumer"]) not in live or int(r["time_since_delivered"]) > idle_ms)]  # fmt: skip
            if ids:
                claims[s] = ids
            if ids or any(str(r["consumer"]) == self.me for r in rows):
                mine.append(s)
        if claims:
            pipe = self.redis.pipeline(transaction=False)
            for s, ids in claims.items():
                pipe.xclaim(telemetry_stream(s), self.group, self.me, 0, ids, justid=True)
            pipe.execute()
            n = sum(len(v) for v in claims.values())
            self.stats.claimed += n
            self.event("claim", services=len(claims), entries=n)
        return self._read(mine, "0")

    # ------------------------------------------------------------------ reading

    def _read(self, services: Sequence[str], start: str, block_ms: int | None = None) -> list[_Entry]:
        if not services:
            return []
        streams = {telemetry_stream(s): start for s in services}
        reply = self.redis.xreadgroup(self.group, self.me, streams, count=self.config.read_count, block=block_ms)
        out: list[_Entry] = []
        prefix = len(telemetry_stream(""))
        for stream, messages in reply or []:
            service = str(stream)[prefix:]
            for eid, fields in messages:
                if not fields:
                    continue  # trimmed since; acknowledged with the next decision of the service
                out.append(_Entry(service, str(eid), _row(fields, f"{stream} entry {eid}")))
        return out

    def poll(self) -> list[_Entry]:
        """One read of new entries on the owned streams (blocks up to ``poll_s``)."""
        if not self.owned:
            self._stop.wait(self.config.poll)
            return []
        return self._read(self.owned, ">", block_ms=max(int(self.config.poll * 1000), 1))

    # ------------------------------------------------------------------ deciding

    def _loop(self, service: str) -> ControlLoop:
        loop = self.loops.get(service)
        if loop is None:
            cfg = ControlConfig(service=service, interval_s=self.config.interval_s, window=self.config.window,
                                safety=self.config.safety, slo_p99_ms=self.config.slo_p99_ms, buffer=1,
                                mode=self.config.mode)  # fmt: skip
            loop = ControlLoop(cfg, self.actuators(service), scrape=_no_scrape, policy=self.primed,
                               metrics=self.metrics)  # fmt: skip
            self.loops[service] = loop
        return loop

    def _backfill(self, by_service: Mapping[str, list[_Entry]]) -> None:
        """Windows of services seen for the first time: the samples before their first new entry."""
        fresh = [s for s in by_service if not self._loop(s).window]
        if not fresh:
            return
        pipe = self.redis.pipeline(transaction=False)
        for s in fresh:
            pipe.xrevrange(telemetry_stream(s), max=f"({by_service[s][0].id}", min="-",
                           count=self.loops[s].window.maxlen)  # fmt: skip
        for s, reply in zip(fresh, pipe.execute(), strict=True):
            for eid, fields in reversed(reply):
                self._append(self.loops[s], _row(fields, f"{telemetry_stream(s)} entry {eid}"))

    @staticmethod
    def _append(loop: ControlLoop, row: FloatArray) -> None:
        stamp = row[COL["timestamp_s"]]
        if loop.window and math.isfinite(stamp) and stamp <= loop.window[-1][COL["timestamp_s"]]:
            return  # not newer than what the window has: a re-delivery
        loop.window.append(row)

    def decide(self, entries: Sequence[_Entry]) -> int:
        """Decide every service with new entries (one batched policy call), act, record; returns decisions."""
        if not entries:
            return 0
        t0 = time.monotonic()
        by_service: dict[str, list[_Entry]] = collections.defaultdict(list)
        # Every entry read is pending for this replica: decide it even if its service moved meanwhile.
        unique = {(e.service, e.id): e for e in entries}  # a take-over and a sweep may re-read the same one
        for e in sorted(unique.values(), key=lambda e: tuple(int(p) for p in e.id.split("-"))):
            by_service[e.service].append(e)
        self._backfill(by_service)
        services, windows, knobs = [], [], []
        for s, es in by_service.items():
            loop = self._loop(s)
            for e in es:
                if np.isfinite(e.row[COL["timestamp_s"]]):
                    self._append(loop, e.row)
            window = loop.window_array()
            current, _errors = loop.actuators.read(loop.known_knobs)
            if window is not None:
                current = np.where(np.isfinite(current), current, knobs_from_sample(window[-1]))
            loop.known_knobs = current
            if window is not None:
                services.append(s)
                windows.append(window)
                knobs.append(current)
        answers = self.policy.decide_many(services, windows, np.asarray(knobs).reshape(len(services), len(KNOB_FIELDS)))
        self.primed.answers = dict(zip(services, answers, strict=True))
        todo = list(by_service)
        n = 0
        for lo in range(0, len(todo), DECIDE_CHUNK):
            self.heartbeat()
            if self.lapsed:  # declared dead meanwhile: the new owners have our entries; act on nothing
                self.stats.fenced += len(todo) - lo
                log.warning("fleet %s: %s's lease lapsed: not acting on %d services", self.config.fleet, self.me,
                            len(todo) - lo)  # fmt: skip
                self._next_sweep = 0.0  # what nobody claimed is still pending for us: re-read it next step
                break
            now_wall = time.time()
            n += self._write([self._decide_one(s, by_service[s], now_wall) for s in todo[lo : lo + DECIDE_CHUNK]])
        self.primed.answers.clear()
        self.stats.decide_s.append(time.monotonic() - t0)
        self.stats.batches += 1
        self.stats.max_batch = max(self.stats.max_batch, len(todo))
        return n

    def _decide_one(
        self, service: str, entries: Sequence[_Entry], now_wall: float
    ) -> tuple[str, list[str], dict[str, str]]:
        """The loop's own decision steps for one service (policy answer already primed)."""
        loop = self.loops[service]
        t0 = time.monotonic()
        # decide, shield and actuate are the loop's step without its I/O; knobs nobody could
        # read came from the newest sample by the loop's rule (knobs_from_sample) in decide().
        window = loop.window_array()
        current = loop.known_knobs
        reason, cause, detail, controller, target, _decision = loop.decide(window, current, now_wall, None, None)
        if loop.guard is not None and window is not None and reason in ("policy", "fallback", "hpa"):
            target, controller, detail = loop.shield(window, current, target, controller, detail)
        safe, _notes, _applied, actuation = loop.actuate(reason, current, target, t0)
        if self.config.safety.dry_run and reason not in ("hold", "killswitch"):
            reason = "dry-run"
        self.primed.answers.pop(service, None)
        r = KNOB_COL["replicas"]
        fields = {
            "service": service,
            "stamps": " ".join(repr(float(e.row[COL["timestamp_s"]])) for e in entries),
            "ids": " ".join(e.id for e in entries),
            "reason": reason,
            "controller": controller,
            "replicas": repr(float(safe[r])) if math.isfinite(safe[r]) else "nan",
        }
        if cause:
            fields["cause"] = cause
        if actuation:
            fields["actuation"] = json.dumps(actuation, sort_keys=True)
        return service, [e.id for e in entries], fields

    def _write(self, records: Sequence[tuple[str, list[str], dict[str, str]]]) -> int:
        cfg = self.config
        keys = [members_key(cfg.fleet), decisions_stream(cfg.fleet)]
        args: list[Any] = [self.me, int(cfg.dead_after * 1000), cfg.decisions_maxlen, self.group]
        for service, ids, fields in records:
            keys.append(telemetry_stream(service))
            args += [len(keys), len(ids), *ids, len(fields)]
            for k, v in fields.items():
                args += [k, v]
        n, skipped = self._evalsha(self._record.sha, len(keys), *keys, *args)
        if int(skipped):  # acted on, but another replica had claimed the entries: it acts again
            self.stats.fenced += int(skipped)
            self._next_sweep = 0.0
        if int(n) < 0:
            self.stats.fenced += len(records)
            log.warning("fleet %s: %s's lease expired before recording %d decisions: left to the new owners",
                        cfg.fleet, self.me, len(records))  # fmt: skip
            self._next_sweep = 0.0  # what nobody claimed is still pending for us: re-read it at the next step
            return 0
        self.stats.decisions += int(n)
        self.stats.samples += sum(len(ids) for _s, ids, _f in records) if not int(skipped) else 0
        return int(n)

    def _evalsha(self, *args: Any) -> Any:
        """EVALSHA, packed here (:func:`_pack`), on a connection of the client's pool."""
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([_pack("EVALSHA", *args)])
            return conn.read_response()
        except BaseException:
            conn.disconnect()  # the reply stream may be out of step: never reuse this connection
            raise
        finally:
            pool.release(conn)

    # ------------------------------------------------------------------ running

    def step(self) -> int:
        """Heartbeat, reshard (taking over what it now owns), read, decide; returns decisions recorded."""
        members = self.heartbeat()
        self.refresh_services()
        backlog: list[_Entry] = []
        if (members, self.services) != self._sharded_on:
            self._sharded_on = (members, self.services)
            backlog += self.take_over(self.reshard(members))
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVALS * self.config.interval_s
            backlog += self.take_over(self.owned)
        return self.decide(backlog + self.poll())

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_seconds: float | None = None) -> ReplicaStats:
        """Step until :meth:`stop` (or SIGTERM in :func:`main`); Redis errors are logged and retried."""
        import redis

        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.refresh_services()
        self.event("started", pid=os.getpid())
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self.step()
            except (redis.RedisError, OSError) as exc:
                log.warning("fleet %s: %s: Redis: %s; retrying", self.config.fleet, self.me, exc)
                self._sharded_on = ([], [])  # reshard and take over afresh once Redis answers
                self._stop.wait(self.config.poll)
        try:
            self.redis.zrem(members_key(self.config.fleet), self.me)  # leave: the others take over at once
            self.event("stopped", **self.stats.summary())
        except (redis.RedisError, OSError) as exc:
            log.warning("fleet %s: %s: could not leave cleanly: %s", self.config.fleet, self.me, exc)
        return self.stats


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """``python -m rlctl.online.fleet``: one replica of a fleet controller."""
    parser = argparse.ArgumentParser(prog="python -m rlctl.online.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--fleet", default="default")
    parser.add_argument("--consumer", default=f"{os.uname().nodename}-{os.getpid()}",
                        help="this replica's unique name (default: host-pid)")  # fmt: skip
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples of each service")
    parser.add_argument("--policy", default="default", help="artifact for the in-process policy (default: shipped)")
    parser.add_argument("--policy-url", default=None, help="Ray Serve policy server (POST /act/many) instead")
    parser.add_argument("--actuators", choices=("none", "memory"), default="none",
                        help="none: record decisions only; memory: a simulated replica count per service")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--mode", choices=("act", "advise", "shadow"), default="act")
    parser.add_argument("--max-seconds", type=float, default=None)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {ns.consumer} %(levelname)s %(message)s")
    safety = SafetyConfig(dry_run=ns.dry_run)
    config = FleetConfig(fleet=ns.fleet, interval_s=ns.interval, safety=safety, mode=ns.mode)
    policy: BatchPolicy = (HttpBatch(ns.policy_url, timeout_s=min(0.4 * ns.interval, 2.0)) if ns.policy_url
                           else InProcessBatch(ns.policy))  # fmt: skip
    actuators: Callable[[str], Actuators] = (
        (lambda _s: Actuators(replicas=MemoryReplicas())) if ns.actuators == "memory" else (lambda _s: Actuators())
    )
    store = TelemetryStore(ns.redis, group=group_name(ns.fleet), consumer=ns.consumer,
                           timeout_s=max(2.0, 4 * config.poll))  # fmt: skip
    replica = FleetReplica(config, store, policy, ns.consumer, actuators=actuators)
    signal.signal(signal.SIGTERM, lambda *_: replica.stop())
    stats = replica.run(max_seconds=ns.max_seconds)
    print(json.dumps({"replica": ns.consumer, **stats.summary()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
