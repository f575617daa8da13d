"""Telemetry, audit and the kill switch in Redis; and the collector that feeds them.

Keys (``<service>`` is the service name):

======================================  ==========================================================
key                                     holds
======================================  ==========================================================
``rlctl:telemetry:<service>``           a Stream, one entry per :class:`TelemetrySample`, flat
                                        string fields (``repr`` of each float, so NaN and inf
                                        survive), trimmed with an approximate ``MAXLEN``
``rlctl:audit:<service>``               a Stream, one entry per decision (:class:`AuditRecord`)
``rlctl:killswitch``                    any value: every controller stops actuating
``rlctl:killswitch:<service>``          any value: the controller of ``<service>`` stops actuating
======================================  ==========================================================

The controller reads telemetry through a consumer group (``XREADGROUP``) and acknowledges
(``XACK``) each entry only after the decision it fed has been audited, so telemetry is
delivered at least once: a controller that restarts (or reconnects after Redis was away)
first re-reads its own pending entries (``XREADGROUP ... 0``) and takes over entries another
consumer left pending too long (``XAUTOCLAIM``). Acknowledged entries stay in the stream
until ``MAXLEN`` trims them; run Redis with an append-only file to keep them across a crash.

Every Redis failure surfaces as :class:`StoreUnavailable` (a :class:`TelemetryError`) naming
the server and the operation, so the control loop can fall back and carry on.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rlctl.contract import TELEMETRY_FIELDS, TelemetrySample
from rlctl.errors import ConfigError, TelemetryError

log = logging.getLogger(__name__)

TELEMETRY_PREFIX = "rlctl:telemetry:"
AUDIT_PREFIX = "rlctl:audit:"
KILLSWITCH_KEY = "rlctl:killswitch"
DEFAULT_GROUP = "rlctl-controller"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

T = TypeVar("T")


class StoreUnavailable(TelemetryError):
    """Redis could not be reached or answered with an error."""


def telemetry_stream(service: str) -> str:
    return f"{TELEMETRY_PREFIX}{service}"


def audit_stream(service: str) -> str:
    return f"{AUDIT_PREFIX}{service}"


def killswitch_keys(service: str) -> tuple[str, str]:
    """The global kill-switch key and the one of ``service``."""
    return KILLSWITCH_KEY, f"{KILLSWITCH_KEY}:{service}"


# ----------------------------------------------------------------------------- encoding


def encode_sample(sample: TelemetrySample) -> dict[str, str]:
    """A sample as flat string fields: ``repr`` of every float (``nan``/``inf`` round-trip) plus ``service``."""
    out = {name: repr(float(getattr(sample, name))) for name in TELEMETRY_FIELDS}
    out["service"] = sample.service
    return out


def decode_sample(fields: Mapping[Any, Any], *, source: str = "stream entry") -> TelemetrySample:
    """The inverse of :func:`encode_sample`. Missing fields are NaN; unknown fields are an error.

    Raises :class:`TelemetryError` naming ``source`` for a field that is not a number, or an
    unknown field (a collector of another contract version wrote it).
    """
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return TelemetrySample.from_dict(data, source=source)
    except ConfigError as exc:
        raise TelemetryError(str(exc)) from None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _bulk(arg: str) -> bytes:
    data = arg.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


_FIELD_BULKS = {name: _bulk(name) for name in (*TELEMETRY_FIELDS, "service")}


@functools.lru_cache(maxsize=1024)
def _xadd_head(stream: str, maxlen: int, n_fields: int) -> bytes:
    args = [_bulk(a) for a in ("XADD", stream, "MAXLEN", "~", str(maxlen), "*")]
    return b"*%d\r\n" % (len(args) + 2 * n_fields) + b"".join(args)


def pack_xadd(stream: str, fields: Mapping[str, str], maxlen: int) -> bytes:
    """``XADD stream MAXLEN ~ maxlen * field value ...`` in the Redis wire protocol (RESP)."""
    parts = [_xadd_head(stream, maxlen, len(fields))]
    for key, value in fields.items():
        parts.append(_FIELD_BULKS.get(key) or _bulk(key))
        parts.append(_bulk(value))
    return b"".join(parts)


_GET_FIELDS = operator.attrgetter(*TELEMETRY_FIELDS)
_FIELD_HEADS = [f"${len(k)}\r\n{k}\r\n" for k in (*TELEMETRY_FIELDS, "service")]


def pack_sample_xadd(sample: TelemetrySample, maxlen: int) -> bytes:
    """:func:`pack_xadd` of :func:`encode_sample`, fused: the ingest hot path (same bytes)."""
    values = [repr(float(v)) for v in _GET_FIELDS(sample)]
    values.append(sample.service)
    head = _xadd_head(telemetry_stream(sample.service), maxlen, len(values))
    if not sample.service.isascii():  # lengths below count characters, RESP counts bytes
        return pack_xadd(telemetry_stream(sample.service), encode_sample(sample), maxlen)
    return head + "".join([f"{k}${len(v)}\r\n{v}\r\n" for k, v in zip(_FIELD_HEADS, values, strict=True)]).encode()


@dataclass(frozen=True)
class StreamEntry:
    """One telemetry entry read from a stream: its id and its sample (None when undecodable)."""

    id: str
    sample: TelemetrySample | None
    error: str | None = None


@dataclass
class AuditRecord:
    """One decision of the controller, as written to ``rlctl:audit:<service>``.

    ``reason`` is the decision kind (``policy``, ``hpa``, ``fallback``, ``hold``,
    ``killswitch``, ``dry-run``); ``cause`` the trigger of a fallback or hold
    (``policy-timeout``, ``redis-down``, ``telemetry-stale``, ...); ``detail`` the
    human-readable why. ``raw_action`` is what the policy answered (None without a policy),
    ``target_knobs`` what the controller wanted, ``safe_knobs`` what the safety layer let
    through, ``actuation`` each actuator's result.
    """

    service: str
    time_s: float
    reason: str
    cause: str = ""
    detail: str = ""
    controller: str = ""
    telemetry_ids: list[str] = field(default_factory=list)
    feature_hash: str = ""
    raw_action: list[int] | None = None
    current_knobs: dict[str, Any] | None = None
    target_knobs: dict[str, Any] | None = None
    safe_knobs: dict[str, Any] | None = None
    safety_notes: list[str] = field(default_factory=list)
    actuation: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    _JSON_FIELDS = ("telemetry_ids", "raw_action", "current_knobs", "target_knobs", "safe_knobs",
                    "safety_notes", "actuation")  # fmt: skip

    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in self._JSON_FIELDS:
                out[name] = json.dumps(value, sort_keys=True)
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = repr(value) if isinstance(value, float) else str(value)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> AuditRecord:
        data = {_text(k): _text(v) for k, v in fields.items()}
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            raw = data[name]
            if name in cls._JSON_FIELDS:
                kwargs[name] = json.loads(raw)
            elif name == "time_s":
                kwargs[name] = float(raw)
            elif name == "dry_run":
                kwargs[name] = raw == "1"
            else:
                kwargs[name] = raw
        return cls(**kwargs)


# ----------------------------------------------------------------------------- the store


class TelemetryStore:
    """Telemetry and audit Streams of any number of services in one Redis.

    :param url: ``redis://host:port/db`` (``rediss://`` for TLS; a password goes in the URL).
    :param maxlen: approximate cap on entries kept per telemetry stream (``XADD MAXLEN ~``):
        at one sample per 5 s, 100,000 entries are almost six days.
    :param audit_maxlen: the same for each audit stream.
    :param group: the consumer group controllers read through.
    :param consumer: this reader's name in the group. Keep it stable across restarts: a
        restarted controller re-reads the entries its previous run left unacknowledged.
    :param timeout_s: socket connect and read timeout. No retries: the control loop has its
        own interval and must not stall longer than this on a dead server.
    """

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        maxlen: int = 100_000,
        audit_maxlen: int = 100_000,
        group: str = DEFAULT_GROUP,
        consumer: str = "controller",
        timeout_s: float = 1.0,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if maxlen < 1 or audit_maxlen < 1:
            raise ConfigError(f"stream maxlen must be at least 1, got maxlen={maxlen} audit_maxlen={audit_maxlen}")
        self.url = url
        self.maxlen = maxlen
        self.audit_maxlen = audit_maxlen
        self.group = group
        self.consumer = consumer
        try:
            self.redis: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"Redis URL {url!r}: {exc}; use redis://HOST:PORT/DB") from None
        self._groups: set[str] = set()
        self._reread_pending: set[str] = set()
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def __repr__(self) -> str:
        return f"TelemetryStore({self.url})"

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._redis_errors as exc:
            # After an outage the group may be gone (a server without persistence) and this
            # consumer's pending entries must be re-read: forget what we knew.
            self._groups.clear()
            raise StoreUnavailable(f"redis {self.url}: {what} failed: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ basics

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except self._redis_errors:
            return False

    def close(self) -> None:
        self.redis.close()

    # ------------------------------------------------------------------ telemetry

    def add(self, sample: TelemetrySample) -> str:
        """XADD one sample to its service's stream; returns the entry id."""
        return self.add_many([sample])[0]

    def add_many(self, samples: Sequence[TelemetrySample]) -> list[str]:
        """XADD many samples in one pipelined round trip; returns their ids in order.

        The commands are packed by hand (:func:`pack_xadd`): redis-py's generic packer spends
        most of a pipeline's time on the 56 arguments of each sample.
        """
        if not samples:
            return []
        payload = b"".join(pack_sample_xadd(s, self.maxlen) for s in samples)

        def run() -> list[str]:
            pool = self.redis.connection_pool
            conn = pool.get_connection()
            try:
                conn.send_packed_command([payload])
                replies = [conn.read_response() for _ in samples]
            except BaseException:
                conn.disconnect()  # the reply stream is out of step: never reuse this connection
                raise
            finally:
                pool.release(conn)
            return [_text(r) for r in replies]

        return self._do(f"XADD of {len(samples)} sample(s)", run)

    def ensure_group(self, service: str) -> None:
        """Create the consumer group (and the stream) if missing; entries already there are read too."""
        import redis

        if service in self._groups:
            return
        stream = telemetry_stream(service)

        def run() -> None:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self._do(f"XGROUP CREATE {stream} {self.group}", run)
        self._groups.add(service)
        self._reread_pending.add(service)

    def read(
        self, service: str, *, count: int = 1000, min_idle_ms: int | None = None, max_rounds: int = 100
    ) -> list[StreamEntry]:
        """Entries for this consumer, oldest first: its own pending ones after a (re)start, then new ones.

        New entries are read ``count`` at a time until the stream is drained (at most
        ``max_rounds`` calls), so a controller that was away catches up in one step. With
        ``min_idle_ms``, entries another consumer has held unacknowledged that long are
        claimed too (``XAUTOCLAIM``), so a crashed controller's telemetry is not stranded.
        """
        import redis

        self.ensure_group(service)
        stream = telemetry_stream(service)
        entries: list[StreamEntry] = []
        try:
            if service in self._reread_pending:
                entries += self._read_group(stream, "0", count)
                self._reread_pending.discard(service)
            if min_idle_ms is not None:
                entries += self._claim(stream, min_idle_ms, count)
            for _ in range(max_rounds):
                batch = self._read_group(stream, ">", count)
                entries += batch
                if len(batch) < count:
                    break
        except StoreUnavailable:
            raise
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the server lost the stream (restarted without persistence)
                self._groups.discard(service)
            raise StoreUnavailable(f"redis {self.url}: reading {stream}: {exc}") from None
        unique = {e.id: e for e in entries}
        return sorted(unique.values(), key=lambda e: tuple(int(p) for p in e.id.split("-")))

    def _read_group(self, stream: str, start: str, count: int) -> list[StreamEntry]:
        reply = self._do(
            f"XREADGROUP {stream} {start}",
            lambda: self.redis.xreadgroup(self.group, self.consumer, {stream: start}, count=count),
        )
        out: list[StreamEntry] = []
        for _name, messages in reply or []:
            out += [self._entry(stream, i, f) for i, f in messages]
        return out

    def _claim(self, stream: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        reply = self._do(
            f"XAUTOCLAIM {stream}",
            lambda: self.redis.xautoclaim(stream, self.group, self.consumer, min_idle_ms, "0-0", count=count),
        )
        messages = reply[1] if reply else []
        return [self._entry(stream, i, f) for i, f in messages if i]

    def _entry(self, stream: str, entry_id: Any, fields: Mapping[Any, Any] | None) -> StreamEntry:
        eid = _text(entry_id)
        if not fields:  # pending, but trimmed from the stream since
            return StreamEntry(eid, None, "entry was trimmed from the stream")
        try:
            return StreamEntry(eid, decode_sample(fields, source=f"{stream} entry {eid}"))
        except TelemetryError as exc:
            return StreamEntry(eid, None, str(exc))

    def ack(self, service: str, ids: Sequence[str]) -> int:
        """XACK ``ids``; returns how many were pending."""
        if not ids:
            return 0
        stream = telemetry_stream(service)
        return int(self._do(f"XACK {stream}", lambda: self.redis.xack(stream, self.group, *ids)))

    def pending_count(self, service: str) -> int:
        stream = telemetry_stream(service)
        info = self._do(f"XPENDING {stream}", lambda: self.redis.xpending(stream, self.group))
        return int(info["pending"]) if info else 0

    def length(self, service: str) -> int:
        stream = telemetry_stream(service)
        return int(self._do(f"XLEN {stream}", lambda: self.redis.xlen(stream)))

    def entries(self, service: str, count: int | None = None) -> list[StreamEntry]:
        """Entries still in the telemetry stream, oldest first (``XRANGE``)."""
        stream = telemetry_stream(service)
        reply = self._do(f"XRANGE {stream}", lambda: self.redis.xrange(stream, count=count))
        return [self._entry(stream, i, f) for i, f in reply]

    # ------------------------------------------------------------------ audit and kill switch

    def audit(self, record: AuditRecord) -> str:
        stream = audit_stream(record.service)
        return str(
            self._do(
                f"XADD {stream}",
                lambda: self.redis.xadd(stream, record.to_fields(), maxlen=self.audit_maxlen, approximate=True),
            )
        )

    def audit_many(self, records: Sequence[AuditRecord]) -> list[str]:
        def run() -> list[str]:
            pipe = self.redis.pipeline(transaction=False)
            for r in records:
                pipe.xadd(audit_stream(r.service), r.to_fields(), maxlen=self.audit_maxlen, approximate=True)
            return [str(i) for i in pipe.execute()]

        return self._do(f"XADD of {len(records)} audit record(s)", run) if records else []

    def audit_records(self, service: str, count: int | None = None) -> list[AuditRecord]:
        """Audit records of ``service``, oldest first (the last ``count`` when given)."""
        stream = audit_stream(service)
        if count is None:
            reply = self._do(f"XRANGE {stream}", lambda: self.redis.xrange(stream))
        else:
            reply = self._do(f"XREVRANGE {stream}", lambda: self.redis.xrevrange(stream, count=count))
            reply = list(reversed(reply))
        return [AuditRecord.from_fields(f) for _i, f in reply]

    def killswitch(self, service: str) -> str | None:
        """Why actuation is stopped for ``service`` (the switch's value), or None when it is not."""
        keys = killswitch_keys(service)
        values = self._do("GET kill switch", lambda: self.redis.mget(keys))
        for key, value in zip(keys, values or [], strict=False):
            if value is not None:
                return f"{key} is set ({value})"
        return None

    def set_killswitch(self, on: bool, *, service: str | None = None, reason: str = "set by rlctl") -> None:
        key = KILLSWITCH_KEY if service is None else killswitch_keys(service)[1]
        if on:
            self._do(f"SET {key}", lambda: self.redis.set(key, reason))
        else:
            self._do(f"DEL {key}", lambda: self.redis.delete(key))


# ----------------------------------------------------------------------------- collector


class Collector:
    """Scrapes one service and XADDs each sample; keeps samples locally while Redis is away.

    :param scrape: returns one :class:`TelemetrySample` per call (e.g.
        :meth:`rlctl.telemetry.scrape.Scraper.scrape`) or raises :class:`TelemetryError`.
    :param store: where samples go.
    :param buffer: samples kept while Redis is down, oldest dropped first; they are written,
        in order, as soon as Redis answers again.
    """

    def __init__(
        self, scrape: Callable[[], TelemetrySample], store: TelemetryStore | None, *, buffer: int = 10_000
    ) -> None:
        self.scrape = scrape
        self.store = store
        self.pending: collections.deque[TelemetrySample] = collections.deque(maxlen=buffer)
        self.dropped = 0
        self.written = 0
        self.last_error: str | None = None

    def flush(self) -> list[str]:
        """Write the buffered samples; raises :class:`StoreUnavailable` (keeping them) when Redis is down."""
        if self.store is None or not self.pending:
            return []
        batch = list(self.pending)
        ids = self.store.add_many(batch)
        for _ in batch:
            self.pending.popleft()
        self.written += len(ids)
        return ids

    def collect(self) -> tuple[TelemetrySample | None, str | None]:
        """Scrape once and store; returns ``(sample, None)`` or ``(sample_or_None, why it failed)``.

        A failed scrape returns ``(None, reason)``. A sample that could not be stored is
        buffered and returned with the Redis error, so the caller can still act on it.
        """
        try:
            sample = self.scrape()
        except TelemetryError as exc:
            self.last_error = str(exc)
            return None, f"scrape: {exc}"
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(sample)
        try:
            self.flush()
        except StoreUnavailable as exc:
            self.last_error = str(exc)
            return sample, str(exc)
        self.last_error = None
        return sample, None

    def run(self, interval_s: float, stop: Any = None, iterations: int | None = None) -> None:
        """Collect every ``interval_s`` seconds until ``stop`` (a threading.Event) is set."""
        n = 0
        next_t = time.monotonic()
        while (stop is None or not stop.is_set()) and (iterations is None or n < iterations):
            _sample, err = self.collect()
            if err:
                log.warning("collector: %s (%d buffered)", err, len(self.pending))
            n += 1
            next_t += interval_s
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
            elif stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)


def finite_or_none(values: Iterable[float]) -> list[float | None]:
    """Floats for strict JSON: non-finite values become None."""
    return [v if math.isfinite(v) else None for v in values]
