"""The local backend: a scenario's faults, for real, on this host, under a live controller.

One run sets up, on loopback only::

    gosvc loadgen ──> gosvc proxy (faults, round robin) ──> gosvc serve replicas (cgroup quota each)
         │                                                        │
         └── JSON line per second ──> control loop <── /metrics ──┘
                                        │
                   controller.decide ──> replica manager (scale) + /admin/knobs (runtime knobs)

The loop itself is :class:`chaos.backends.live.LiveRun`; here are the plant (proxy and replicas) and
the fault windows, injected and reverted on schedule by :class:`~chaos.backends.local.faults.LocalFaults`.

Reverting is not optional: SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the loop, and the
teardown stops the load, reverts every fault, stops every process, removes the cgroups and
finally replays the on-disk journal (what :func:`chaos.backends.local.cleanup` does after a crash) to
catch anything an interrupted injection left half-done, with signals held off while it runs.
A run killed with SIGKILL leaves its journal for ``rlctl chaos cleanup --backend local``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.backends.live import LiveConfig, LiveRun, execute, signals_deferred, signals_raise
from chaos.backends.local.faults import Injection, LocalFaults, check_local
from chaos.backends.local.proxy import FaultProxy
from chaos.backends.local.replicas import ReplicaManager, detect_cgroups
from chaos.record import RunRecord, fault_label
from chaos.spec import FaultWindow, Scenario
from policies.base import Controller
from rlctl.cgroups import CpuSplit
from rlctl.contract import Knobs, TelemetrySample
from rlctl.errors import ChaosError
from rlctl.harness.isolation import HarnessIsolation
from rlctl.harness.journal import Journal, revert_journal, stale_runs, using
from rlctl.harness.process import become_subreaper, find_gosvc, reap_orphans
from rlctl.telemetry.scrape import Scraper

log = logging.getLogger(__name__)

_RUNTIME_KNOBS = ("gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")
_HOST_KNOBS = ("prefetch", "turbo")


@dataclass(frozen=True)
class LocalConfig(LiveConfig):
    """How the local backend runs a scenario (the loop's settings are :class:`~chaos.backends.live.LiveConfig`'s)."""

    stress_ng: str | None = None
    """stress-ng binary (default: PATH, else /usr/bin/stress-ng)."""
    replica_cpu: float | None = 0.5
    """CPU quota per replica in cores, through its own CPU cgroup (v1 or v2); None: no cgroup."""
    cpu_us: int = 200
    """CPU work per request (``gosvc serve --cpu-us``)."""
    cpu_iters: int | None = None
    """Spin iterations per request (``gosvc serve --cpu-iters``), fixed for the run; None: ``cpu_us`` as
    the first replica's spin-loop calibration converts it."""
    serve_args: tuple[str, ...] = ()
    """Extra ``gosvc serve`` flags for every replica."""
    loss_mode: str = "drop"
    """network-loss: ``drop`` (no answer, the client times out) or ``reset`` (TCP RST)."""
    partition_mode: str = "blackhole"
    """network-partition: ``blackhole`` or ``refuse``."""
    health_interval_s: float = 1.0
    """The proxy's readiness probe period (two failures take a replica out of rotation)."""
    cpu_split: CpuSplit | None = None
    """Replicas on ``cpu_split.replica`` (their cgroups are cpusets too), the harness (this process, the
    load generator, proxy, Redis, Ray) on ``cpu_split.harness``; the replicas' quotas at
    ``bounds.max_replicas`` must fit their set. None: everything shares every CPU (the old layout)."""


