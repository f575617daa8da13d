"""``rlctl bench fleet``: one fleet controller deployment over many services, and a replica-kill drill.

Per run: a real ``redis-server`` on a free port; ``replicas`` controller replicas, each a
``python -m rlctl.online.fleet`` process started through the test-bed harness; a producer (this
process) that writes one simulated :class:`~rlctl.contract.TelemetrySample` per service per
interval into the service's stream: by default all services at each tick (every collector
scraping at once: the largest batches); with ``phases`` P, the services in P groups spread
evenly over the interval (as collectors with their own scrape offsets). With ``kill``, one
replica is SIGKILLed just after the first phase of the middle tick is written, while it is
deciding, and the others must take its services and its pending entries over.

Figures per run, from the decisions stream (``rlctl:fleet:<fleet>:decisions``), which the
replicas write in the same Lua script that acknowledges the entries:

- ``decision_p50_s`` / ``decision_p99_s`` / ``decision_max_s``: from each sample's
  ``timestamp_s`` (set just before it is written) to the Redis server time its decision was
  recorded, over the ticks after ``warmup_ticks`` (a replica builds its per-service state on
  its first batch);
- ``samples_lost``: samples written minus samples some decision consumed (an entry that was
  acknowledged without a decision counts as lost); ``double_acted``: samples consumed by
  more than one decision; ``pending_after``: entries still unacknowledged at the end;
- with a kill: ``takeover_s``, from the SIGKILL to the latest of the survivors' first reshards
  after it (each takes its share of the victim's services and claims their pending entries
  then; goal: under one interval), and ``takeover_decision_s``, to the first decision by a
  survivor for every one of the victim's services (which also waits for their next sample);
- per replica (``replica_stats``, from its ``stopped`` event; the victim has none): ``fenced``,
  decisions whose record the lease or the entry check refused (acted on, perhaps, and decided
  again by the replica that holds the entries: the window in which a knob can be set twice).

The telemetry is simulated (a diurnal sine per service, noise, a P99 that grows as 1/(1-rho)
with the utilisation); the controllers cannot tell it from a collector's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlctl import machine
from rlctl.contract import COL, N_TELEMETRY, Knobs, TelemetrySample
from rlctl.harness.process import Managed, spawn
from rlctl.online.fleet import decisions_stream, events_stream, group_name, members_key, services_key
from rlctl.online.procs import RedisServer, free_port
from rlctl.online.store import TelemetryStore, telemetry_stream

log = logging.getLogger(__name__)

#: Samples stamped and written per pipeline: each sample's timestamp is taken just before its chunk is written.
PRODUCER_CHUNK = 100

GOALS = {"services": 1000, "interval_s": 5.0, "decision_p99_s": 0.5, "samples_lost": 0, "double_acted": 0}


def cpu_model() -> str:
    """The CPU model and count, as the results write it."""
    return f"{machine.cpu_model()}, {os.cpu_count()} vCPUs"


class Telemetry:
    """Simulated samples of ``n`` services: per-service base load and phase, a diurnal sine, noise."""

    def __init__(self, n: int, interval_s: float, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.n, self.interval_s = n, interval_s
        self.base = self.rng.uniform(50.0, 500.0, n)
        self.phase = self.rng.uniform(0.0, 2 * math.pi, n)
        self.replicas = self.rng.integers(2, 6, n).astype(np.float64)
        self.capacity = 150.0  # requests/s one replica serves
        self.defaults = Knobs().to_array()

    def rows(self, t: float) -> np.ndarray:
        n = self.n
        qps = self.base * (1.0 + 0.5 * np.sin(2 * math.pi * t / 600.0 + self.phase)) * self.rng.lognormal(0, 0.1, n)
        rho = np.clip(qps / (self.replicas * self.capacity), 0.0, 0.98)
        rows = np.zeros((n, N_TELEMETRY))
        rows[:, COL["timestamp_s"]] = t
        rows[:, COL["interval_s"]] = self.interval_s
        rows[:, COL["offered_qps"]] = qps
        rows[:, COL["served_qps"]] = qps * (1 - 0.5 * np.maximum(rho - 0.9, 0))
        rows[:, COL["p50_ms"]] = 1.0 / (1 - rho)
        rows[:, COL["p99_ms"]] = 4.6 / (1 - rho)
        rows[:, COL["goroutines"]] = 20 + qps * 0.05
        rows[:, COL["gc_cycles_per_s"]] = 0.5 + qps / 200
        rows[:, COL["gc_cpu_fraction"]] = 0.02
        rows[:, COL["alloc_bytes_per_s"]] = qps * 20_000
        rows[:, COL["heap_bytes"]] = 64e6
        rows[:, COL["cpu_util"]] = rho
        rows[:, COL["replicas"]] = self.replicas
        rows[:, COL["gomaxprocs"]] = 2
        rows[:, COL["gogc"]] = 100
        rows[:, COL["gomemlimit_bytes"]] = math.inf
        rows[:, COL["object_pool_size"]] = 64
        rows[:, COL["conn_pool_size"]] = 32
        rows[:, COL["rtt_mean_ms"]] = 0.2
        rows[:, COL["rtt_std_ms"]] = 0.05
        for name in ("cpu_temp_c", "cpu_freq_ghz", "numa_remote_fraction"):
            rows[:, COL[name]] = math.nan
        return rows


def _start_replica(
    url: str, fleet: str, name: str, interval_s: float, policy: str, policy_url: str | None, log_dir: Path
) -> Managed:
    argv = [sys.executable, "-m", "rlctl.online.fleet", "--redis", url, "--fleet", fleet, "--consumer", name,
            "--interval", repr(interval_s), "--policy", policy, "--actuators", "memory"]  # fmt: skip
    if policy_url is not None:
        argv += ["--policy-url", policy_url]
    out = (log_dir / f"{name}.log").open("w")
    try:
        return spawn(None, f"fleet-{name}", argv, stdout=out, stderr=subprocess.STDOUT, command="bench-fleet")
    finally:
        out.close()


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"decision_p50_s": None, "decision_p99_s": None, "decision_max_s": None}
    a = np.asarray(values)
    q = {"decision_p50_s": 50.0, "decision_p99_s": 99.0}
    return {
        **{k: round(float(np.percentile(a, v)), 4) for k, v in q.items()},
        "decision_max_s": round(float(a.max()), 4),
    }


def run_fleet(
    *,
    services: int,
    interval_s: float,
    replicas: int,
    ticks: int,
    kill: bool,
    policy: str,
    policy_url: str | None = None,
    phases: int = 1,
    warmup_ticks: int = 2,
    kill_delay_s: float = 0.05,
    ready_timeout_s: float = 300.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """One run: ``replicas`` controller processes, ``ticks`` intervals of telemetry, optionally a kill."""
    fleet = "bench"
    names = [f"r{i}" for i in range(replicas)]
    gen = Telemetry(services, interval_s)
    svc = [f"svc-{i:05d}" for i in range(services)]
    load_before = machine.load_average()
    with tempfile.TemporaryDirectory(prefix="rlctl-fleet-") as tmp, RedisServer() as server:
        store = TelemetryStore(server.url, maxlen=1_000_000, timeout_s=30.0)
        r = store.redis
        r.sadd(services_key(fleet), *svc)
        procs = {n: _start_replica(server.url, fleet, n, interval_s, policy, policy_url, Path(tmp)) for n in names}
        try:
            deadline = time.monotonic() + ready_timeout_s
            while r.zcard(members_key(fleet)) < replicas:
                dead = [n for n, p in procs.items() if not p.alive()]
                if dead or time.monotonic() > deadline:
                    tails = {n: (Path(tmp) / f"{n}.log").read_text()[-2000:] for n in names}
                    raise RuntimeError(f"fleet replicas not ready (dead: {dead}): {tails}")
                time.sleep(0.2)
            time.sleep(2 * interval_s * 0.1 + 0.5)  # every replica has seen every member: the shards are settled
            progress(f"{replicas} replica(s) up; producing {ticks} ticks of {services} samples")
            produced: dict[str, float] = {}  # entry id per service -> sample timestamp
            produced_keys: list[tuple[str, str]] = []
            measured_from = 0.0
            kill_at: float | None = None
            victim = names[0] if kill and replicas > 1 else None
            t0 = time.time() + 0.2
            for k in range(ticks):
                wait = t0 + k * interval_s - time.time()
                if wait > 0:
                    time.sleep(wait)
                now = time.time()
                if k == warmup_ticks:
                    measured_from = now - 1e-3
                rows = gen.rows(now)
                step = -(-services // phases)  # services per phase
                for lo in range(0, services, PRODUCER_CHUNK):  # stamped as written, as a collector's scrape
                    wait = now + (lo // step) * interval_s / phases - time.time()
                    if wait > 0:  # --phases: this chunk's services are scraped later in the interval
                        time.sleep(wait)
                    names = svc[lo : lo + PRODUCER_CHUNK]
                    stamp = time.time()
                    rows[lo : lo + PRODUCER_CHUNK, COL["timestamp_s"]] = stamp
                    chunk = rows[lo : lo + PRODUCER_CHUNK]
                    ids = store.add_many(
                        [TelemetrySample.from_array(r, service=s) for r, s in zip(chunk, names, strict=True)]
                    )
                    for s, i in zip(names, ids, strict=True):
                        produced_keys.append((s, i))
                        produced[f"{s} {i}"] = stamp
                    if victim is not None and k == ticks // 2 and kill_at is None and lo + PRODUCER_CHUNK >= step:
                        time.sleep(kill_delay_s)  # the first phase is written: kill while it is being decided
                        kill_at = time.time()
                        procs[victim].kill()  # SIGKILL, mid-batch
                        progress(f"killed {victim} (SIGKILL) {kill_at - now:.3f} s after tick {k}")
            # Drain: wait until every sample has a decision, or three intervals.
            deadline = time.monotonic() + 3 * interval_s
            while time.monotonic() < deadline:
                if _decided_count(r, fleet) >= len(produced_keys):
                    break
                time.sleep(0.25)
            for p in procs.values():
                if p.alive():
                    p.stop(grace_s=10.0)
            pending = r.pipeline(transaction=False)
            for s in svc:
                pending.xpending(telemetry_stream(s), group_name(fleet))
            pending_after = sum(int(x["pending"]) for x in pending.execute())
            decisions = r.xrange(decisions_stream(fleet))
            events = r.xrange(events_stream(fleet))
        finally:
            for p in procs.values():
                if p.alive():
                    p.kill()
        store.close()
    result = _analyse(produced, decisions, events, measured_from, kill_at, victim, t0, interval_s)
    return {
        "services": services, "interval_s": interval_s, "controller_replicas": replicas, "ticks": ticks,
        "phases": phases,
        "warmup_ticks": warmup_ticks, **result, "pending_after": pending_after,
        "policy": _policy_note(policy, policy_url),
        "load_average_before": load_before, "load_average_after": machine.load_average(),
    }  # fmt: skip


def _policy_note(policy: str, policy_url: str | None) -> str:
    if policy_url is None:
        return f"in-process PolicyModel({policy}) in each replica: one forward pass per batch"
    return (f"Ray Serve {policy_url}/act/many ({policy}): one request per batch, decided by the deployment's "
            "@serve.batch in forward passes of up to 64")  # fmt: skip


def _decided_count(r: Any, fleet: str) -> int:
    n = 0
    last = "-"
    while True:
        batch = r.xrange(decisions_stream(fleet), min=last, count=10_000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return n
        n += sum(len(f.get("ids", "").split()) for _i, f in batch)
        last = batch[-1][0]


def _analyse(
    produced: dict[str, float],
    decisions: Sequence[tuple[str, dict[str, str]]],
    events: Sequence[tuple[str, dict[str, str]]],
    measured_from: float,
    kill_at: float | None,
    victim: str | None,
    t0: float,
    interval_s: float,
) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    latency: list[float] = []
    by_tick: dict[int, list[float]] = {}
    by_replica: Counter[str] = Counter()
    batch_sizes: Counter[str] = Counter()
    victim_services: set[str] = set()
    first_after: dict[str, float] = {}
    for _id, f in decisions:
        recorded = int(f["recorded_ms"]) / 1000.0
        service = f["service"]
        by_replica[f["replica"]] += 1
        batch_sizes[f["reason"]] += 1
        if victim is not None and f["replica"] == victim:
            victim_services.add(service)
        if kill_at is not None and f["replica"] != victim and recorded > kill_at:
            first_after.setdefault(service, recorded)
        for eid, stamp in zip(f["ids"].split(), f["stamps"].split(), strict=True):
            key = f"{service} {eid}"
            seen[key] += 1
            ts = float(stamp)
            if key in produced:
                by_tick.setdefault(int((ts - t0 + 0.1) // interval_s), []).append(recorded - ts)
                if ts >= measured_from:
                    latency.append(recorded - ts)
    lost = sum(1 for k in produced if seen[k] == 0)
    double = sum(c - 1 for c in seen.values() if c > 1)
    out: dict[str, Any] = {
        "samples_produced": len(produced),
        "samples_decided": sum(1 for k in produced if seen[k] > 0),
        "samples_lost": lost,
        "double_acted": double,
        "decisions": len(decisions),
        "decisions_by_replica": dict(sorted(by_replica.items())),
        "decisions_by_reason": dict(batch_sizes),
        "latency_samples": len(latency),
        **_percentiles(latency),
        "decision_p99_s_by_tick": [round(float(np.percentile(by_tick[k], 99)), 3) for k in sorted(by_tick)],
    }
    stats = {}
    for _id, e in events:
        if e.get("kind") == "stopped":
            stats[e["replica"]] = {k: json.loads(v) for k, v in e.items() if k not in ("replica", "kind", "time_s")}
    out["replica_stats"] = stats
    if kill_at is not None and victim is not None:
        first: dict[str, tuple[float, int]] = {}  # each survivor's first reshard after the kill
        for _i, e in events:
            if e.get("kind") == "reshard" and e["replica"] != victim and float(e["time_s"]) > kill_at:
                first.setdefault(e["replica"], (float(e["time_s"]), int(e["acquired"])))
        claims = [e for _i, e in events if e.get("kind") == "claim" and float(e["time_s"]) > kill_at]
        late = [first_after[s] for s in victim_services if s in first_after]
        all_late = len(late) == len(victim_services)
        out["kill"] = {
            "victim": victim,
            "victim_services": len(victim_services),
            "acquired_by_survivors": sum(n for _t, n in first.values()),
            "claimed_entries": sum(int(e["entries"]) for e in claims),
            "takeover_s": round(max(t for t, _n in first.values()) - kill_at, 3) if first else None,
            "takeover_decision_s": round(max(late) - kill_at, 3) if late and all_late else None,
        }
    return out


def bench_fleet(
    *,
    services: int = 1000,
    interval_s: float = 5.0,
    replica_counts: Sequence[int] = (1, 2, 4),
    drill_counts: Sequence[int] = (2, 4),
    ticks: int = 12,
    policy: str = "default",
    serve: bool = False,
    num_cpus: int = 2,
    phases: int = 1,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """A steady run at each of ``replica_counts`` (the latency and how it scales), then a kill drill at
    each of ``drill_counts`` (one replica SIGKILLed after the middle tick); one JSON object.

    Top level: ``decision_p99_s`` of the steady run with the lowest P99 (``best_replicas``), every
    steady run's in ``decision_p99_s_by_replicas``; ``samples_lost`` and ``double_acted`` summed over
    all runs; ``takeover_s_max`` over the drills. Each run's own figures are in ``runs``.
    """
    plan = [(n, False) for n in replica_counts] + [(n, True) for n in drill_counts]
    runs = []
    server = None
    if serve:
        from rlctl.online.serve import LocalServe  # local: Ray Serve (the serve extra) is heavy

        progress(f"ray serve: starting the policy deployment (num_cpus={num_cpus})")
        server = LocalServe(policy, port=free_port(), num_cpus=num_cpus).start()
    try:
        for n, kill in plan:
            progress(f"fleet: {services} services, {n} controller replica(s), interval {interval_s:g} s"
                     f"{', kill drill' if kill else ''}")  # fmt: skip
            run = run_fleet(services=services, interval_s=interval_s, replicas=n, ticks=ticks, kill=kill,
                            policy=policy, policy_url=server.url if server else None, phases=phases,
                            progress=progress)  # fmt: skip
            runs.append({"drill": kill, **run})
    finally:
        if server is not None:
            server.stop()
    steady = [r for r in runs if not r["drill"] and r["decision_p99_s"] is not None]
    best = min(steady, key=lambda r: r["decision_p99_s"]) if steady else None
    takeovers = [r["kill"]["takeover_s"] for r in runs if "kill" in r and r["kill"]["takeover_s"] is not None]
    return {
        "services": services,
        "interval_s": interval_s,
        "phases": phases,
        "controller_replicas": list(replica_counts),
        "drill_replicas": list(drill_counts),
        "decision_p99_s": best["decision_p99_s"] if best else None,
        "best_replicas": best["controller_replicas"] if best else None,
        "decision_p99_s_by_replicas": {str(r["controller_replicas"]): r["decision_p99_s"] for r in steady},
        "samples_lost": sum(r["samples_lost"] for r in runs),
        "double_acted": sum(r["double_acted"] for r in runs),
        "takeover_s_max": max(takeovers, default=None),
        "policy": runs[0]["policy"] if runs else None,
        "cpu": cpu_model(),
        "goals": GOALS,
        "runs": runs,
    }
