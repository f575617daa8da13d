"""``rlctl bench knob-fanout``: how long one runtime-knob change takes to reach every replica.

Starts ``n`` real ``gosvc serve`` processes (``--gomaxprocs 1``, the admin API on
127.0.0.<2+i>:<one port>, as pods have their own IPs), then times
:meth:`rlctl.online.fanout.KnobFanout.put` of one knob change (GOGC between 100 and 200)
to all of them, ``repeats`` times, in parallel (the controller's setting) and one replica
after another (``max_workers=1``, for comparison); the reconcile of replicas already in
sync (no request); a change with one replica stopped (its three tries and backoff,
bounded by the send's budget); and a change with the first replica frozen (SIGSTOP), in
parallel and one by one, counting the healthy replicas that got it within the budget.
Every figure is wall time on the controller's side, in seconds. The endpoint source is
the static list: with the EndpointSlice source the list comes from the watch's cache, no
request per change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rlctl.errors import ConfigError
from rlctl.online.fanout import KnobFanout, endpoint_name, static_endpoints
from rlctl.online.procs import GoService, free_port

TOKEN = "rlctl-bench-knob-fanout-token"


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 5), "p90": round(p90, 5), "max": round(ordered[-1], 5)}


@contextlib.contextmanager
def replicas(n: int, directory: Path) -> Iterator[list[GoService]]:
    """``n`` gosvc processes, admin API on 127.0.0.<2+i>:<port>; stopped on exit."""
    if not 1 <= n <= 250:
        raise ConfigError(f"--replicas {n}: between 1 and 250 (one loopback address each, 127.0.0.2-251)")
    token = directory / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    started: list[GoService] = []
    try:
        for i in range(n):
            args = ["--admin-addr", f"127.0.0.{2 + i}:{port}", "--gomaxprocs", "1", "--cpu-us", "10",
                    "--iters-per-us", "100"]  # fmt: skip
            started.append(GoService(args, token_file=token).start())
        yield started
    finally:
        for svc in started:
            svc.stop()


def bench_one(n: int, *, repeats: int, directory: Path) -> dict[str, Any]:
    """The figures for ``n`` replicas."""
    with replicas(n, directory) as procs:
        urls = [p.admin_root for p in procs]
        parallel = KnobFanout(static_endpoints(urls), token=TOKEN, timeout_s=2.0)
        sequential = KnobFanout(static_endpoints(urls), token=TOKEN, timeout_s=2.0, max_workers=1)
        put_s: dict[str, list[float]] = {"parallel": [], "sequential": []}
        for r in range(repeats):
            for name, fanout in (("parallel", parallel), ("sequential", sequential)):
                t0 = time.perf_counter()
                results = fanout.put({"gogc": 200 if r % 2 == 0 else 100})
                put_s[name].append(time.perf_counter() - t0)
                lost = [k for k, v in results.items() if v.outcome != "applied"]
                if lost:
                    raise ConfigError(f"knob fan-out bench: replicas {lost} missed a change with all of them up")
        t0 = time.perf_counter()
        assert parallel.reconcile() == {}
        noop_s = time.perf_counter() - t0
        hung = _one_hung(procs, urls)
        procs[-1].stop()
        t0 = time.perf_counter()
        one_down = parallel.put({"gogc": 400})
        down_s = time.perf_counter() - t0
        (missed,) = [r for r in one_down.values() if r.outcome == "missed"]
    return {
        "replicas": n,
        "repeats": repeats,
        "put_parallel_s": _stats(put_s["parallel"]),
        "put_sequential_s": _stats(put_s["sequential"]),
        "reconcile_in_sync_s": round(noop_s, 6),
        "put_one_replica_down_s": round(down_s, 4),
        "one_down_attempts": missed.attempts,
        "applied_with_one_down": sum(r.outcome == "applied" for r in one_down.values()),
        **hung,
    }


def _one_hung(procs: Sequence[GoService], urls: Sequence[str]) -> dict[str, Any]:
    """A change with the first replica frozen (SIGSTOP: it accepts connections, never answers).

    Per-request timeout 0.5 s, three tries, a 1.5 s budget: in parallel the healthy replicas
    have the change in milliseconds; one after another they wait behind the frozen one and,
    the budget spent, miss it.
    """
    out: dict[str, Any] = {}
    proc = procs[0].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)
    try:
        _wait_stopped(proc.pid)
        for name, workers in (("parallel", 32), ("sequential", 1)):
            fanout = KnobFanout(static_endpoints(urls), token=TOKEN, timeout_s=0.5, attempts=3,
                                backoff_s=0.1, budget_s=1.5, max_workers=workers)  # fmt: skip
            t0 = time.perf_counter()
            results = fanout.put({"gogc": 800})
            wall = time.perf_counter() - t0
            healthy = [r for r in results.values() if r.endpoint != endpoint_name(urls[0])]
            out[f"one_hung_{name}"] = {
                "wall_s": round(wall, 4),
                "healthy": len(healthy),
                "healthy_applied": sum(r.outcome == "applied" for r in healthy),
            }
    finally:
        proc.send_signal(signal.SIGCONT)
    return out


def _wait_stopped(pid: int, timeout_s: float = 5.0) -> None:
    """Until every thread of ``pid`` has stopped (a loaded host delivers SIGSTOP to a Go process's threads late)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = Path(f"/proc/{pid}/task")
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
        if states and all(st == "T" for st in states):
            return
        time.sleep(0.01)
    raise ConfigError(f"knob fan-out bench: replica pid {pid} did not stop within {timeout_s} s of SIGSTOP")


def bench_knob_fanout(
    sizes: Sequence[int], *, repeats: int = 20, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every size in ``sizes``, one after another; one JSON-ready dict."""
    load0 = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="rlctl-knob-fanout-") as tmp:
        for n in sizes:
            if progress is not None:
                progress(f"{n} gosvc replicas, {repeats} changes")
            runs.append(bench_one(n, repeats=repeats, directory=Path(tmp)))
    load1 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m": [round(load0[0], 2), round(load1[0], 2)],
        "settings": {"timeout_s": 2.0, "attempts": 3, "backoff_s": 0.1, "max_workers": 32},
        "runs": runs,
    }
