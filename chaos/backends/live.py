"""The control loop shared by the live backends (local and k8s): load, telemetry, decisions.

A live run drives ``gosvc loadgen`` with the scenario's load (``rate N`` on its stdin once a
second, Poisson arrivals; latency is measured from each request's intended send time), keeps
one point of the report's time series per load-generator line, and every ``interval_s``
aggregates one contract :class:`~rlctl.contract.TelemetrySample`:

- offered and served load, P50/P99 and errors from the load generator's lines of the interval
  (client side, so network faults count; P50/P99 are the lines' values weighted by requests);
- goroutines, GC, allocation, heap (summed over replicas) and CPU use, throttling (averaged)
  from each replica's ``/metrics`` (:class:`rlctl.telemetry.Scraper`);
- the runtime knobs as the replicas report them (as last applied where they do not), and the
  desired replicas.

The controller sees the last ``window`` samples as a ``(1, W, F)`` array and answers with
target knobs; the backend applies what changed. Backends fill in the hooks: start and stop
what serves the traffic, inject faults, scrape, actuate. SIGINT and SIGTERM raise
``KeyboardInterrupt`` in the loop; the teardown then runs with both held off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chaos.record import RunRecord
from chaos.spec import Scenario
from envs.loads import load_qps
from policies.base import Controller
from rlctl.contract import DEFAULT_WINDOW, KNOB_FIELDS, KnobBounds, Knobs, TelemetrySample, clamp_array
from rlctl.errors import ChaosError
from rlctl.harness.journal import Journal
from rlctl.harness.process import Managed, spawn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    """What every live backend needs to run the loop."""

    gosvc: str | None = None
    """gosvc binary, for the load generator (default: deploy/gosvc/bin/gosvc, else PATH)."""
    interval_s: float = 5.0
    """Control interval: one telemetry sample and one decision per interval (the simulator's step)."""
    sample_s: float = 1.0
    """Load generator reporting interval: the resolution of the report's time series."""
    load_scale: float = 1.0
    """Multiplies the scenario's offered load (scenarios are often written for a bigger service)."""
    request_timeout_s: float = 2.0
    """Client timeout: a dropped or blackholed request counts as an error with this latency."""
    max_inflight: int = 2000
    initial_knobs: Knobs = field(default_factory=lambda: Knobs(replicas=2, gomaxprocs=1))
    bounds: KnobBounds = field(default_factory=lambda: KnobBounds(max_replicas=6, max_gomaxprocs=4))
    window: int = DEFAULT_WINDOW
    state_dir: str | None = None
    """Journal root (default ``$RLCTL_STATE_DIR`` or ``/tmp/rlctl-state``)."""
    log_dir: Path | None = None
    """Where the child processes' logs go (none: discarded)."""
    seed: int = 0


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM off (recording them) while a cleanup must finish."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def note(signum: int, _frame: Any) -> None:
        got.append(signum)
        log.warning("%s during cleanup: finishing the cleanup first", signal.Signals(signum).name)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class LiveRun:
    """One live run of one controller. Subclasses implement the ``# hooks`` methods."""

    backend = "live"

    def __init__(
        self, cfg: LiveConfig, scenario: Scenario, controller: Controller, journal: Journal, gosvc: str
    ) -> None:

        self.cfg = cfg
        self.scenario = scenario
        self.controller = controller
        self.journal = journal
        self.gosvc = gosvc
        self.interrupted = False
        self.rng = np.random.default_rng(cfg.seed)
        self.knobs = cfg.bounds.clamp(cfg.initial_knobs)
        self.loadgen: Managed | None = None
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.series = RunRecord.empty_series()
        self.telemetry: list[TelemetrySample] = []
        self.window: deque[np.ndarray] = deque(maxlen=cfg.window)
        self.actions: list[dict[str, Any]] = []
        self.injections: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self._ctl_lines: list[dict[str, Any]] = []
        self._rate = -1.0
        self.t0 = time.monotonic()
        self.log_dir = cfg.log_dir
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        load = scenario.load.model_copy(update={"noise": False})  # the load generator's arrivals are Poisson
        seconds = math.ceil(scenario.duration_s) + 1
        self.schedule = load_qps(load, seconds, 1.0, np.random.default_rng(cfg.seed)) * cfg.load_scale

    # ------------------------------------------------------------------ hooks

    def start_plant(self) -> str:
        """Start what serves traffic; return the URL the load generator sends to."""
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Called many times a second: inject and revert faults that are due, restart what is due."""

    def live_replicas(self) -> float:
        """Replicas that cost right now (for the series)."""
        return float(self.knobs.replicas)

    def scrape(self) -> list[TelemetrySample]:
        """One window sample per replica from its /metrics (failures skipped)."""
        return []

    def actuate(self, new: Knobs, changed: list[str], now: float) -> None:
        """Apply the knobs that changed."""

    def teardown_steps(self) -> list[Callable[[], None]]:
        """Stop and revert everything the plant started, in order (the load is stopped first)."""
        return []

    def finish(self) -> None:
        """Last step of the teardown, after every step ran (e.g. replay the journal)."""

    # ------------------------------------------------------------------ driver

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log_path(self, name: str) -> Path | None:
        return self.log_dir / name if self.log_dir is not None else None

    def setup(self) -> None:
        target = self.start_plant()
        self.controller.reset(1, self.cfg.bounds, self.cfg.interval_s)
        cfg = self.cfg
        argv = [
            self.gosvc, "loadgen", "--url", f"{target}/work", "--rate", f"{self.schedule[0]:.3f}",
            "--duration", "0", "--control-stdin", "--interval", f"{cfg.sample_s:g}s",
            "--timeout", f"{cfg.request_timeout_s:g}s", "--poisson", "--seed", str(cfg.seed + 2),
            "--max-inflight", str(cfg.max_inflight),
        ]  # fmt: skip
        log_path = self.log_path("loadgen.log")
        with open(log_path or "/dev/null", "a") as stderr:
            self.loadgen = spawn(
                self.journal, "loadgen", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
        self.t0 = time.monotonic()
        self._rate = float(self.schedule[0])
        threading.Thread(target=self._read_lines, args=(self.loadgen,), daemon=True, name="loadgen-lines").start()

    def _read_lines(self, m: Managed) -> None:
        assert m.proc.stdout is not None
        try:
            for raw in m.proc.stdout:
                with contextlib.suppress(ValueError):
                    self.lines.put(json.loads(raw))
        except (OSError, ValueError):
            pass
        self.lines.put(None)

    def loop(self) -> None:
        duration = self.scenario.duration_s
        next_control = self.cfg.interval_s
        while True:
            now = self.now()
            if now >= duration:
                break
            self._drive_load(now)
            self.tick(now)
            self._drain(min(0.1, max(0.0, duration - now)))
            if self.now() >= next_control:
                self._control(self.now())
                next_control += self.cfg.interval_s

    def _drive_load(self, now: float) -> None:
        rate = float(self.schedule[min(int(now), len(self.schedule) - 1)])
        if abs(rate - self._rate) > 1e-6 and self.loadgen is not None and self.loadgen.proc.stdin is not None:
            try:
                self.loadgen.proc.stdin.write(f"rate {rate:.3f}\n")
                self.loadgen.proc.stdin.flush()
            except OSError as exc:
                raise ChaosError(f"the load generator stopped reading its control input ({exc})") from None
            self._rate = rate

    def _drain(self, wait_s: float) -> None:
        try:
            line = self.lines.get(timeout=wait_s) if wait_s > 0 else self.lines.get_nowait()
        except queue.Empty:
            return
        while True:
            if line is None:
                raise ChaosError("the load generator exited early; see loadgen.log in the report's logs folder")
            if not line.get("summary") and float(line.get("t_s", 0.0)) <= self.scenario.duration_s + 1e-6:
                self._on_line(line)
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return

    def _on_line(self, line: dict[str, Any]) -> None:
        offered = float(line.get("offered", 0))
        s = self.series
        s["t_s"].append(float(line["t_s"]))
        s["dt_s"].append(float(line.get("interval_s", self.cfg.sample_s)))
        s["offered_qps"].append(float(line.get("offered_qps", 0.0)))
        s["p50_ms"].append(float(line.get("p50_ms", math.nan)) if offered else math.nan)
        s["p99_ms"].append(float(line.get("p99_ms", math.nan)) if offered else math.nan)
        s["error_rate"].append(float(line.get("errors", 0)) / offered if offered else 0.0)
        s["replicas"].append(self.live_replicas())
        s["gomaxprocs"].append(float(self.knobs.gomaxprocs))
        s["gogc"].append(float(self.knobs.gogc))
        self._ctl_lines.append(line)

    # ------------------------------------------------------------------ control

    def sample(self, now: float) -> TelemetrySample:
        """The contract sample of the interval ending now (see the module docstring)."""
        lines, self._ctl_lines = self._ctl_lines, []
        dur = sum(float(x.get("interval_s", 0.0)) for x in lines)
        offered = sum(float(x.get("offered", 0)) for x in lines)

        def weighted(key: str) -> float:
            pairs = [(float(x.get(key, math.nan)), float(x.get("offered", 0))) for x in lines]
            pairs = [(v, w) for v, w in pairs if w > 0 and math.isfinite(v)]
            total = sum(w for _, w in pairs)
            return sum(v * w for v, w in pairs) / total if total > 0 else math.nan

        server = self.scrape()

        def finite(key: str) -> list[float]:
            return [float(getattr(x, key)) for x in server if math.isfinite(getattr(x, key))]

        def total(key: str) -> float:
            vals = finite(key)
            return float(sum(vals)) if vals else math.nan

        def mean(key: str) -> float:
            vals = finite(key)
            return float(np.mean(vals)) if vals else math.nan

        def observed(key: str, knob: float) -> float:
            vals = finite(key)  # what the replicas report they run with, else what was last applied
            return float(np.mean(vals)) if vals else knob

        k = self.knobs
        return TelemetrySample(
            timestamp_s=now,
            interval_s=dur or self.cfg.interval_s,
            offered_qps=offered / dur if dur else 0.0,
            served_qps=sum(float(x.get("completed", 0)) for x in lines) / dur if dur else 0.0,
            p50_ms=weighted("p50_ms"),
            p99_ms=weighted("p99_ms"),
            error_rate=sum(float(x.get("errors", 0)) for x in lines) / offered if offered else 0.0,
            goroutines=total("goroutines"),
            gc_cycles_per_s=total("gc_cycles_per_s"),
            gc_cpu_fraction=mean("gc_cpu_fraction"),
            alloc_bytes_per_s=total("alloc_bytes_per_s"),
            heap_bytes=total("heap_bytes"),
            cpu_util=mean("cpu_util"),
            cfs_throttled_fraction=mean("cfs_throttled_fraction"),
            replicas=float(k.replicas),
            gomaxprocs=observed("gomaxprocs", k.gomaxprocs),
            gogc=observed("gogc", k.gogc),
            gomemlimit_bytes=observed("gomemlimit_bytes", k.gomemlimit_mib * 2**20),
            object_pool_size=observed("object_pool_size", k.object_pool_size),
            conn_pool_size=observed("conn_pool_size", k.conn_pool_size),
            prefetch_on=float(k.prefetch),
            turbo_on=float(k.turbo),
            rtt_mean_ms=math.nan,
            rtt_std_ms=math.nan,
            cpu_temp_c=math.nan,
            cpu_freq_ghz=math.nan,
            numa_remote_fraction=math.nan,
            service="gosvc",
        )

    def _control(self, now: float) -> None:
        sample = self.sample(now)
        self.telemetry.append(sample)
        row = sample.to_array()
        if not self.window:  # the first window is the first sample repeated
            self.window.extend([row] * (self.window.maxlen or 1))
        self.window.append(row)
        windows = np.stack(list(self.window))[None, :, :]
        current = self.knobs.to_array()[None, :]
        target = clamp_array(self.controller.decide(windows, current.copy()), self.cfg.bounds)[0]
        new = Knobs.from_array(target)
        changed = [f for f in KNOB_FIELDS if getattr(new, f) != getattr(self.knobs, f)]
        if not changed:
            return
        for f in changed:
            self.actions.append(
                {"t_s": round(now, 3), "knob": f, "from": getattr(self.knobs, f), "to": getattr(new, f)}
            )
        self.knobs = new
        self.actuate(new, changed, now)

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        """Stop the load, then the plant's steps in order, then :meth:`finish`; every step runs."""
        for step in [self._stop_load, *self.teardown_steps()]:
            try:
                step()
            except Exception as exc:
                log.warning("teardown step %s failed: %s", getattr(step, "__name__", step), exc)
        self.finish()

    def _stop_load(self) -> None:
        m, self.loadgen = self.loadgen, None
        if m is None:
            return
        if m.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                m.proc.stdin.write("stop\n")
                m.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            m.proc.wait(timeout=0.5 if self.interrupted else self.cfg.request_timeout_s + 2)
        m.stop(grace_s=1.0)

    def record(self) -> RunRecord:
        return RunRecord(
            controller=self.controller.name,
            backend=self.backend,
            series=RunRecord.to_arrays(self.series),
            interval_s=self.cfg.interval_s,
            telemetry=self.telemetry,
            actions=self.actions,
            injections=self.injections,
            notes=self.notes,
            extra={**self.extra, "load_scale": self.cfg.load_scale, "max_replicas": self.cfg.bounds.max_replicas},
            interrupted=self.interrupted,
        )


def execute(run: LiveRun) -> RunRecord:
    """Set up, loop and always tear down ``run``, with SIGINT/SIGTERM turned into a clean stop."""
    with signals_raise():
        try:
            run.setup()
            run.loop()
        except BaseException:
            run.interrupted = True
            raise
        finally:
            with signals_deferred():
                run.teardown()
    return run.record()