class LocalBackend:
    """Runs scenarios against the Go test-bed on this host; see the module docstring."""

    name = "local"

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()

    def check(self, scenario: Scenario) -> None:
        """Refuse, before anything starts, what cannot run here (faults, missing binaries)."""
        check_local(scenario, stress_ng=self.config.stress_ng)
        find_gosvc(self.config.gosvc)
        if self.config.replica_cpu:
            found = detect_cgroups()  # no writable CPU cgroup: the one clear error now, not after the proxy started
            if self.config.cpu_split is not None:
                found.cpuset_path("rlctl")  # v1 without a cpuset controller: its one clear error
        split = self.config.cpu_split
        if split is not None:
            split.check_quotas(
                self.config.replica_cpu, self.config.bounds.max_replicas, quota_source="--replica-cpu",
                max_source="--max-replicas",
            )  # fmt: skip
        stale = stale_runs(self.config.state_dir)
        if stale:
            log.warning(
                "earlier local runs were killed before they reverted their faults (%s); revert them with "
                "`rlctl chaos cleanup --backend local --run-id ID`",
                ", ".join(stale),
            )

    def plan(self, scenario: Scenario) -> list[str]:
        """What a run would do, one line per step (for ``--dry-run``)."""
        self.check(scenario)
        cfg = self.config
        quota = f"{cfg.replica_cpu:g} core each ({detect_cgroups()})" if cfg.replica_cpu else "no CPU quota"
        where = f"; {cfg.cpu_split}" if cfg.cpu_split is not None else "; replicas and harness share every CPU"
        lines = [
            f"start gosvc proxy and {cfg.initial_knobs.replicas} gosvc serve replicas ({quota}{where}) on loopback",
            f"replay load {scenario.load.kind} x{cfg.load_scale:g} for {scenario.duration_s:g}s; "
            f"decide every {cfg.interval_s:g}s",
        ]
        for i, w in enumerate(scenario.windows()):
            lines.append(f"{w.start_s:g}s-{w.end_s:g}s {fault_label(w, i)}: {_describe(w)}")
        return lines

    def run(self, scenario: Scenario, controller: Controller, *, run_id: str) -> RunRecord:
        """Run ``scenario`` once under ``controller``; every change is reverted on the way out."""
        self.check(scenario)
        become_subreaper()
        gosvc = find_gosvc(self.config.gosvc)
        with signals_raise():
            journal = Journal.open(run_id, self.config.state_dir, command="chaos run")
            try:
                with using(journal):
                    run = _LocalRun(self.config, scenario, controller, journal, gosvc)
            except BaseException:
                with signals_deferred():
                    revert_journal(journal)
                    journal.close()
                raise
        with contextlib.ExitStack() as stack:
            if self.config.cpu_split is not None:  # a no-op inside a suite's isolation
                stack.enter_context(HarnessIsolation(self.config.cpu_split, command="chaos run"))
            with using(journal):  # what the run starts without naming the journal (redis-server for --online) too
                return execute(run)


