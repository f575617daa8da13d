"""Measure a real Go service for calibration: open-loop steps at several runtime-knob settings.

The measurement is built for a noisy shared host:

- every *step* is one short ``gosvc loadgen`` run at a constant rate (Poisson arrivals by
  default, latency from the intended send time, a fresh run so a saturated step cannot
  leave a backlog to the next one), reported in short intervals; a step's P99 is the
  median of its intervals' P99s, pooled over repeats;
- the service's ``/metrics`` is scraped before and after each step for its CPU, allocation
  and GC counters (:class:`envs.calibrate.ServerStats`);
- settings are *interleaved*: the first repeat climbs the ladders of all settings together,
  switching knobs between steps; later repeats visit the same (setting, load) cells in a
  seeded random order, so a burst from another tenant of the host lands on unrelated
  cells rather than on a whole curve or one load level, and the median rejects it;
- each setting's ladder is scaled to its capacity, found first by a geometric *scout*
  ramp that stops at the first step that saturates twice;
- a ladder stops at its first saturated step (errors, a throughput shortfall, or P99 *and*
  P50 far above their low-load values: a queue lifts the median too, a neighbour's burst
  mostly the tail) — there is nothing to learn from pushing a queue further;
- the host's contention is recorded per step: the CPU other tenants used (busy CPU from
  ``/proc/stat`` minus the service's and the load generator's), so a report can show how
  noisy the host was; ``nice`` can lift the service and the load generator above batch
  neighbours.

Knobs are set through the service's ``/admin/knobs`` (``PUT``, bearer token; the harness's
client, :mod:`rlctl.harness.admin`). :class:`TestBed` starts a private ``gosvc serve``
(optionally in a CPU cgroup with a quota, v1 or v2, see :mod:`rlctl.cgroups`) and always
stops it and removes the group. It, the group and every load-generator step go through the
test-bed harness (:mod:`rlctl.harness`): journaled before they start, so ``rlctl chaos
cleanup --backend local`` reverts a calibration killed mid-run.

Live measurement, so it lives with the harness, not in the simulator's package (it was
``envs/testbed.py``); it writes its steps as :mod:`envs.calibrate`'s records, the one crossing
the layer contract allows between live measurement and the simulator (``.importlinter``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import select
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.calibrate import (
    HOLDOUT_KNEE_FRACTIONS,
    CalibrationData,
    Point,
    ServerStats,
    Setting,
    curve_knee,
    host_cores,
)
from rlctl import cgroups
from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.errors import ConfigError, TelemetryError
from rlctl.harness import admin
from rlctl.harness import cgroup as harness_cgroup
from rlctl.harness.cgroup import Cgroup
from rlctl.harness.process import Managed, find_gosvc, spawn
from rlctl.harness.process import run as harness_run
from rlctl.machine import children_cpu_s, host_busy_s
from rlctl.telemetry.scrape import Scraper, counter_delta

logger = logging.getLogger(__name__)

NAN = float("nan")

#: Settings fitted by default: a half fraction of the 2^3 design GOMAXPROCS {1,2} x GOGC {50,200} x
#: pool {0,1024} (defining relation I = ABC), so each knob is seen at both levels.
DEFAULT_FIT_SETTINGS: tuple[Setting, ...] = (
    Setting(1, 50, 1024),
    Setting(1, 200, 0),
    Setting(2, 50, 0),
    Setting(2, 200, 1024),
)
#: Held out by default: two settings of the other half fraction.
DEFAULT_HOLDOUT_SETTINGS: tuple[Setting, ...] = (Setting(2, 50, 1024), Setting(1, 200, 1024))
#: The test-bed the shipped profile describes (``gosvc serve`` flags besides address and token).
TESTBED_SERVE_FLAGS: tuple[str, ...] = ("--cpu-us", "500", "--alloc-bytes", "32768", "--alloc-count", "1")


@dataclass(frozen=True)
class MeasureConfig:
    """How the test-bed is measured."""

    url: str
    """Load target, e.g. ``http://127.0.0.1:8080/work``."""
    metrics_url: str
    admin_url: str
    """Base URL of the admin API (``/admin/knobs`` is appended)."""
    admin_token: str
    loadgen: str
    """The ``gosvc`` binary (its ``loadgen`` subcommand)."""
    step_s: float = 1.5
    interval_s: float = 0.25
    repeats: int = 3
    holdout_repeats: int = 4
    fractions: tuple[float, ...] = (0.25, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
    """Load ladder as fractions of the scouted capacity."""
    scout_start_qps: float = 100.0
    scout_factor: float = 1.25
    scout_step_s: float = 1.0
    scout_max_qps: float = 50_000.0
    poisson: bool = True
    timeout_s: float = 1.0
    """Per-request timeout of the load generator; match the profile's ``timeout_ms``."""
    settle_s: float = 0.3
    """Pause after changing knobs (the pool refills, the pacer adapts)."""
    saturation_p99_factor: float = 25.0
    """A step whose P99 is this many times the setting's low-load P99 (and whose P50 is
    ``saturation_p50_factor`` times its low-load P50) counts as saturated."""
    saturation_p50_factor: float = 5.0
    nice: int = 0
    """Niceness of the load generator (-20..19; negative needs root). 0: inherit."""
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    seed: int = 1
    extend_factor: float = 1.15
    """Growth per extra level of a ladder that did not saturate (see :func:`_ladders`)."""
    max_extra_levels: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= self.step_s:
            raise ConfigError(f"interval_s={self.interval_s} must be in (0, step_s={self.step_s}]")
        if self.repeats < 1 or self.holdout_repeats < 1:
            raise ConfigError("repeats and holdout_repeats must be at least 1")
        if not self.fractions or any(f <= 0 for f in self.fractions):
            raise ConfigError(f"fractions={self.fractions} must be positive fractions of the capacity")
        if self.scout_factor <= 1.0:
            raise ConfigError(f"scout_factor={self.scout_factor} must be above 1")

    @property
    def overload_s(self) -> float:
        """When the median reporting interval of a step ends: how long a backlog grows by then."""
        return (self.step_s + self.interval_s) / 2.0


# ------------------------------------------------------------------------------ service I/O


#: The name of the session journal of the processes and cgroups a measurement starts.
COMMAND = "calibrate"


def read_token(path: str | Path) -> str:
    """The admin bearer token in ``path`` (:func:`rlctl.harness.admin.read_token`)."""
    return admin.read_token(path)


def set_knobs(admin_url: str, token: str, body: dict[str, int], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """``PUT /admin/knobs`` (``admin_url``: the admin listener's root); returns the knobs reported afterwards."""
    return admin.AdminClient(admin_url, token=token, timeout_s=timeout_s).put(body)


def _snapshot(metrics_url: str) -> Any:
    try:
        return Scraper(metrics_url).snapshot()
    except TelemetryError as exc:
        logger.warning("scrape failed: %s", exc)
        return None


def server_stats(before: Any, after: Any) -> ServerStats:
    """Counter increases between two :class:`~rlctl.telemetry.scrape.MetricsSnapshot` (NaN if absent)."""
    if before is None or after is None:
        return ServerStats()

    def delta(*names: str, match: dict[str, str] | None = None) -> float:
        for name in names:
            if after.has(name):
                return float(counter_delta(before, after, name, match))
        return NAN

    return ServerStats(
        duration_s=after.monotonic_s - before.monotonic_s,
        requests=delta("http_request_duration_seconds_count", match={"handler": "/work"}),
        cpu_s=delta("process_cpu_seconds_total"),
        gc_cycles=delta("go_gc_cycles_total_gc_cycles_total", "go_gc_duration_seconds_count"),
        gc_cpu_s=delta("go_cpu_classes_gc_total_cpu_seconds_total"),
        alloc_bytes=delta("go_gc_heap_allocs_bytes_total", "go_memstats_alloc_bytes_total"),
        live_bytes=after.gauge("go_gc_heap_live_bytes"),
    )


@dataclass
class StepResult:
    """One loadgen run at one rate."""

    target_qps: float
    offered_qps: float
    served_qps: float
    error_rate: float
    p50s: list[float]
    p99s: list[float]
    server: ServerStats
    duration_s: float
    foreign_cores: float = NAN

    @property
    def p99_ms(self) -> float:
        return statistics.median(self.p99s) if self.p99s else NAN

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.p50s) if self.p50s else NAN


class Runner:
    """Runs loadgen steps against one service; owns the knobs it sets."""

    def __init__(self, config: MeasureConfig, *, on_step: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_step = on_step or (lambda _msg: None)
        self._seed = config.seed
        self.steps_run = 0

    def argv(self, qps: float, duration_s: float) -> list[str]:
        cfg = self.config
        self._seed += 1
        argv = [cfg.loadgen, "loadgen", "--url", cfg.url, "--rate", f"{qps:.3f}", "--duration", f"{duration_s:g}s",
                "--interval", f"{cfg.interval_s:g}s", "--timeout", f"{cfg.timeout_s:g}s"]  # fmt: skip
        if cfg.poisson:
            argv += ["--poisson", "--seed", str(self._seed)]
        return (["nice", "-n", str(cfg.nice)] if cfg.nice else []) + argv

    def set(self, setting: Setting) -> None:
        set_knobs(self.config.admin_url, self.config.admin_token, setting.admin_body())
        time.sleep(self.config.settle_s)

    def step(self, qps: float, duration_s: float) -> StepResult:
        """One loadgen run of ``duration_s`` at ``qps``, with server counters around it."""
        argv = self.argv(qps, duration_s)
        before = _snapshot(self.config.metrics_url)
        busy0, child0, t0 = host_busy_s(), children_cpu_s(), time.monotonic()
        try:
            proc = harness_run("loadgen", argv, timeout_s=duration_s + 3 * self.config.timeout_s + 15, command=COMMAND)
        except subprocess.TimeoutExpired:
            raise TelemetryError(f"load generator did not finish: {shlex.join(argv)}") from None
        busy1, child1, t1 = host_busy_s(), children_cpu_s(), time.monotonic()
        after = _snapshot(self.config.metrics_url)
        if proc.returncode != 0:
            error = ConfigError if proc.returncode == 2 else TelemetryError
            raise error(
                f"load generator exited with {proc.returncode}: {proc.stderr.strip()[-300:]} ({shlex.join(argv)})"
            )
        self.steps_run += 1
        stats = server_stats(before, after)
        result = parse_loadgen(proc.stdout, qps, stats)
        if math.isfinite(busy0) and math.isfinite(busy1) and stats.duration_s > 0 and t1 > t0:
            # Busy CPU of the whole host minus the service's and the load generator's: the neighbours'.
            service_cpu = stats.cpu_s * (t1 - t0) / stats.duration_s if math.isfinite(stats.cpu_s) else 0.0
            foreign = (busy1 - busy0) - service_cpu - (child1 - child0)
            result.foreign_cores = max(foreign, 0.0) / (t1 - t0)
        return result


def parse_loadgen(stdout: str, target_qps: float, server: ServerStats | None = None) -> StepResult:
    """A :class:`StepResult` from ``gosvc loadgen``'s JSON lines (the drain interval and summary are skipped)."""
    lines = []
    summary: dict[str, Any] = {}
    for raw in stdout.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if line.get("summary"):
            summary = line
        elif float(line.get("target_qps", 0)) > 0 and float(line.get("offered", 0)) > 0:
            lines.append(line)
    if not lines:
        raise TelemetryError(f"load generator printed no interval at {target_qps:g} qps; output: {stdout[-300:]!r}")
    offered = sum(float(x["offered"]) for x in lines)
    duration = sum(float(x["interval_s"]) for x in lines)
    errors = float(summary.get("errors", sum(float(x["errors"]) for x in lines)))
    total = float(summary.get("offered", offered))
    completed = float(summary.get("completed", total - errors))
    return StepResult(
        target_qps=target_qps,
        offered_qps=offered / duration if duration > 0 else NAN,
        served_qps=completed / duration if duration > 0 else NAN,
        error_rate=errors / total if total > 0 else 0.0,
        p50s=[float(x["p50_ms"]) for x in lines],
        p99s=[float(x["p99_ms"]) for x in lines],
        server=server or ServerStats(),
        duration_s=duration,
    )


@dataclass(frozen=True)
class Baseline:
    """A setting's low-load latency, the reference for saturation."""

    p99_ms: float
    p50_ms: float


def saturated(step: StepResult, baseline: Baseline, p99_factor: float, p50_factor: float = 5.0) -> bool:
    """Errors over 1 %, under 90 % of the offered load served, or P99 and P50 both far above low load."""
    if step.error_rate > 0.01:
        return True
    if math.isfinite(step.served_qps) and step.served_qps < 0.9 * step.offered_qps:
        return True
    tail = math.isfinite(baseline.p99_ms) and step.p99_ms > p99_factor * baseline.p99_ms
    median = not math.isfinite(baseline.p50_ms) or step.p50_ms > p50_factor * baseline.p50_ms
    return tail and median


# ------------------------------------------------------------------------------ the schedule


@dataclass
class _Cell:
    """Repeats of one (setting, load level) pooled into one point."""

    setting: Setting
    target_qps: float
    role: str
    knee_fraction: float | None = None
    steps: list[StepResult] = field(default_factory=list)

    def point(self, config: MeasureConfig) -> Point:
        p99s = [v for s in self.steps for v in s.p99s]
        p50s = [v for s in self.steps for v in s.p50s]
        server = ServerStats()
        for s in self.steps:
            server = server + s.server
        n = len(self.steps)
        return Point(
            setting=self.setting,
            qps=statistics.fmean(s.offered_qps for s in self.steps),
            p99_ms=statistics.median(p99s),
            p50_ms=statistics.median(p50s),
            error_rate=statistics.fmean(s.error_rate for s in self.steps),
            served_qps=statistics.fmean(s.served_qps for s in self.steps),
            duration_s=config.step_s,
            overload_s=config.overload_s,
            repeats=n,
            arrivals="poisson" if config.poisson else "uniform",
            role=self.role,
            knee_fraction=self.knee_fraction,
            p99_intervals_ms=tuple(round(v, 4) for v in p99s),
            server=server,
            foreign_cores=_nanmean([s.foreign_cores for s in self.steps]),
        )


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else NAN


def scout_capacity(runner: Runner, setting: Setting) -> tuple[float, Baseline]:
    """``(capacity_qps, low-load latency)``: a geometric ramp up to the first step that saturates twice."""
    cfg = runner.config
    runner.set(setting)
    qps = cfg.scout_start_qps
    first = runner.step(qps, cfg.scout_step_s)
    base = Baseline(first.p99_ms, first.p50_ms)
    last_ok = qps
    while qps < cfg.scout_max_qps:
        qps *= cfg.scout_factor
        step = runner.step(qps, cfg.scout_step_s)
        if _saturated(step, base, cfg):
            again = runner.step(qps, cfg.scout_step_s)  # one hiccup of the host is not saturation
            if _saturated(again, base, cfg):
                capacity = math.sqrt(last_ok * qps)
                runner.on_step(
                    f"scout {setting.label}: capacity ~{capacity:.0f} qps (low-load P99 {base.p99_ms:.2f} ms)"
                )
                return capacity, base
        last_ok = qps
        if math.isfinite(step.p99_ms) and step.p99_ms < base.p99_ms:
            base = Baseline(step.p99_ms, min(base.p50_ms, step.p50_ms))
    raise TelemetryError(
        f"{setting.label}: the service kept up with {qps:.0f} qps (scout_max_qps); raise it or check the target URL"
    )


def _saturated(step: StepResult, base: Baseline, cfg: MeasureConfig) -> bool:
    return saturated(step, base, cfg.saturation_p99_factor, cfg.saturation_p50_factor)


def _ladders(
    runner: Runner,
    cells: dict[Setting, list[_Cell]],
    baselines: dict[Setting, Baseline],
    repeats: int,
    *,
    extend: bool = True,
) -> None:
    """Measure every setting's ladder ``repeats`` times.

    The first repeat climbs all ladders together, level by level (knobs switched before
    each step), and a setting leaves it at its first saturated step, which also sets how
    far later repeats go (that level, plus one). With ``extend``, a ladder the first repeat
    climbs to the top without saturating grows by ``extend_factor`` per level (at most
    ``max_extra_levels``): a scout fooled by a neighbour's burst must not cut a curve
    short of its knee. Later repeats visit their (setting, level) cells in a seeded random
    order, so a neighbour's burst lands on unrelated cells instead of one load level of
    every setting, and the medians over repeats can reject it.
    """
    cfg = runner.config
    order = list(cells)
    top: dict[Setting, int] = {}
    active = set(order)
    i = 0
    while active:
        k = i % len(order)
        for setting in order[k:] + order[:k]:
            ladder = cells[setting]
            if setting not in active:
                continue
            if i >= len(ladder):
                if not (extend and len(ladder) < len(cfg.fractions) + cfg.max_extra_levels):
                    active.discard(setting)
                    top[setting] = len(ladder) - 1
                    continue
                ladder.append(_Cell(setting, ladder[-1].target_qps * cfg.extend_factor, ladder[-1].role))
            if _run_cell(runner, ladder[i], baselines[setting]):
                active.discard(setting)
                top[setting] = min(i + 1, len(ladder) - 1)
                runner.on_step(f"{setting.label}: saturated at {ladder[i].steps[-1].offered_qps:.0f} qps")
        i += 1
    rng = random.Random(cfg.seed)
    for _ in range(repeats - 1):
        todo = [c for s in order for c in cells[s][: top[s] + 1]]
        rng.shuffle(todo)
        for cell in todo:
            _run_cell(runner, cell, baselines[cell.setting])


def _run_cell(runner: Runner, cell: _Cell, baseline: Baseline) -> bool:
    """One step of ``cell`` at its setting; True when it saturated (then the service gets time to drain)."""
    cfg = runner.config
    runner.set(cell.setting)
    step = runner.step(cell.target_qps, cfg.step_s)
    cell.steps.append(step)
    hot = _saturated(step, baseline, cfg)
    if hot:
        time.sleep(cfg.timeout_s)  # requests the client gave up on may still run in the service
    return hot


def measure(
    config: MeasureConfig,
    fit_settings: Sequence[Setting] = DEFAULT_FIT_SETTINGS,
    holdout_settings: Sequence[Setting] = (),
    *,
    cpu_quota_cores: float | None = None,
    source: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> CalibrationData:
    """Scout, then measure the fit and holdout ladders, then the holdout knee fractions."""
    runner = Runner(config, on_step=on_step)
    started = time.time()
    quota = cpu_quota_cores or _service_quota(config.metrics_url) or host_cores()
    all_settings = list(dict.fromkeys([*fit_settings, *holdout_settings]))
    capacity: dict[Setting, float] = {}
    baselines: dict[Setting, Baseline] = {}
    for s in all_settings:
        capacity[s], baselines[s] = scout_capacity(runner, s)
    cells = {
        s: [_Cell(s, f * capacity[s], "fit" if s in fit_settings else "holdout_curve") for f in config.fractions]
        for s in all_settings
    }
    _ladders(runner, cells, baselines, config.repeats)
    points = [c.point(config) for cs in cells.values() for c in cs if c.steps]
    if holdout_settings:
        knee_cells: dict[Setting, list[_Cell]] = {}
        for s in holdout_settings:
            curve = [p for p in points if p.setting == s]
            knee = curve_knee(curve, config.slo_p99_ms) or 0.8 * capacity[s]
            knee_cells[s] = [_Cell(s, f * knee, "holdout_level", knee_fraction=f) for f in HOLDOUT_KNEE_FRACTIONS]
            runner.on_step(f"holdout {s.label}: measured knee {knee:.0f} qps")
        _ladders(runner, knee_cells, baselines, config.holdout_repeats, extend=False)
        points += [c.point(config) for cs in knee_cells.values() for c in cs if c.steps]
    meta = {
        **(source or {}),
        "target": config.url,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "steps_run": runner.steps_run,
        "loadgen": f"{Path(config.loadgen).name} loadgen --rate R --duration {config.step_s:g}s "
        f"--interval {config.interval_s:g}s --timeout {config.timeout_s:g}s" + (" --poisson" if config.poisson else ""),
        "scouted_capacity_qps": {str(s): round(c, 1) for s, c in capacity.items()},
        "low_load_p99_ms": {str(s): round(b.p99_ms, 3) for s, b in baselines.items()},
        "foreign_cores_median": _median_finite([p.foreign_cores for p in points]),
        "nice": config.nice,
        "fractions": list(config.fractions),
        "repeats": config.repeats,
        "holdout_repeats": config.holdout_repeats,
        "host_cores": host_cores(),
        "loadavg_end": _loadavg(),
    }
    return CalibrationData(points, float(quota), meta)


def _median_finite(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return round(statistics.median(finite), 3) if finite else None


def _service_quota(metrics_url: str) -> float | None:
    snap = _snapshot(metrics_url)
    if snap is None:
        raise TelemetryError(f"cannot scrape {metrics_url}: start the service first (or pass --target correctly)")
    quota = snap.gauge("gosvc_cpu_quota_cores")
    return float(quota) if math.isfinite(quota) and quota > 0 else None


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


# ------------------------------------------------------------------------------ a private test-bed


class TestBed:
    """A private ``gosvc serve`` on a free loopback port, optionally in a CPU-quota cgroup.

    Use as a context manager; the process is always stopped and the cgroup removed::

        with TestBed(TESTBED_SERVE_FLAGS) as bed:
            config = MeasureConfig(url=bed.url, metrics_url=bed.metrics_url, admin_url=bed.admin_root,
                                   admin_token=bed.token, loadgen=bed.binary)
    """

    __test__ = False  # not a pytest class

    def __init__(self, serve_flags: Sequence[str] = TESTBED_SERVE_FLAGS, *, binary: str | None = None,
                 cgroup_quota_cores: float | None = None, nice: int = 0,
                 start_timeout_s: float = 15.0) -> None:  # fmt: skip
        self.binary = find_gosvc(binary, option="--loadgen")
        self.serve_flags = list(serve_flags)
        self.cgroup_quota_cores = cgroup_quota_cores
        self.nice = nice
        self.start_timeout_s = start_timeout_s
        self.token = os.urandom(12).hex()
        self.proc: subprocess.Popen[str] | None = None
        self._managed: Managed | None = None
        self._cgroup: Cgroup | None = None
        self.cgroup: Path | None = None
        self.addr = ""
        self.admin_addr = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def root(self) -> str:
        return f"http://{self.addr}"

    @property
    def admin_root(self) -> str:
        """The admin listener (``/admin/knobs``), from the startup line's ``admin_addr``."""
        return f"http://{self.admin_addr}"

    @property
    def url(self) -> str:
        return f"{self.root}/work"

    @property
    def metrics_url(self) -> str:
        return f"{self.root}/metrics"

    @property
    def command(self) -> str:
        """The documented command line (address and token file as placeholders)."""
        argv = ["gosvc", "serve", "--addr", "127.0.0.1:8080", "--admin-token-file", "token.txt", *self.serve_flags]
        return shlex.join((["nice", "-n", str(self.nice)] if self.nice else []) + argv)

    def __enter__(self) -> TestBed:
        self._tmp = tempfile.TemporaryDirectory(prefix="rlctl-testbed-")
        token_file = Path(self._tmp.name) / "token.txt"
        token_file.write_text(self.token)
        argv = [self.binary, "serve", "--addr", "127.0.0.1:0", "--admin-token-file", str(token_file),
                *self.serve_flags]  # fmt: skip
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        try:
            if self.cgroup_quota_cores:  # journaled before it exists; the service joins it right after its start
                self._cgroup = _create_cgroup(self.cgroup_quota_cores)
                self.cgroup = self._cgroup.path
            self._managed = spawn(
                None, "gosvc-serve", argv, stdout=subprocess.PIPE, command=COMMAND,
                detail={"cgroups": [str(self.cgroup)] if self.cgroup else []},
            )  # fmt: skip
            self.proc = self._managed.proc
            if self._cgroup is not None:
                _join(self._cgroup, self.proc.pid)
            self.addr, self.admin_addr = self._listening()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _listening(self) -> tuple[str, str]:
        """(address, admin address) from the service's startup line."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.start_timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        try:
            info = json.loads(line)
            return str(info["addr"]), str(info["admin_addr"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TelemetryError(
                f"gosvc serve did not report its address within {self.start_timeout_s:g}s (got {line[:200]!r}); "
                f"run `{self.binary} serve -h` to check the binary"
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self._managed is not None:
            self._managed.stop(grace_s=10.0)
            self._managed = None
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup, self.cgroup = None, None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _create_cgroup(quota_cores: float, period_us: int = cgroups.PERIOD_US) -> Cgroup:
    """A new CPU cgroup (v1 or v2) with ``quota_cores`` of quota, journaled before it is made."""
    hierarchy = cgroups.detect(purpose="--cgroup-quota-cores", alternative="drop --cgroup-quota-cores")
    name = f"rlctl-calibrate-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    try:
        group = harness_cgroup.create(hierarchy, name, quota_cores=quota_cores, period_us=period_us, command=COMMAND)
    except OSError as exc:
        raise ConfigError(
            f"cannot set up cgroup {hierarchy.root / name} ({exc.strerror}); run as root or drop the quota"
        ) from None
    logger.info("test-bed cgroup %s (%s, quota %g cores)", group.path, hierarchy, quota_cores)
    return group


def _join(group: Cgroup, pid: int) -> None:
    try:
        group.add(pid)
    except OSError as exc:
        raise ConfigError(
            f"cannot move pid {pid} into {group.path} ({exc.strerror}); run as root or drop the quota"
        ) from None
    logger.info("test-bed pid %d in %s", pid, group.path)


def measure_config_for(bed: TestBed, **overrides: Any) -> MeasureConfig:
    """A :class:`MeasureConfig` aimed at ``bed``."""
    base = MeasureConfig(url=bed.url, metrics_url=bed.metrics_url, admin_url=bed.admin_root, admin_token=bed.token,
                         loadgen=bed.binary, nice=bed.nice)  # fmt: skip
    return replace(base, **overrides)
