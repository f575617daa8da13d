"""The local backend's fault injectors: what each scenario fault kind does on this host.

==================  =========================================================================
fault kind          local injection
==================  =========================================================================
network-delay       fault proxy: latency ± jitter per request
network-loss        fault proxy: ``loss_percent`` % of requests dropped (or reset, ``--loss-mode``)
network-partition   fault proxy: ``fraction`` of requests blackholed (or refused)
network-bandwidth   fault proxy: token bucket of ``rate_mbps``, burst ``buffer_bytes``,
                    queue ``limit_bytes``
cpu-stress          ``stress-ng --cpu W --cpu-load P`` inside each selected replica's cgroup
                    (so it competes for that replica's quota, as StressChaos does in a pod)
memory-stress       ``stress-ng --vm W --vm-bytes S`` likewise
pod-kill            SIGKILL the selected replicas; each restarts after ``restart_delay_s``
container-kill      the same as pod-kill (one process per replica)
pod-failure         SIGSTOP the selected replicas for the window, then SIGCONT
==================  =========================================================================

Disk I/O latency, clock skew and the simulator-only hardware faults are refused up front by
:func:`check_local`, naming the backend that can run them. ``stress-ng`` always runs with
``--timeout`` = the window, so even a stressor nobody reverts stops by itself.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chaos.backends.local.proxy import FaultProxy
from chaos.backends.local.replicas import Replica, ReplicaManager
from chaos.spec import FaultKind, FaultWindow, Scenario, Selector
from rlctl.errors import ChaosError
from rlctl.harness.journal import Journal
from rlctl.harness.process import Managed, find_stress_ng, spawn

log = logging.getLogger(__name__)

#: Why the local backend cannot run a fault kind, and which backend can.
REFUSED: dict[FaultKind, str] = {
    FaultKind.IO_LATENCY: (
        "the local backend cannot delay disk I/O (that takes Chaos Mesh's IOChaos FUSE layer); "
        "run it with --backend k8s or --backend sim"
    ),
    FaultKind.TIME_SKEW: (
        "the local backend cannot skew one process's clock (that takes Chaos Mesh's TimeChaos); "
        "run it with --backend k8s or --backend sim"
    ),
    FaultKind.FAN_FAILURE: "fan failure is simulator-only (a thermal model); run it with --backend sim",
    FaultKind.NUMA_MISPLACEMENT: "NUMA misplacement is simulator-only; run it with --backend sim",
}

#: Proxy fault slot of each network fault kind.
PROXY_SLOT: dict[FaultKind, str] = {
    FaultKind.NETWORK_DELAY: "delay",
    FaultKind.NETWORK_LOSS: "loss",
    FaultKind.NETWORK_PARTITION: "partition",
    FaultKind.NETWORK_BANDWIDTH: "bandwidth",
}
STRESS_KINDS = frozenset({FaultKind.CPU_STRESS, FaultKind.MEMORY_STRESS})
KILL_KINDS = frozenset({FaultKind.POD_KILL, FaultKind.CONTAINER_KILL})


def check_local(scenario: Scenario, *, stress_ng: str | None = None) -> None:
    """Refuse, before anything starts, a scenario the local backend cannot run."""
    problems = []
    for i, f in enumerate(scenario.all_faults()):
        if f.kind in REFUSED:
            name = f" {f.name!r}" if f.name else ""
            problems.append(f"fault #{i}{name} ({f.kind.value}): {REFUSED[f.kind]}")
    if problems:
        raise ChaosError(f"scenario {scenario.name!r} cannot run on the local backend: " + "; ".join(problems))
    if any(f.kind in STRESS_KINDS for f in scenario.all_faults()):
        find_stress_ng(stress_ng)
    mem = [f for f in scenario.all_faults() if f.kind is FaultKind.MEMORY_STRESS]
    if mem:
        need = max(int(f.param("size_mib")) * int(f.param("workers")) for f in mem)
        avail = _mem_available_mib()
        if avail is not None and need > avail / 2:
            raise ChaosError(
                f"memory-stress wants {need} MiB per replica, over half of this host's available {avail} MiB; "
                "lower size_mib or workers"
            )


def _mem_available_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def select_replicas(selector: Selector, candidates: list[Replica], rng: np.random.Generator) -> list[Replica]:
    """The replicas a selector picks (Chaos Mesh's modes), at random where the mode says so."""
    n = len(candidates)
    if n == 0:
        return []
    mode, value = selector.mode, selector.value
    if mode == "all":
        count = n
    elif mode == "one":
        count = 1
    else:
        try:
            v = float(value) if value is not None else math.nan
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise ChaosError(f"selector mode {mode!r} needs a numeric value, got {value!r}")
        if mode == "fixed":
            count = int(v)
        elif mode == "fixed-percent":
            count = max(1, math.floor(n * v / 100))
        else:  # random-max-percent
            count = int(rng.integers(1, max(1, math.floor(n * v / 100)) + 1))
    idx = rng.choice(n, size=min(count, n), replace=False)
    return [candidates[i] for i in sorted(idx)]


@dataclass
class Injection:
    """What one fault window did on this host (times in seconds from the run start)."""

    fault: str
    kind: str
    planned_start_s: float
    planned_end_s: float
    injected_s: float | None = None
    reverted_s: float | None = None
    targets: list[str] = field(default_factory=list)
    detail: str = ""
    error: str | None = None
    stressors: list[Managed] = field(default_factory=list, repr=False)
    frozen: list[tuple[Replica, int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "kind": self.kind,
            "planned_start_s": self.planned_start_s,
            "planned_end_s": self.planned_end_s,
            "injected_s": self.injected_s,
            "reverted_s": self.reverted_s,
            "targets": list(self.targets),
            "detail": self.detail,
            "error": self.error,
        }


class LocalFaults:
    """Injects and reverts fault windows through the proxy, stress-ng and the replica manager."""

    def __init__(
        self,
        journal: Journal,
        proxy: FaultProxy,
        replicas: ReplicaManager,
        rng: np.random.Generator,
        *,
        stress_ng: str | None = None,
        loss_mode: str = "drop",
        partition_mode: str = "blackhole",
    ) -> None:
        self.journal = journal
        self.proxy = proxy
        self.replicas = replicas
        self.rng = rng
        self.stress_ng = stress_ng
        self.loss_mode = loss_mode
        self.partition_mode = partition_mode
        self._slots: dict[str, list[tuple[Injection, dict[str, Any]]]] = {}

    # ------------------------------------------------------------------ inject

    def inject(self, window: FaultWindow, label: str, now_s: float) -> Injection:
        inj = Injection(label, window.kind.value, window.start_s, window.end_s)
        try:
            if window.kind in PROXY_SLOT:
                self._network(inj, window)
            elif window.kind in STRESS_KINDS:
                self._stress(inj, window)
            elif window.kind in KILL_KINDS:
                self._kill(inj, window)
            elif window.kind is FaultKind.POD_FAILURE:
                self._freeze(inj, window)
            else:
                raise ChaosError(f"{window.kind.value}: {REFUSED.get(window.kind, 'not supported locally')}")
        except ChaosError as exc:
            inj.error = str(exc)
            log.warning("fault %s not injected: %s", label, exc)
        inj.injected_s = now_s
        return inj

    def _network(self, inj: Injection, window: FaultWindow) -> None:
        spec, slot = window.spec, PROXY_SLOT[window.kind]
        if window.kind is FaultKind.NETWORK_DELAY:
            params: dict[str, Any] = {
                "latency_ms": float(spec.param("latency_ms")),
                "jitter_ms": float(spec.param("jitter_ms")),
                "correlation": float(spec.param("correlation")),
            }
        elif window.kind is FaultKind.NETWORK_LOSS:
            params = {
                "percent": float(spec.param("loss_percent")),
                "correlation": float(spec.param("correlation")),
                "mode": self.loss_mode,
            }
        elif window.kind is FaultKind.NETWORK_PARTITION:
            params = {"fraction": float(spec.param("fraction")), "mode": self.partition_mode}
        else:
            params = {
                "rate_bytes_per_s": float(spec.param("rate_mbps")) * 1e6 / 8,
                "burst_bytes": max(1, int(spec.param("buffer_bytes"))),
                "limit_bytes": int(spec.param("limit_bytes")),
            }
        self.proxy.set_fault(slot, params)
        self._slots.setdefault(slot, []).append((inj, params))
        inj.targets = ["proxy (all replicas)"]
        inj.detail = f"proxy {slot} " + ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )

    def _stress(self, inj: Injection, window: FaultWindow) -> None:
        spec = window.spec
        binary = find_stress_ng(self.stress_ng)
        seconds = max(1, math.ceil(window.end_s - window.start_s))
        workers = str(int(spec.param("workers")))
        if window.kind is FaultKind.CPU_STRESS:
            args = ["--cpu", workers, "--cpu-load", str(int(spec.param("load_percent")))]
        else:
            args = ["--vm", workers, "--vm-bytes", f"{int(spec.param('size_mib'))}M"]
        argv = [binary, *args, "--timeout", f"{seconds}s", "--quiet"]
        with_cgroups = self.replicas.base is not None
        places: list[tuple[str, Path | None]] = [("host", None)]
        if with_cgroups:
            places = [(r.name, r.cgroup) for r in select_replicas(spec.selector, self.replicas.ready(), self.rng)]
            if not places:
                raise ChaosError("no ready replica to stress")
        for name, cgroup in places:
            m = spawn(self.journal, "stress-ng", argv, cgroup=cgroup, detail={"replica": name})
            inj.stressors.append(m)
            inj.targets.append(name)
        where = "in the cgroup of " + ", ".join(inj.targets) if with_cgroups else "on the host (no per-replica cgroups)"
        inj.detail = f"{' '.join(argv[1:])} {where}"

    def _kill(self, inj: Injection, window: FaultWindow) -> None:
        delay = float(window.spec.param("restart_delay_s"))
        targets = select_replicas(window.spec.selector, self.replicas.live(), self.rng)
        if not targets:
            raise ChaosError("no live replica to kill")
        for rep in targets:
            self.replicas.kill(rep, restart_after_s=delay)
            inj.targets.append(rep.name)
        inj.detail = f"SIGKILL, restart after {delay:g}s"

    def _freeze(self, inj: Injection, window: FaultWindow) -> None:
        targets = select_replicas(window.spec.selector, self.replicas.ready(), self.rng)
        if not targets:
            raise ChaosError("no ready replica to freeze")
        for rep in targets:
            self.replicas.freeze(rep)
            inj.frozen.append((rep, rep.generation))
            inj.targets.append(rep.name)
        inj.detail = "SIGSTOP for the window, then SIGCONT"

    # ------------------------------------------------------------------ revert

    def revert(self, inj: Injection, now_s: float) -> None:
        """Undo one injection (idempotent); errors are recorded, never raised."""
        if inj.reverted_s is not None:
            return
        inj.reverted_s = now_s
        try:
            kind = FaultKind(inj.kind)
            if kind in PROXY_SLOT:
                self._unset_network(inj, PROXY_SLOT[kind])
            for m in inj.stressors:
                m.stop(grace_s=2.0)
            for rep, generation in inj.frozen:
                if rep.generation == generation and rep.name in self.replicas.replicas:
                    self.replicas.thaw(rep)
        except ChaosError as exc:
            inj.error = (inj.error + "; " if inj.error else "") + f"revert: {exc}"
            log.warning("fault %s: revert failed: %s", inj.fault, exc)

    def _unset_network(self, inj: Injection, slot: str) -> None:
        stack = [(i, p) for i, p in self._slots.get(slot, []) if i is not inj]
        self._slots[slot] = stack
        if stack:
            self.proxy.set_fault(slot, stack[-1][1])  # an overlapping fault of the same kind stays on
        else:
            self.proxy.clear_fault(slot)