def _describe(w: FaultWindow) -> str:
    kind = w.kind.value
    if kind.startswith("network-"):
        return f"fault proxy {kind.removeprefix('network-')} {dict(w.spec.params)}"
    if kind.endswith("-stress"):
        return f"stress-ng in the selected replicas' cgroups {dict(w.spec.params)}"
    if kind == "pod-failure":
        return "SIGSTOP the selected replicas, SIGCONT at the end"
    return f"SIGKILL the selected replicas, restart after {w.spec.param('restart_delay_s'):g}s"


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _LocalRun(LiveRun):
    """One local run: the proxy, the replicas and the fault schedule around the live loop."""

    backend = "local"
    cfg: LocalConfig

    def __init__(
        self, cfg: LocalConfig, scenario: Scenario, controller: Controller, journal: Journal, gosvc: str
    ) -> None:
        super().__init__(cfg, scenario, controller, journal, gosvc)
        self.proxy: FaultProxy | None = None
        self.replicas: ReplicaManager | None = None
        self.faults: LocalFaults | None = None
        self.scrapers: dict[tuple[str, int], Any] = {}
        self.cpu_used: dict[tuple[str, int], float] = {}
        """CPU seconds each replica process used, as last read (a killed one keeps its last reading)."""
        self.done: list[Injection] = []
        self.active: dict[int, Injection] = {}
        self.events: list[tuple[float, int, int, FaultWindow]] = []
        for i, w in enumerate(scenario.windows()):
            self.events += [(w.start_s, 1, i, w), (w.end_s, 0, i, w)]
        self.events.sort(key=lambda e: (e[0], e[1]))  # a revert before an inject at the same time

    # ------------------------------------------------------------------ plant

    def start_plant(self) -> str:
        cfg = self.cfg
        self.proxy = FaultProxy(
            self.gosvc, self.journal, seed=cfg.seed + 1, health_interval_s=cfg.health_interval_s,
            hold_s=max(10.0, 5 * cfg.request_timeout_s), log_path=self.log_path("proxy.log"),
        ).start()  # fmt: skip
        self.replicas = ReplicaManager(
            self.gosvc, self.journal, self.proxy, self.knobs, quota_cores=cfg.replica_cpu, cpu_us=cfg.cpu_us,
            serve_args=cfg.serve_args, log_dir=self.log_dir,
            cpus=cfg.cpu_split.replica_list if cfg.cpu_split is not None and cfg.replica_cpu else None,
        )  # fmt: skip
        self.replicas.cpu_iters = cfg.cpu_iters
        self.replicas.setup()
        self.replicas.scale_to(self.knobs.replicas)
        self.faults = LocalFaults(
            self.journal, self.proxy, self.replicas, self.rng, stress_ng=cfg.stress_ng,
            loss_mode=cfg.loss_mode, partition_mode=cfg.partition_mode,
        )  # fmt: skip
        for rep in self.replicas.ready():
            self._scraper(rep.name, rep.generation, rep.url).prime()
        return self.proxy.url

    def _scraper(self, name: str, generation: int, url: str) -> Any:

        key = (name, generation)
        if key not in self.scrapers:
            self.scrapers[key] = Scraper(f"{url}/metrics", timeout_s=1.0, service=name, handler="/work")
        return self.scrapers[key]

    def tick(self, now: float) -> None:
        assert self.replicas is not None and self.faults is not None
        while self.events and self.events[0][0] <= now:
            _at, inject, i, w = self.events.pop(0)
            if inject:
                inj = self.faults.inject(w, fault_label(w, i), self.now())
                self.done.append(inj)
                self.active[i] = inj
                log.info("t=%.1fs injected %s: %s", inj.injected_s, inj.fault, inj.error or inj.detail)
            elif i in self.active:
                inj = self.active.pop(i)
                self.faults.revert(inj, self.now())
                reap_orphans()
                log.info("t=%.1fs reverted %s", inj.reverted_s, inj.fault)
        for rep in self.replicas.due_restarts():
            self._scraper(rep.name, rep.generation, rep.url)
        if self.proxy is not None and self.proxy.proc is not None and not self.proxy.proc.alive():
            raise ChaosError("the fault proxy exited during the run; see proxy.log in the report's logs folder")

    def live_replicas(self) -> float:
        return float(len(self.replicas.live())) if self.replicas is not None else 0.0

    def _account_cpu(self) -> None:
        """Remember each replica process's CPU seconds so far (utime + stime from /proc)."""
        assert self.replicas is not None
        for rep in self.replicas.replicas.values():
            if rep.proc is not None and rep.alive:
                used = process_cpu_seconds(rep.proc.pid)
                if used is not None:
                    self.cpu_used[(rep.name, rep.generation)] = used

    def scrape(self) -> list[TelemetrySample]:
        assert self.replicas is not None
        self._account_cpu()
        out = []
        for rep in self.replicas.ready():
            try:
                out.append(self._scraper(rep.name, rep.generation, rep.url).scrape())
            except Exception as exc:  # a scrape failing under a fault is data, not a crash
                log.debug("scrape of %s failed: %s", rep.name, exc)
        return out

    def actuate(self, new: Knobs, changed: list[str], now: float) -> None:
        assert self.replicas is not None
        if "replicas" in changed:
            self.replicas.scale_to(new.replicas)
            for rep in self.replicas.ready():
                self._scraper(rep.name, rep.generation, rep.url)
        if any(f in changed for f in _RUNTIME_KNOBS):
            failed = self.replicas.apply_knobs(new)
            if failed:
                self.notes.append(f"t={now:.0f}s: runtime knobs not applied to {', '.join(failed)}")
        if any(f in changed for f in _HOST_KNOBS):
            note = "prefetch and turbo are host settings the local backend does not change; recorded only"
            if note not in self.notes:
                self.notes.append(note)

    # ------------------------------------------------------------------ teardown

    def teardown_steps(self) -> list[Callable[[], None]]:
        return [self._revert_faults, self._collect_extra, self._stop_replicas, self._stop_proxy]

    def _revert_faults(self) -> None:
        assert self.faults is not None
        for inj in list(self.active.values()):
            self.faults.revert(inj, self.now())
        self.active.clear()
        if self.proxy is not None and self.proxy.proc is not None:
            self.proxy.clear_fault()

    def _collect_extra(self) -> None:
        if self.proxy is not None and self.proxy.proc is not None:
            self.extra["proxy_stats"] = self.proxy.stats()
        if self.replicas is not None:
            self._account_cpu()
            self.extra["core_seconds_used"] = round(sum(self.cpu_used.values()), 3)
            self.extra["replica_cpu_cores"] = self.cfg.replica_cpu
            self.extra["cpu_split"] = self.cfg.cpu_split.to_dict() if self.cfg.cpu_split is not None else None
            self.extra["cpu_iters_per_request"] = self.replicas.cpu_iters
            self.extra["replica_history"] = {r.name: r.history for r in self.replicas.replicas.values()}

    def _stop_replicas(self) -> None:
        if self.replicas is not None:
            self.replicas.shutdown()

    def _stop_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()

    def finish(self) -> None:
        leftovers = revert_journal(self.journal)  # whatever an interrupted step left half-done
        if leftovers:
            log.info("journal replay reverted: %s", "; ".join(leftovers))
        self.journal.close()
        time.sleep(0.1)
        reap_orphans()

    def record(self) -> RunRecord:
        self.injections = [i.to_dict() for i in self.done]
        return super().record()
