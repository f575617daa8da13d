"""The harness's own CPUs: this process and its children kept off the replicas' CPU set.

A replica's latency at a fixed load per replica must not depend on how many replicas run.
On a small host it does when the load generator, the fault proxy, Redis, Ray and the
controller run on the cores the replicas run on: their work grows with the total load, so
every added replica slows all of them (the 2026-11-28 suite: P99 4.7 ms with 2 replicas,
11.0 ms with 5, at the same load per replica). With a :class:`~rlctl.cgroups.CpuSplit` the
replicas are pinned to its replica CPUs (their cgroups, see
:class:`chaos.backends.local.replicas.ReplicaManager`) and :class:`HarnessIsolation` pins the
harness to the others:

- ``cgroup`` mode: this process and every process below it move into a journaled cpuset
  group ``rlctl/harness-<run>`` (cgroup v1: in the ``cpuset`` hierarchy only, with
  ``cpuset.cpus`` and ``cpuset.mems`` set before the first task joins; v2: ``cpuset.cpus``
  with ``+cpuset`` offered by every parent); whatever they start later is born in it;
- ``affinity`` mode, where no writable cpuset controller exists (an unprivileged user
  without a delegated v2 subtree): ``os.sched_setaffinity`` on every thread of this process
  and of its descendants. It confines only what rlctl starts from here on, and a child can
  widen its own mask again; the cgroup mode cannot be escaped.

Both are undone on exit (this process goes back to its cgroup or mask; a cleanup after a
SIGKILL removes the group from the journal). Entering while another isolation of this process
is active is a no-op, so a suite can isolate once around all of its runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlctl import cgroups
from rlctl.errors import ConfigError, RlctlError
from rlctl.harness import cgroup as harness_cgroup
from rlctl.harness.journal import Entry, Journal, session

log = logging.getLogger(__name__)

CGROUP, AFFINITY = "cgroup", "affinity"
_active: list[HarnessIsolation] = []


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def _cpuset_of(pid: int, hierarchy: cgroups.Cgroups) -> Path | None:
    """The cpuset group ``pid`` is in now (v1: the cpuset hierarchy's line of /proc/PID/cgroup; v2: its one line)."""
    base = hierarchy.cpuset_root if hierarchy.version == 1 else hierarchy.root
    if base is None:
        return None
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctl, rel = line.split(":", 2)
        if (hierarchy.version == 1 and "cpuset" in ctl.split(",")) or (hierarchy.version == 2 and ctl == ""):
            return base / rel.lstrip("/")
    return None


@dataclass
class HarnessIsolation:
    """Pins this process and its descendants to ``split.harness`` for the block; see the module docstring.

    :param split: the CPU split (its harness CPUs are used here).
    :param journal: where the cpuset group is journaled (default: the command's session journal).
    :param cgroup_root: where to look for cgroups (default: :func:`rlctl.cgroups.detect`'s).
    :param allow_affinity: fall back to ``sched_setaffinity`` when no cpuset controller is writable
        (else that is a :class:`ConfigError`).
    """

    split: cgroups.CpuSplit
    journal: Journal | None = None
    command: str = "rlctl"
    cgroup_root: Path | None = None
    allow_affinity: bool = True
    mode: str = ""
    """``cgroup`` or ``affinity`` once entered; empty when nested in another isolation (a no-op)."""
    group: Path | None = None
    detail: str = ""
    _cgroup: harness_cgroup.Cgroup | None = field(default=None, repr=False)
    _home: Path | None = field(default=None, repr=False)
    _shared: Entry | None = field(default=None, repr=False)
    _masks: dict[int, set[int]] = field(default_factory=dict, repr=False)

    def __enter__(self) -> HarnessIsolation:
        if _active:
            self.mode, self.group, self.detail = _active[-1].mode, _active[-1].group, _active[-1].detail
            _active.append(self)
            return self
        try:
            hierarchy = cgroups.detect(self.cgroup_root, purpose="the harness's CPU set", controllers=("cpu", "cpuset"))
            self._enter_cgroup(hierarchy)
        except ConfigError as exc:
            if not self.allow_affinity:
                raise
            self._enter_affinity(str(exc))
        _active.append(self)
        log.info("harness isolation: %s", self.detail)
        return self

    def _enter_cgroup(self, hierarchy: cgroups.Cgroups) -> None:
        journal = self.journal or session(self.command)
        name = Path("rlctl") / f"harness-{journal.run_id}"
        home = _cpuset_of(os.getpid(), hierarchy)
        shared = hierarchy.cpuset_path("rlctl")
        if not shared.exists():  # shared by concurrent runs: whichever ends last and finds it empty removes it
            self._shared = journal.record("cgroup", path=str(shared), only_if_empty=True, cpuset=True)
        self._cgroup = harness_cgroup.create_cpuset(hierarchy, name, self.split.harness_list, journal=journal)
        self.group = self._cgroup.path
        self._home = home
        moved = 0
        for pid in [os.getpid(), *descendants(os.getpid())]:
            with contextlib.suppress(OSError):  # one that exited meanwhile
                cgroups.add(self.group, pid)
                moved += 1
        self.mode = CGROUP
        self.detail = f"cgroup cpuset {self.group} (cgroup v{hierarchy.version}), CPU {self.split.harness_list}"
        log.debug("moved %d processes into %s", moved, self.group)

    def _enter_affinity(self, why: str) -> None:
        cpus = set(self.split.harness)
        for pid in [os.getpid(), *descendants(os.getpid())]:
            for tid in _threads(pid):
                with contextlib.suppress(OSError):
                    before = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, cpus)
                    if pid == os.getpid():
                        self._masks[tid] = before
        self.mode = AFFINITY
        self.detail = f"sched_setaffinity of this process and its children, CPU {self.split.harness_list} ({why})"
        log.warning("no writable cpuset cgroup: harness pinned by sched_setaffinity only (%s)", why)

    def __exit__(self, *exc: object) -> None:
        if self in _active:
            _active.remove(self)
        if _active or not self.mode:
            return
        if self._cgroup is not None:
            if self._home is not None and self._home.is_dir():
                with contextlib.suppress(OSError):
                    cgroups.add(self._home, os.getpid())
            self._cgroup.remove()
            self._cgroup = None
        if self._shared is not None:
            shared = Path(self._shared.data["path"])
            with contextlib.suppress(OSError, RlctlError):
                if not cgroups.has_subgroups(shared):
                    cgroups.remove(shared)
                self._shared.remove()  # else a later run's cleanup removes it
            self._shared = None
        for tid, mask in self._masks.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)
        self._masks.clear()

    def to_dict(self) -> dict[str, Any]:
        return {**self.split.to_dict(), "harness_isolation": self.mode, "detail": self.detail}


def active() -> HarnessIsolation | None:
    """The isolation this process is in, if any."""
    return _active[-1] if _active else None
