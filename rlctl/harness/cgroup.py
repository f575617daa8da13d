"""Journaled CPU cgroups: written to the journal before they are created, removed with their entry.

The cgroup operations themselves (v1 or v2, quotas, weights, joining, removal) are
:mod:`rlctl.cgroups`; this module only makes sure a command killed with SIGKILL leaves a
journal entry that ``rlctl chaos cleanup --backend local`` turns back into an ``rmdir``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlctl import cgroups
from rlctl.errors import RlctlError
from rlctl.harness.journal import Entry, Journal, session

log = logging.getLogger(__name__)


@dataclass
class Cgroup:
    """One cgroup the harness created, with its journal entry."""

    path: Path
    entry: Entry
    twin: Entry | None = None
    """cgroup v1 with a CPU set: the journal entry of the group's twin in the ``cpuset`` hierarchy."""

    def add(self, pid: int) -> None:
        """Move ``pid`` with all its threads into the group (children it forks later follow)."""
        cgroups.add(self.path, pid)

    def remove(self, *, attempts: int = 100) -> None:
        """Remove the group (tasks left are moved to the root first) and forget the entry.

        A failure is logged with the fix and the entry kept, so ``rlctl chaos cleanup`` can
        retry (the caller is usually unwinding already).
        """
        try:
            cgroups.remove(self.path, attempts=attempts)
            if self.twin is not None:
                cgroups.remove(Path(self.twin.data["path"]), attempts=attempts)
        except RlctlError as exc:
            log.error(
                "%s; remove it with `rlctl chaos cleanup --backend local --run-id %s`", exc, self.entry.journal.run_id
            )
            return
        self.entry.remove()
        if self.twin is not None:
            self.twin.remove()


def create(
    hierarchy: cgroups.Cgroups,
    name: str | Path,
    *,
    quota_cores: float | None = None,
    period_us: int = cgroups.PERIOD_US,
    shares: int = 0,
    cpus: str | None = None,
    journal: Journal | None = None,
    command: str = "rlctl",
) -> Cgroup:
    """Journal, then create ``hierarchy.root / name`` with the limits given (:meth:`rlctl.cgroups.Cgroups.create`).

    With ``cpus`` on cgroup v1 the group's twin in the ``cpuset`` hierarchy is journaled too,
    as a ``cgroup`` entry of its own, so a cleanup removes it even when the ``cpu`` group is gone.
    """
    journal = journal or session(command)
    path = hierarchy.root / name
    entry = journal.record("cgroup", path=str(path))
    twin = _journal_twin(hierarchy, name, journal) if cpus is not None else None
    try:
        hierarchy.create(name, quota_cores=quota_cores, period_us=period_us, shares=shares, cpus=cpus)
    except BaseException:
        with contextlib.suppress(RlctlError, OSError):
            cgroups.remove(path)
            entry.remove()
            if twin is not None:
                cgroups.remove(Path(twin.data["path"]))
                twin.remove()
        raise
    return Cgroup(path, entry, twin)


def _journal_twin(hierarchy: cgroups.Cgroups, name: str | Path, journal: Journal) -> Entry | None:
    """v1: journal the ``cpuset`` twin of ``name`` (v2 keeps the cpuset in the group itself)."""
    if hierarchy.version == 2:
        return None
    return journal.record("cgroup", path=str(hierarchy.cpuset_path(name)), cpuset=True)


def create_cpuset(
    hierarchy: cgroups.Cgroups, name: str | Path, cpus: str, *, journal: Journal | None = None, command: str = "rlctl"
) -> Cgroup:
    """Journal, then create a group that only pins its tasks to ``cpus`` (:meth:`.Cgroups.create_cpuset`)."""
    journal = journal or session(command)
    path = hierarchy.cpuset_path(name)
    entry = journal.record("cgroup", path=str(path), cpuset=True)
    try:
        hierarchy.create_cpuset(name, cpus)
    except BaseException:
        with contextlib.suppress(RlctlError, OSError):
            cgroups.remove(path)
            entry.remove()
        raise
    return Cgroup(path, entry)


@contextlib.contextmanager
def scoped(
    hierarchy: cgroups.Cgroups,
    name: str | Path,
    *,
    quota_cores: float | None = None,
    shares: int = 0,
    command: str = "rlctl",
) -> Iterator[Cgroup]:
    """:func:`create` for the block; the group is always removed afterwards."""
    group = create(hierarchy, name, quota_cores=quota_cores, shares=shares, command=command)
    try:
        yield group
    finally:
        group.remove()
