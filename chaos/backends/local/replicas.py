"""The local replica manager: ``gosvc serve`` processes behind the fault proxy.

Each replica is a ``gosvc serve`` on a free loopback port. With a CPU quota, each runs in
its own CPU cgroup, ``rlctl/<run-id>/<replica>`` under the hierarchy :mod:`rlctl.cgroups`
detects (``/sys/fs/cgroup/cpu/...`` with ``cpu.cfs_quota_us`` on cgroup v1,
``/sys/fs/cgroup/...`` with ``cpu.max`` on v2), with a quota of the given cores, so a
replica has a real, fixed capacity (as a pod with a CPU limit has) however many cores the
host has. On v2 ``rlctl`` and the run's node only offer the controller to the replicas'
leaves and never hold processes themselves. A replica
is moved into its cgroup right after it started, so its spin-loop calibration runs
unthrottled; the first replica's calibration fixes the work per request (``--cpu-iters``)
for all the others.

The manager scales (new replicas are registered with the proxy once they listen; removed
ones are taken out of rotation before SIGTERM), and carries out the pod faults:

- pod kill: SIGKILL, out of rotation, a new process (a new port) after ``restart_delay_s``;
- pod failure: SIGSTOP for the window, then SIGCONT (the proxy's health checks take a
  frozen replica out of rotation, as a readiness probe would);
- CPU quota changes (``cpu.cfs_quota_us`` or ``cpu.max``), the original written to the journal first.

Runtime knobs go to every replica's ``/admin/knobs`` (bearer token in the environment);
a replica started later gets the current knobs as flags.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.backends.local.proxy import FaultProxy
from rlctl import cgroups
from rlctl.contract import Knobs
from rlctl.errors import ActuatorError, ChaosError
from rlctl.harness import cgroup as harness_cgroup
from rlctl.harness.admin import AdminClient, to_admin
from rlctl.harness.journal import Entry, Journal, proc_state
from rlctl.harness.process import Managed, read_json_line, spawn

log = logging.getLogger(__name__)

CFS_PERIOD_US = cgroups.PERIOD_US


def detect_cgroups(root: Path | None = None) -> cgroups.Cgroups:
    """The cgroup hierarchy per-replica CPU quotas go into (v1 or v2), or the one clear error."""
    return cgroups.detect(root, purpose="per-replica CPU quotas", alternative="--replica-cpu 0")


@dataclass
class Replica:
    """One replica slot; ``proc`` is its current process (None while it is dead)."""

    name: str
    cgroup: Path | None = None
    proc: Managed | None = None
    url: str = ""
    admin_url: str = ""
    """The admin listener (``/admin/knobs``, ``/debug/pprof/``), from the startup line's ``admin_addr``."""
    state: str = "down"  # ready | stopped | down
    generation: int = 0
    started_s: float = 0.0
    stop_entry: Entry | None = None
    log_path: Path | None = None
    history: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


