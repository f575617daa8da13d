"""``rlctl bench serve``: the policy server's latency and throughput, and Redis ingest.

Figures (one JSON object):

- ``policy_p50_ms`` / ``policy_p99_ms``: one decision through Ray Serve over HTTP (one
  keep-alive connection, one request at a time), client-side wall time.
- ``echo_p50_ms`` / ``echo_p99_ms``: a trivial echo deployment on the same HTTP path (Serve
  proxy, FastAPI, the same JSON body), measured interleaved with the policy requests so
  both see the same machine load. ``policy_over_echo_p99`` is the ratio (goal <= 1.5).
- ``batched_decisions_per_s``: many services at once through the batched deployment; the
  best of four ways, each reported too: one service per call with all calls in flight
  (``concurrent_handle_…``, ``concurrent_http_…``), and ``group`` services per call
  (``multi_service_handle_…`` via ``act_many``, ``multi_service_http_…`` via ``/act/many``),
  which is how one controller of many services talks to the server. Goal >= 1,000.
- ``redis_samples_per_s``: contract samples encoded and XADDed, pipelined, into a
  redis-server started on a free port (goal >= 10,000).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from policies.artifact import default_artifact_dir
from rlctl.contract import DEFAULT_WINDOW, N_TELEMETRY, TELEMETRY_FIELDS, Knobs, TelemetrySample
from rlctl.online.policy import placeholder_artifact
from rlctl.online.procs import RedisServer, free_port
from rlctl.online.serve_config import APP_NAME
from rlctl.online.store import TelemetryStore

log = logging.getLogger(__name__)

GOALS = {"policy_over_echo_p99": 1.5, "batched_decisions_per_s": 1000.0, "redis_samples_per_s": 10000.0}


def _request_body(service: str, rng: np.random.Generator) -> dict[str, Any]:
    window = rng.uniform(0.0, 100.0, size=(DEFAULT_WINDOW, N_TELEMETRY))
    window[:, 0] = time.time() + np.arange(DEFAULT_WINDOW)
    return {"service": service, "window": window.round(3).tolist(), "knobs": Knobs().to_dict()}


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1e3, q)), 3)


def bench_redis(samples: int = 50_000, batch: int = 1000) -> dict[str, Any]:
    """XADD ``samples`` contract samples (encoded per sample) in pipelines of ``batch``."""

    rng = np.random.default_rng(0)
    rows = rng.uniform(0, 1000, size=(min(samples, 1000), N_TELEMETRY))
    pool = [TelemetrySample.from_array(r, service="bench") for r in rows]
    with RedisServer() as server:
        store = TelemetryStore(server.url, maxlen=samples, timeout_s=10.0)
        store.add_many(pool[:10])  # connect outside the timed part
        t0 = time.perf_counter()
        done = 0
        while done < samples:
            n = min(batch, samples - done)
            store.add_many([pool[(done + i) % len(pool)] for i in range(n)])
            done += n
        wall = time.perf_counter() - t0
        length = store.length("bench")
        store.close()
    return {"redis_samples_per_s": round(samples / wall, 1), "redis_samples": samples, "redis_stream_length": length,
            "redis_pipeline": batch}  # fmt: skip


def _latency(base: str, path: str, bodies: list[bytes], conn: http.client.HTTPConnection) -> float:
    t = time.perf_counter()
    conn.request("POST", path, body=bodies[0], headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - t
    if resp.status != 200:
        raise RuntimeError(f"POST {base}{path}: HTTP {resp.status}: {data[:200]!r}")
    return elapsed


def bench_http_latency(host: str, port: int, requests: int, warmup: int = 30) -> dict[str, Any]:
    """Sequential POSTs to the policy (``/act``) and the echo (``/echo/act``), interleaved."""
    rng = np.random.default_rng(1)
    bodies = [json.dumps(_request_body(f"svc-{i}", rng)).encode() for i in range(16)]
    policy_conn = http.client.HTTPConnection(host, port, timeout=30)
    echo_conn = http.client.HTTPConnection(host, port, timeout=30)
    base = f"http://{host}:{port}"
    policy: list[float] = []
    echo: list[float] = []
    for i in range(warmup + requests):
        body = [bodies[i % len(bodies)]]
        # Alternate which goes first so neither always follows the other's garbage.
        pairs = [(policy, "/act", policy_conn), (echo, "/echo/act", echo_conn)]
        for sink, path, conn in pairs if i % 2 == 0 else pairs[::-1]:
            dt = _latency(base, path, body, conn)
            if i >= warmup:
                sink.append(dt)
    policy_conn.close()
    echo_conn.close()
    return {
        "policy_p50_ms": _pct(policy, 50), "policy_p99_ms": _pct(policy, 99),
        "echo_p50_ms": _pct(echo, 50), "echo_p99_ms": _pct(echo, 99),
        "policy_over_echo_p99": round(_pct(policy, 99) / max(_pct(echo, 99), 1e-9), 3),
        "latency_requests": requests,
    }  # fmt: skip


def bench_handle(app_name: str, n: int, *, group: int = 1, rounds: int = 2) -> float:
    """Decisions per second through the deployment handle, ``n`` services in flight (best round).

    ``group=1`` sends one call per service (``act``); larger groups send ``n / group`` calls of
    ``group`` services each (``act_many``). Either way the replica batches across calls.
    """
    from ray import serve

    handle = serve.get_app_handle(app_name)
    rng = np.random.default_rng(2)
    bodies = [_request_body(f"svc-{i}", rng) for i in range(n)]

    def once(items: list[dict[str, Any]]) -> None:
        if group == 1:
            calls = [handle.act.remote(b) for b in items]
        else:
            calls = [handle.act_many.remote(items[i : i + group]) for i in range(0, len(items), group)]
        for c in calls:
            c.result()

    once(bodies[: min(n, 4 * group)])  # warm up
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        once(bodies)
        best = max(best, n / (time.perf_counter() - t))
    return best


def bench_http_concurrent(host: str, port: int, n: int, *, concurrency: int, group: int = 1, rounds: int = 2) -> float:
    """Decisions per second over HTTP (aiohttp, keep-alive), ``concurrency`` requests in flight.

    ``group=1`` posts one service per request to ``/act``; larger groups post ``group``
    services per request to ``/act/many``.
    """
    import aiohttp

    rng = np.random.default_rng(3)
    one_body = [_request_body(f"svc-{i}", rng) for i in range(256)]
    if group == 1:
        bodies = [json.dumps(b) for b in one_body]
        url = f"http://{host}:{port}/act"
    else:
        bodies = [json.dumps({"requests": [one_body[(i + j) % 256] for j in range(group)]}) for i in range(8)]
        url = f"http://{host}:{port}/act/many"
    requests = max(n // group, 1)

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            sem = asyncio.Semaphore(concurrency)

            async def post(i: int) -> None:
                async with sem, session.post(url, data=bodies[i % len(bodies)],
                                             headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"POST {url}: HTTP {resp.status}")

            await asyncio.gather(*(post(i) for i in range(min(requests, 2 * concurrency))))  # warm up
            best = 0.0
            for _ in range(rounds):
                t = time.perf_counter()
                await asyncio.gather(*(post(i) for i in range(requests)))
                best = max(best, requests * group / (time.perf_counter() - t))
            return best

    return asyncio.run(run())


def bench_serve(
    policy: str | None = None,
    *,
    requests: int = 300,
    services: int = 2048,
    concurrency: int = 128,
    group: int = 64,
    redis_samples: int = 50_000,
    num_cpus: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every measurement; returns one JSON-able dict (see the module docstring)."""

    say = progress or (lambda msg: log.info("%s", msg))
    out: dict[str, Any] = {}
    say("redis: pipelined XADD")
    out.update(bench_redis(redis_samples))
    with tempfile.TemporaryDirectory(prefix="rlctl-bench-") as tmp:
        if policy is None:
            if (default_artifact_dir() / "manifest.json").exists():
                policy = "default"
            else:
                say("no trained default policy: benchmarking an untrained placeholder of the same architecture")
                policy = str(placeholder_artifact(Path(tmp) / "placeholder"))
        from rlctl.online.serve import LocalServe  # local: Ray Serve (the serve extra) is heavy

        port = free_port()
        say(f"ray serve: starting on 127.0.0.1:{port} (num_cpus={num_cpus})")
        t = time.perf_counter()
        server = LocalServe(policy, host="127.0.0.1", port=port, num_cpus=num_cpus, with_echo=True).start()
        out["serve_start_s"] = round(time.perf_counter() - t, 1)
        try:
            say(f"latency: {requests} sequential requests each to /act and /echo/act")
            out.update(bench_http_latency("127.0.0.1", port, requests))
            rates: dict[str, float] = {}
            say(f"throughput: {services} services, one per handle call, all in flight")
            rates["concurrent_handle_decisions_per_s"] = bench_handle(APP_NAME, services)
            say(f"throughput: {services} services, one per HTTP request, {concurrency} in flight")
            rates["concurrent_http_decisions_per_s"] = bench_http_concurrent(
                "127.0.0.1", port, services, concurrency=concurrency
            )
            say(f"throughput: {services} services, {group} per handle call (act_many)")
            rates["multi_service_handle_decisions_per_s"] = bench_handle(APP_NAME, services, group=group)
            say(f"throughput: {services} services, {group} per HTTP request (/act/many), 4 in flight")
            rates["multi_service_http_decisions_per_s"] = bench_http_concurrent(
                "127.0.0.1", port, services, concurrency=4, group=group
            )
            from ray import serve

            stats = serve.get_app_handle(APP_NAME).stats.remote().result()
        finally:
            server.stop()
    out.update({k: round(v, 1) for k, v in rates.items()})
    best = max(rates, key=lambda k: rates[k])
    out["batched_decisions_per_s"] = round(rates[best], 1)
    out["batched_via"] = best.removesuffix("_decisions_per_s")
    out["mean_batch_size"] = round(stats["decisions"] / max(stats["batches"], 1), 2)
    out["policy"] = stats["policy"]
    out["services"] = services
    out["num_cpus"] = num_cpus
    out["telemetry_fields"] = len(TELEMETRY_FIELDS)
    out["goals"] = GOALS
    out["goals_met"] = {
        "policy_over_echo_p99": out["policy_over_echo_p99"] <= GOALS["policy_over_echo_p99"],
        "batched_decisions_per_s": out["batched_decisions_per_s"] >= GOALS["batched_decisions_per_s"],
        "redis_samples_per_s": out["redis_samples_per_s"] >= GOALS["redis_samples_per_s"],
    }
    return out