class ReplicaManager:
    """Starts, scales, kills, freezes and re-quotas ``gosvc serve`` replicas of one run.

    :param quota_cores: CPU quota per replica (a cgroup each, v1 or v2), None for no cgroup.
    :param cgroup_root: where to look for the cgroup hierarchy (default: :func:`rlctl.cgroups.detect`'s).
    :param cpus: the replicas' CPU set (kernel list, e.g. ``"1"``): each replica's cgroup is also a
        cpuset (v1: its twin in the ``cpuset`` hierarchy), and a replica is born in its cgroup (its
        first start runs without quota until gosvc has calibrated its spin loop). None: no CPU set.
    :param cpu_us: CPU work per request (``gosvc serve --cpu-us``).
    :param serve_args: extra ``gosvc serve`` flags (e.g. ``--alloc-bytes``).
    """

    def __init__(
        self,
        gosvc: str,
        journal: Journal,
        proxy: FaultProxy,
        knobs: Knobs,
        *,
        quota_cores: float | None = 0.5,
        cpu_us: int = 200,
        serve_args: tuple[str, ...] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 10.0,
        admin_timeout_s: float = 1.0,
        cgroup_root: Path | None = None,
        cpus: str | None = None,
    ) -> None:
        self.gosvc = gosvc
        self.journal = journal
        self.proxy = proxy
        self.knobs = knobs
        self.quota_cores = quota_cores
        self.cpu_us = cpu_us
        self.cpu_iters: int | None = None
        self.serve_args = serve_args
        self.log_dir = log_dir
        self.start_timeout_s = start_timeout_s
        self.admin_timeout_s = admin_timeout_s
        self.token = secrets.token_hex(16)
        self.replicas: dict[str, Replica] = {}
        self._next = 0
        self.cgroup_root = cgroup_root
        self.cpus = cpus
        self.cgroups: cgroups.Cgroups | None = None
        self.base: Path | None = None
        self.restarts: dict[str, float] = {}  # replica name -> monotonic time it comes back

    # ------------------------------------------------------------------ cgroups

    def setup(self) -> None:
        """Create the run's cgroup (journaled first) when replicas get a CPU quota."""
        if self.quota_cores is None:
            return
        self.cgroups = detect_cgroups(self.cgroup_root)
        parent = self.cgroups.root / "rlctl"
        # Shared by concurrent runs: whichever run ends last and finds it empty removes it.
        self.journal.record("cgroup", path=str(parent), only_if_empty=True)
        if self.cpus is not None and not self.cgroups.cpuset_path("rlctl").exists():
            self.journal.record("cgroup", path=str(self.cgroups.cpuset_path("rlctl")), only_if_empty=True, cpuset=True)
        self.base = parent / self.journal.run_id
        harness_cgroup.create(
            self.cgroups, self.base.relative_to(self.cgroups.root), cpus=self.cpus, journal=self.journal
        )
        log.info("replica cgroups under %s (%s%s)", self.base, self.cgroups,
                 f", CPU {self.cpus}" if self.cpus else "")  # fmt: skip

    def _cgroup_for(self, name: str) -> Path | None:
        if self.base is None or self.cgroups is None or self.quota_cores is None:
            return None
        path = self.base / name
        if not path.exists():  # a restarted replica keeps its slot's (possibly changed) quota
            self.cgroups.create(path.relative_to(self.cgroups.root), quota_cores=self.quota_cores, cpus=self.cpus)
        return path

    def set_quota(self, replica: Replica, cores: float | None) -> None:
        """Change a replica's CPU quota (None: unlimited); the original goes to the journal first."""
        if replica.cgroup is None:
            raise ChaosError(f"replica {replica.name} has no cgroup: start the run with a per-replica CPU quota")
        quota_us, period_us = cgroups.quota(replica.cgroup)
        self.journal.record("quota", path=str(replica.cgroup), quota_us=quota_us, period_us=period_us)
        cgroups.set_quota(replica.cgroup, cores, CFS_PERIOD_US)

    # ------------------------------------------------------------------ lifecycle

    def _serve_argv(self) -> list[str]:
        k = self.knobs
        argv = [
            self.gosvc, "serve", "--addr", "127.0.0.1:0",
            "--gomaxprocs", str(k.gomaxprocs), "--gogc", str(k.gogc), "--gomemlimit", f"{k.gomemlimit_mib}MiB",
            "--pool-size", str(k.object_pool_size), "--conn-pool", str(k.conn_pool_size),
            "--shutdown-timeout", "2s",
        ]  # fmt: skip
        if self.cpu_iters is not None:
            argv += ["--cpu-iters", str(self.cpu_iters)]
        else:
            argv += ["--cpu-us", str(self.cpu_us)]
        return argv + list(self.serve_args)

    def start(self, name: str | None = None) -> Replica:
        """Start a replica (a new slot, or ``name`` again after a kill) and put it in rotation."""
        if name is None:
            name = f"r{self._next}"
            self._next += 1
        rep = self.replicas.setdefault(name, Replica(name))
        rep.cgroup = self._cgroup_for(name)
        rep.generation += 1
        rep.log_path = self.log_dir / f"{name}.{rep.generation}.log" if self.log_dir else None
        stderr = rep.log_path.open("a") if rep.log_path else None
        # With a CPU set the replica is born in its cgroup (never on the harness's CPUs); the first
        # one's quota is lifted while gosvc calibrates its spin loop, which must run unthrottled.
        born_in = rep.cgroup if self.cpus is not None else None
        saved = None
        if born_in is not None and self.cpu_iters is None:
            saved = cgroups.quota(born_in)
            cgroups.write_quota_us(born_in, -1, saved[1])
        try:
            rep.proc = spawn(
                self.journal, "replica", self._serve_argv(), stdout=subprocess.PIPE, cgroup=born_in,
                stderr=stderr if stderr is not None else subprocess.DEVNULL,
                env={"GOSVC_ADMIN_TOKEN": self.token}, detail={"replica": name, "cgroup": str(rep.cgroup or "")},
            )  # fmt: skip
            info = read_json_line(
                rep.proc, timeout_s=self.start_timeout_s, what=f"replica {name}", log_path=rep.log_path
            )
        finally:
            if stderr is not None:
                stderr.close()
            if saved is not None and born_in is not None:
                cgroups.write_quota_us(born_in, *saved)
        if self.cpu_iters is None and info.get("cpu_iters_per_us"):
            self.cpu_iters = max(1, round(float(info["cpu_iters_per_us"]) * self.cpu_us))
        if rep.cgroup is not None and born_in is None:
            # Moved after calibration: cgroup.procs moves every thread of the process.
            cgroups.add(rep.cgroup, rep.proc.pid)
        rep.url = f"http://{info['addr']}"
        rep.admin_url = f"http://{info['admin_addr']}"
        rep.started_s = time.monotonic()
        self.proxy.add_upstream(rep.url)
        rep.state = "ready"
        rep.history.append(f"started pid {rep.proc.pid} on {rep.url}")
        log.info("replica %s ready on %s (pid %d)", name, rep.url, rep.proc.pid)
        return rep

    def stop(self, rep: Replica, grace_s: float = 2.0) -> None:
        """Take ``rep`` out of rotation, then stop its process (resuming it first if frozen)."""
        if rep.url:
            with contextlib.suppress(ChaosError):
                self.proxy.remove_upstream(rep.url)
        if rep.state == "stopped":
            self.thaw(rep)
        if rep.proc is not None:
            rep.proc.stop(grace_s=grace_s)
        rep.proc, rep.state = None, "down"

    def remove(self, rep: Replica) -> None:
        """Scale ``rep`` away for good."""
        self.restarts.pop(rep.name, None)
        self.stop(rep)
        if rep.cgroup is not None:
            # Whatever else runs in the slot's cgroup (a stressor aimed at it) goes with it.
            for pid in cgroups.procs(rep.cgroup):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            cgroups.remove(rep.cgroup)
        self.replicas.pop(rep.name, None)

    def shutdown(self) -> None:
        for rep in list(self.replicas.values()):
            with contextlib.suppress(Exception):
                self.stop(rep, grace_s=1.0)
        self.restarts.clear()
        if self.base is not None:
            cgroups.remove(self.base)

    # ------------------------------------------------------------------ faults

    def kill(self, rep: Replica, restart_after_s: float | None) -> None:
        """SIGKILL (a pod kill); a new process comes back after ``restart_after_s`` seconds."""
        if rep.proc is None:
            return
        pid = rep.proc.pid
        if rep.url:
            with contextlib.suppress(ChaosError):
                self.proxy.remove_upstream(rep.url)
        if rep.stop_entry is not None:
            rep.stop_entry.remove()
            rep.stop_entry = None
        rep.proc.kill()
        rep.proc, rep.state, rep.url, rep.admin_url = None, "down", "", ""
        rep.history.append(f"killed pid {pid}")
        if restart_after_s is not None:
            self.restarts[rep.name] = time.monotonic() + restart_after_s

    def freeze(self, rep: Replica) -> None:
        """SIGSTOP (a pod failure); journaled first so a crash still resumes it."""
        if rep.proc is None or rep.state == "stopped":
            return
        rep.stop_entry = self.journal.record(
            "stopped", pid=rep.proc.pid, start_time=rep.proc.start_time, what=f"replica {rep.name}"
        )
        rep.proc.signal(signal.SIGSTOP)
        deadline = time.monotonic() + 1.0
        while proc_state(rep.proc.pid) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.005)
        rep.state = "stopped"
        rep.history.append(f"froze pid {rep.proc.pid}")

    def thaw(self, rep: Replica) -> None:
        if rep.state != "stopped":
            return
        if rep.proc is not None:
            rep.proc.signal(signal.SIGCONT)
            rep.history.append(f"resumed pid {rep.proc.pid}")
        if rep.stop_entry is not None:
            rep.stop_entry.remove()
            rep.stop_entry = None
        rep.state = "ready" if rep.proc is not None else "down"

    def due_restarts(self) -> list[Replica]:
        """Restart the killed replicas whose restart time has come; returns them."""
        now = time.monotonic()
        out = []
        for name, due in list(self.restarts.items()):
            if due <= now:
                del self.restarts[name]
                if name in self.replicas:
                    out.append(self.start(name))
        return out

    # ------------------------------------------------------------------ views

    def live(self) -> list[Replica]:
        """Replicas with a process (ready or frozen)."""
        return [r for r in self.replicas.values() if r.proc is not None]

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state == "ready" and r.proc is not None]

    def desired(self) -> int:
        """Replicas that exist or are due back (a killed pod still counts: its replacement is coming)."""
        return len(self.replicas)

    # ------------------------------------------------------------------ control

    def scale_to(self, n: int) -> None:
        """Start or remove replicas until there are ``n``; dead and frozen ones are removed first."""
        n = max(0, n)
        while len(self.replicas) < n:
            self.start()
        if len(self.replicas) > n:
            order = {"down": 0, "stopped": 1, "ready": 2}
            victims = sorted(self.replicas.values(), key=lambda r: (order[r.state], -r.started_s))
            for rep in victims[: len(self.replicas) - n]:
                self.remove(rep)

    def apply_knobs(self, knobs: Knobs) -> list[str]:
        """PUT the runtime knobs to every ready replica; returns the replicas that failed."""
        self.knobs = knobs
        body = to_admin(
            {
                "gomaxprocs": knobs.gomaxprocs,
                "gogc": knobs.gogc,
                "gomemlimit_mib": knobs.gomemlimit_mib,
                "object_pool_size": knobs.object_pool_size,
                "conn_pool_size": knobs.conn_pool_size,
            }
        )
        failed = []
        for rep in self.ready():
            try:
                AdminClient(rep.admin_url, token=self.token, timeout_s=self.admin_timeout_s).put(body)
            except ActuatorError as exc:
                log.warning("replica %s: knobs not applied: %s", rep.name, exc)
                failed.append(rep.name)
        return failed

    @staticmethod
    def quota_of(rep: Replica) -> float | None:
        """The replica's CPU quota in cores (None: unlimited or no cgroup)."""
        if rep.cgroup is None:
            return None
        return cgroups.quota_cores(rep.cgroup)

    def total_quota(self) -> float:
        """CPU quota of all live replicas in cores (NaN without quotas)."""
        if self.quota_cores is None:
            return math.nan
        return sum(self.quota_of(r) or 0.0 for r in self.live())
