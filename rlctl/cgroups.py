"""CPU cgroups on cgroup v1 and v2: the one place rlctl creates, limits, fills and removes them.

Live measurements need a replica (or the test-bed) to have a *fixed* CPU capacity, as a pod
with a CPU limit has, however many cores the host has; a CFS quota in a cgroup gives it.
Hosts differ in how cgroups are mounted, so every caller (the local chaos backend and its
replica manager, ``validate-real``, ``calibrate --serve``, the boundary validation and its
one-core quota experiment) goes through this module, which detects the hierarchy once at
start with :func:`detect`:

- **cgroup v1** (also "hybrid" hosts, where a v1 ``cpu`` controller is mounted next to an
  empty ``cgroup2`` one): groups live under the ``cpu`` controller's mount,
  ``/sys/fs/cgroup/cpu/<name>``; quota in ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
  (-1: unlimited), weight in ``cpu.shares``; a cpuset lives in the separate ``cpuset``
  hierarchy, a twin directory with ``cpuset.cpus`` *and* ``cpuset.mems`` set before any
  task joins.
- **cgroup v2** (unified hierarchy: ``cgroup.controllers`` at the root): one directory per
  group; quota in ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``), weight in
  ``cpu.weight``, cpuset in ``cpuset.cpus``. A controller only appears in a group when its
  parent lists it in ``cgroup.subtree_control``, and a non-root group that enables
  controllers for its children may hold no processes ("no internal processes"). So every
  node between the root and a group gets ``+cpu`` (``+cpuset`` for cpusets) and stays
  empty; processes only ever go into leaves, e.g. ``/sys/fs/cgroup/rlctl/<run>/<replica>``.

The root is ``/sys/fs/cgroup`` unless a caller passes another (tests: a private
``cgroup2`` mount or a directory fixture) or ``$RLCTL_CGROUP_ROOT`` names one (a cgroup v2
subtree delegated to a non-root user, or a v1 ``cpu`` mount). Where no hierarchy with a
writable CPU controller is found, :func:`detect` raises one :class:`~rlctl.errors.ConfigError`
naming what was tried and what is needed.

Functions that take a group's path (:func:`set_quota`, :func:`quota`, :func:`add`,
:func:`throttling`, :func:`remove`, ...) tell the version from the directory itself (only
v2 groups have ``cgroup.controllers``), so ``rlctl chaos cleanup`` can revert a journaled
group in a later process without detecting anything. Imports only the standard library and
:mod:`rlctl.errors`, so chaos, envs and the boundary code can all use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rlctl.errors import ChaosError, ConfigError

logger = logging.getLogger(__name__)

#: Where cgroup hierarchies are mounted on every mainstream distribution.
DEFAULT_ROOT = Path("/sys/fs/cgroup")
#: Environment variable naming another root (a delegated v2 subtree, a v1 ``cpu`` mount).
ROOT_ENV = "RLCTL_CGROUP_ROOT"
#: The cgroup v1 CPU controller's usual mount (kept for callers and tests that name it).
V1_CPU_ROOT = DEFAULT_ROOT / "cpu"
#: CFS period used for every quota rlctl sets (the kernel's default, 100 ms).
PERIOD_US = 100_000
#: Smallest quota the kernel accepts (1 ms per period).
MIN_QUOTA_US = 1000
#: cgroup v1 ``cpu.shares`` that a cgroup v2 ``cpu.weight`` of 100 (the default) equals.
_DEFAULT_SHARES = 1024


def read_int(path: Path) -> int:
    """An integer control file (``cpu.cfs_quota_us``, ``cpu.shares``, ...)."""
    return int(path.read_text().strip())


def write_int(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")


def is_v2(group: Path) -> bool:
    """True for a cgroup v2 directory: only v2 groups carry ``cgroup.controllers``."""
    return (group / "cgroup.controllers").exists()


@dataclass(frozen=True)
class Throttling:
    """CFS bandwidth counters of a group, in the same units on v1 and v2."""

    periods: int
    """Enforcement periods that elapsed with runnable tasks (``nr_periods``)."""
    throttled_periods: int
    """Of those, periods in which the group ran out of quota (``nr_throttled``)."""
    throttled_s: float
    """Total time throttled, in seconds (v1 ``throttled_time`` ns, v2 ``throttled_usec`` µs)."""


@dataclass(frozen=True)
class Cgroups:
    """A detected, writable hierarchy; create groups with :meth:`create`.

    :param version: 1 or 2.
    :param root: v1: the ``cpu`` controller's mount; v2: the unified mount or a delegated subtree.
    :param cpuset_root: v1 only: the ``cpuset`` controller's mount, when there is one.
    :param controllers: v2 only: controllers enabled on every node above a group.
    """

    version: int
    root: Path
    cpuset_root: Path | None = None
    controllers: tuple[str, ...] = ("cpu",)

    def __str__(self) -> str:
        return f"cgroup v{self.version} at {self.root}"

    def create(
        self,
        name: str | Path,
        *,
        quota_cores: float | None = None,
        period_us: int = PERIOD_US,
        shares: int = 0,
        cpus: str | None = None,
    ) -> Path:
        """Create the group ``root/name`` (an existing one is reused) and apply the limits given.

        ``name`` may have several components (``rlctl/<run>/<replica>``); on v2 every node
        above the new group is made an inner node (controllers enabled for its children),
        which is why processes must only go into the groups this returns, never their parents.
        """
        path = self.root / name
        if path.resolve() == self.root.resolve() or self.root.resolve() not in path.resolve().parents:
            raise ConfigError(f"cgroup name {str(name)!r} must name a group below {self.root}")
        if self.version == 2:
            wanted = (*self.controllers, "cpuset") if cpus is not None else self.controllers
            node = self.root
            for part in Path(name).parts:
                self._enable_controllers(node, wanted)
                node = node / part
                node.mkdir(exist_ok=True)
        else:
            path.mkdir(parents=True, exist_ok=True)
        if quota_cores is not None:
            set_quota(path, quota_cores, period_us)
        if shares:
            set_shares(path, shares)
        if cpus is not None:
            set_cpus(path, cpus)
        return path

    def cpuset_path(self, name: str | Path) -> Path:
        """Where the cpuset of group ``name`` lives: ``root/name`` on v2, the ``cpuset`` mount's twin on v1."""
        if self.version == 2:
            return self.root / name
        if self.cpuset_root is None:
            raise ConfigError(
                f"CPU sets need the cgroup v1 cpuset controller, and none is mounted next to {self.root} "
                f"(no {self.root.parent / 'cpuset' / 'cpuset.cpus'}): mount it "
                f"(`mount -t cgroup -o cpuset cpuset {self.root.parent / 'cpuset'}`), or run without CPU sets "
                "(--replica-cpus off)"
            )
        return self.cpuset_root / name

    def create_cpuset(self, name: str | Path, cpus: str) -> Path:
        """A group that only confines its tasks to ``cpus`` (no CPU quota, no weight); returns its path.

        v1: a directory of the ``cpuset`` hierarchy alone, ``cpuset.cpus`` and ``cpuset.mems``
        set on it and on every new ancestor before any task can join (the harness's set: a
        ``cpu`` group would make the harness one CFS entity against every other task of the
        host). v2: ``root/name`` with ``+cpuset`` offered on every node above it.
        """
        path = self.cpuset_path(name)
        if self.version == 2:
            node = self.root
            for part in Path(name).parts:
                self._enable_controllers(node, ("cpuset",))
                node = node / part
                node.mkdir(exist_ok=True)
            (path / "cpuset.cpus").write_text(f"{cpus}\n")
            return path
        assert self.cpuset_root is not None
        _make_v1_cpusets(self.cpuset_root, path)
        (path / "cpuset.cpus").write_text(f"{cpus}\n")
        return path

    @staticmethod
    def _enable_controllers(node: Path, controllers: tuple[str, ...]) -> None:
        """v2: make ``node`` offer ``controllers`` to its children (idempotent)."""
        control = node / "cgroup.subtree_control"
        missing = [c for c in dict.fromkeys(controllers) if c not in control.read_text().split()]
        if not missing:
            return
        try:
            control.write_text(" ".join(f"+{c}" for c in missing))
        except OSError as exc:
            raise ConfigError(
                f"cannot enable {' '.join(missing)} in {control} ({exc.strerror}): on cgroup v2 a group that "
                f"holds processes cannot offer controllers to children; point ${ROOT_ENV} at an empty, "
                f"delegated cgroup (or run as root)"
            ) from None


def detect(
    root: str | Path | None = None,
    *,
    purpose: str = "CPU quotas",
    alternative: str = "",
    controllers: tuple[str, ...] = ("cpu",),
) -> Cgroups:
    """The writable cgroup hierarchy under ``root`` (default ``$RLCTL_CGROUP_ROOT``, else /sys/fs/cgroup).

    A v1 ``cpu`` controller wins when one is mounted (at ``root/cpu`` or at ``root`` itself):
    on hybrid hosts the CPU controller is bound to v1 and the v2 mount cannot offer it.
    Otherwise ``root`` (then ``root/unified``) is used as cgroup v2 when it lists every
    controller of ``controllers`` in ``cgroup.controllers``.

    :param purpose: what the caller needs cgroups for, for the error message.
    :param alternative: how to do without them (e.g. ``--replica-cpu 0``), for the error message.
    :raises ConfigError: no hierarchy with a writable CPU controller was found; the one
        message lists every path tried and what is needed.
    """
    base = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    source = "given root" if root else f"${ROOT_ENV}" if os.environ.get(ROOT_ENV) else "default root"
    tried: list[str] = []
    for cpu in (base / "cpu", base):
        if (cpu / "cpu.cfs_quota_us").exists() and not is_v2(cpu):
            if _writable(cpu):
                cpuset = cpu.parent / "cpuset"
                found = Cgroups(1, cpu, cpuset if (cpuset / "cpuset.cpus").exists() else None)
                logger.debug("cgroups: %s", found)
                return found
            tried.append(f"{cpu} is the cgroup v1 cpu controller but not writable")
            break
    else:
        tried.append(f"no cgroup v1 cpu controller at {base / 'cpu'}")
    for unified in (base, base / "unified"):
        if not is_v2(unified):
            continue
        offered = (unified / "cgroup.controllers").read_text().split()
        lacking = [c for c in controllers if c not in offered]
        if lacking:
            tried.append(
                f"{unified} is cgroup v2 but offers {' '.join(offered) or 'no controllers'} (no {' '.join(lacking)})"
            )
        elif not _writable(unified):
            tried.append(f"{unified} is cgroup v2 but not writable")
        else:
            found = Cgroups(2, unified, None, controllers)
            logger.debug("cgroups: %s", found)
            return found
    if not any("cgroup v2" in t for t in tried):
        tried.append(f"no cgroup v2 hierarchy at {base} ({base / 'cgroup.controllers'} missing)")
    instead = f", or do without: {alternative}" if alternative else ""
    raise ConfigError(
        f"{purpose} need a writable cgroup CPU controller, and none was found under {base} ({source}): "
        f"{'; '.join(tried)}. "
        f"Run as root, or set ${ROOT_ENV} to a cgroup v2 subtree delegated to you with the "
        f"{'+'.join(controllers)} controller{'s' if len(controllers) > 1 else ''} available{instead}"
    )


def _writable(path: Path) -> bool:
    """Can this process create groups in ``path``? (False on a read-only mount, too.)"""
    return os.access(path, os.W_OK | os.X_OK) and os.access(path / "cgroup.procs", os.W_OK)


# ----------------------------------------------------------------------- limits


def quota_us_for(cores: float | None, period_us: int = PERIOD_US) -> int:
    """The quota of ``cores`` per period in µs (-1: unlimited), never below the kernel's minimum."""
    return -1 if cores is None else max(MIN_QUOTA_US, round(cores * period_us))


def set_quota(group: Path, cores: float | None, period_us: int = PERIOD_US) -> None:
    """Limit ``group`` to ``cores`` CPUs (None: unlimited)."""
    write_quota_us(group, quota_us_for(cores, period_us), period_us)


def write_quota_us(group: Path, quota_us: int, period_us: int) -> None:
    """Write a raw quota (-1: unlimited) and period, as :func:`quota` returns them."""
    if is_v2(group):
        (group / "cpu.max").write_text(f"{'max' if quota_us < 0 else quota_us} {period_us}\n")
    else:
        # The period first (only when it changes), so the quota is read against the new one.
        if read_int(group / "cpu.cfs_period_us") != period_us:
            write_int(group / "cpu.cfs_period_us", period_us)
        write_int(group / "cpu.cfs_quota_us", quota_us)


def quota(group: Path) -> tuple[int, int]:
    """``(quota_us, period_us)`` of ``group``; quota -1 when unlimited."""
    if is_v2(group):
        q, p = (group / "cpu.max").read_text().split()
        return (-1 if q == "max" else int(q)), int(p)
    return read_int(group / "cpu.cfs_quota_us"), read_int(group / "cpu.cfs_period_us")


def quota_cores(group: Path) -> float | None:
    """The quota of ``group`` in cores (None: unlimited)."""
    q, p = quota(group)
    return None if q < 0 else q / p


def quota_file(group: Path) -> Path:
    """The file that holds the quota (for messages: ``cpu.max`` or ``cpu.cfs_quota_us``)."""
    return group / ("cpu.max" if is_v2(group) else "cpu.cfs_quota_us")


def set_shares(group: Path, shares: int) -> None:
    """A relative CPU weight in cgroup v1 ``cpu.shares`` units (1024 = default).

    On v2, ``cpu.weight`` gets the same ratio to its default (100), clamped to 1..10000, so
    a group keeps the advantage over default neighbours that the shares asked for.
    """
    if is_v2(group):
        write_int(group / "cpu.weight", min(10_000, max(1, round(shares * 100 / _DEFAULT_SHARES))))
    else:
        write_int(group / "cpu.shares", shares)


def set_cpus(group: Path, cpus: str) -> None:
    """Pin ``group`` to the CPU list ``cpus`` (kernel list format, e.g. ``"0-1,3"``).

    v2: ``cpuset.cpus`` of the group (its parent must offer ``cpuset``: create the group
    from a :class:`Cgroups` whose controllers include it). v1: the twin directory in the
    ``cpuset`` hierarchy, with ``cpuset.mems`` copied from its parent, because v1 refuses
    tasks in a cpuset whose cpus or mems are empty (every new ancestor gets its parent's).
    """
    if is_v2(group):
        (group / "cpuset.cpus").write_text(f"{cpus}\n")
        return
    where = _cpuset_twin(group)
    if where is None:
        raise ConfigError(
            f"no cgroup v1 cpuset controller next to {_mount_root(group)}; cannot pin {group} to CPUs {cpus}"
        )
    root, twin = where
    _make_v1_cpusets(root, twin)
    (twin / "cpuset.cpus").write_text(f"{cpus}\n")


def _make_v1_cpusets(root: Path, leaf: Path) -> None:
    """v1: create ``leaf`` and its missing ancestors under the cpuset mount ``root``, each populated.

    A v1 cpuset starts with empty ``cpuset.cpus`` and ``cpuset.mems``, and the kernel refuses
    tasks (``ENOSPC``) until both are set; every new directory gets its parent's.
    """
    node = root
    for part in leaf.relative_to(root).parts:
        parent, node = node, node / part
        if not node.is_dir():
            node.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                (node / name).write_text(parent.joinpath(name).read_text())


def cpus(group: Path) -> str:
    """The CPU list ``group`` may run on ("" when not pinned, or inherited on v2)."""
    own = is_v2(group) or (group / "cpuset.cpus").exists()  # v2, or a group of the v1 cpuset hierarchy itself
    where = (group, group) if own else _cpuset_twin(group)
    if where is None or not (where[1] / "cpuset.cpus").exists():
        return ""
    return (where[1] / "cpuset.cpus").read_text().strip()


# ----------------------------------------------------------------------- processes


def procs_files(group: Path) -> list[Path]:
    """Every ``cgroup.procs`` a process must be written to in order to join ``group``.

    One on v2; on v1 also the cpuset twin's, when :func:`set_cpus` created one.
    """
    files = [group / "cgroup.procs"]
    where = None if is_v2(group) else _cpuset_twin(group)
    if where is not None and where[1].is_dir():
        files.append(where[1] / "cgroup.procs")
    return files


def add(group: Path, pid: int) -> None:
    """Move ``pid`` with all its threads into ``group`` (children it forks later follow)."""
    for procs in procs_files(group):
        procs.write_text(str(pid))


def procs(group: Path) -> list[int]:
    """The processes in ``group`` itself (not in groups below it)."""
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:  # gone meanwhile (or never a group)
        return []


def throttling(group: Path) -> Throttling | None:
    """CFS throttling counters of ``group``; None when it has no CPU controller (v2 without ``+cpu``)."""
    stat: dict[str, int] = {}
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            stat[key] = int(value)
    if "nr_throttled" not in stat:
        return None
    if is_v2(group):
        throttled_s = stat.get("throttled_usec", 0) / 1e6
    else:
        throttled_s = stat.get("throttled_time", 0) / 1e9
    return Throttling(stat.get("nr_periods", 0), stat["nr_throttled"], throttled_s)


# ----------------------------------------------------------------------- removal


def remove(group: Path, *, attempts: int = 50) -> bool:
    """Remove ``group`` and every group below it, deepest first; False when it did not exist.

    A group still holding tasks (one exiting, or a straggler) has them moved to the
    hierarchy's root group first: rmdir fails on a populated group on v1, and on v2 only
    an empty leaf can go. A v1 cpuset twin is removed as well.

    :raises ChaosError: a group still holds tasks after ``attempts`` tries.
    """
    dirs = [group]
    where = None if not group.is_dir() or is_v2(group) else _cpuset_twin(group)
    if where is not None:
        dirs.append(where[1])
    found = False
    for top in dirs:
        if not top.is_dir():
            continue
        found = True
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _evacuate_and_rmdir(sub, attempts)
        _evacuate_and_rmdir(top, attempts)
    return found


def has_subgroups(group: Path) -> bool:
    """Does ``group`` (or, on v1, its ``cpuset`` twin) have groups below it?"""
    where = None if is_v2(group) else _cpuset_twin(group)
    return any(
        top.is_dir() and any(p.is_dir() for p in top.iterdir()) for top in (group, *([where[1]] if where else []))
    )


def _evacuate_and_rmdir(path: Path, attempts: int) -> None:
    root_procs = _mount_root(path) / "cgroup.procs"
    for _ in range(attempts):
        try:
            path.rmdir()
            logger.debug("removed cgroup %s", path)
            return
        except FileNotFoundError:
            return
        except OSError:
            # Still busy: a task is left (or exiting); move it out and try again.
            for pid in procs(path):
                with contextlib.suppress(OSError):
                    root_procs.write_text(str(pid))
            time.sleep(0.05)
    raise ChaosError(f"cannot remove cgroup {path}: it still holds tasks; check `cat {path}/cgroup.procs`")


def _mount_root(path: Path) -> Path:
    """The root group of the hierarchy ``path`` is in: its topmost ancestor with ``cgroup.procs``."""
    root = path
    for parent in path.parents:
        if not (parent / "cgroup.procs").exists():
            break
        root = parent
    return root


def _cpuset_twin(group: Path) -> tuple[Path, Path] | None:
    """v1: ``(cpuset root, twin)``: where ``group`` (a ``cpu`` group) goes in the ``cpuset`` hierarchy.

    The twin has the same relative path under the ``cpuset`` mount next to the ``cpu`` one;
    None when no cpuset hierarchy is mounted there.
    """
    root = _mount_root(group)
    cpuset = root.parent / "cpuset"
    if root.name == "cpuset" or not (cpuset / "cpuset.cpus").exists():
        return None
    return cpuset, cpuset / group.relative_to(root)


# ----------------------------------------------------------------------- the replica / harness split


def parse_cpu_list(text: str, *, source: str = "CPU list") -> tuple[int, ...]:
    """The CPUs of a kernel list (``"0-1,3"``), sorted, each once.

    :raises ConfigError: not a list of CPU numbers and ranges; the message names ``source``.
    """
    found: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError(part)
            found.update(range(first, last + 1))
    except ValueError:
        raise ConfigError(
            f"{source} {text!r} is not a CPU list: use CPU numbers and ranges as the kernel writes them, "
            "e.g. 1 or 2-3,5"
        ) from None
    return tuple(sorted(found))


def format_cpu_list(cpus: tuple[int, ...] | list[int]) -> str:
    """The kernel's list format of ``cpus`` (``(0, 1, 3)`` -> ``"0-1,3"``)."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def online_cpus() -> tuple[int, ...]:
    """The host's online CPUs (``/sys/devices/system/cpu/online``; else ``0..cpu_count-1``)."""
    try:
        return parse_cpu_list(Path("/sys/devices/system/cpu/online").read_text().strip())
    except (OSError, ConfigError):
        return tuple(range(os.cpu_count() or 1))


#: ``--replica-cpus`` / ``--harness-cpus`` values that mean "the default split" and "no split".
AUTO, OFF = "auto", "off"


@dataclass(frozen=True)
class CpuSplit:
    """Which CPUs the replicas get and which the harness (load generator, proxy, Redis, Ray, controller).

    Build with :meth:`resolve`. The two sets are disjoint, so the replicas' latency at a given
    load per replica does not depend on how much work the harness does for the other replicas.
    """

    replica: tuple[int, ...]
    harness: tuple[int, ...]
    source: str
    """Where the split came from, for messages (``--replica-cpus 1 --harness-cpus 0`` or the default's rule)."""

    @property
    def replica_list(self) -> str:
        return format_cpu_list(self.replica)

    @property
    def harness_list(self) -> str:
        return format_cpu_list(self.harness)

    def __str__(self) -> str:
        return f"replicas on CPU {self.replica_list}, harness on CPU {self.harness_list}"

    def to_dict(self) -> dict[str, str]:
        return {"replica_cpus": self.replica_list, "harness_cpus": self.harness_list, "source": self.source}

    @classmethod
    def default(cls, online: tuple[int, ...] | None = None) -> CpuSplit | None:
        """The first quarter of the online CPUs (at least one) for the harness, the rest for the replicas.

        On a 2-vCPU host: CPU 0 for the harness, CPU 1 for the replicas. None on a one-CPU host.
        """
        cpus = online if online is not None else online_cpus()
        if len(cpus) < 2:
            return None
        k = max(1, len(cpus) // 4)
        return cls(cpus[k:], cpus[:k], f"the default split of {len(cpus)} online CPUs (harness: the first quarter)")

    @classmethod
    def resolve(
        cls, replica_cpus: str = AUTO, harness_cpus: str = AUTO, *, online: tuple[int, ...] | None = None
    ) -> CpuSplit | None:
        """The split the options ask for; None for ``--replica-cpus off`` (the old, shared layout).

        ``auto`` for one side: the other online CPUs (both ``auto``: :meth:`default`).

        :raises ConfigError: a list that is malformed, names an offline CPU, is empty, or
            overlaps the other; or ``auto`` on a one-CPU host.
        """
        cpus = online if online is not None else online_cpus()
        r, h = replica_cpus.strip().lower(), harness_cpus.strip().lower()
        if r == OFF:
            return None
        if h == OFF:
            raise ConfigError(
                "--harness-cpus off with --replica-cpus on: the harness must have its own CPUs; pass --harness-cpus "
                "LIST, or --replica-cpus off for the shared layout"
            )
        source = f"--replica-cpus {replica_cpus} --harness-cpus {harness_cpus}"
        if r == AUTO and h == AUTO:
            split = cls.default(cpus)
            if split is None:
                raise ConfigError(
                    f"this host has one online CPU ({format_cpu_list(cpus)}): replicas and harness cannot have "
                    "their own; pass --replica-cpus off"
                )
            return split
        rep = parse_cpu_list(r, source="--replica-cpus") if r != AUTO else None
        har = parse_cpu_list(h, source="--harness-cpus") if h != AUTO else None
        for name, given in (("--replica-cpus", rep), ("--harness-cpus", har)):
            missing = sorted(set(given or ()) - set(cpus))
            if missing:
                raise ConfigError(
                    f"{name} {format_cpu_list(given or ())}: CPU {format_cpu_list(missing)} is not online "
                    f"(online: {format_cpu_list(cpus)}); pick CPUs from that list"
                )
        if rep is None:
            rep = tuple(c for c in cpus if c not in set(har or ()))
        if har is None:
            har = tuple(c for c in cpus if c not in set(rep))
        if not rep or not har:
            side = "--replica-cpus" if not rep else "--harness-cpus"
            raise ConfigError(f"{source} leaves {side} no CPU (online: {format_cpu_list(cpus)}); give each side one")
        both = sorted(set(rep) & set(har))
        if both:
            raise ConfigError(
                f"{source}: CPU {format_cpu_list(both)} is in both sets; the replicas' and the harness's CPUs "
                "must not overlap"
            )
        return cls(tuple(rep), tuple(har), source)

    def check_quotas(self, quota_cores: float | None, max_replicas: int, *, quota_source: str, max_source: str) -> None:
        """Refuse replica quotas that add up to more than the replica set at the most replicas.

        :raises ConfigError: ``quota_cores x max_replicas`` exceeds the set; the message names
            both values, where they came from and the three ways out.
        """
        cores = len(self.replica)
        if quota_cores is None:
            raise ConfigError(
                f"{quota_source} 0 (no quota) with the replica CPU set {self.replica_list}: unlimited replicas "
                f"would share {cores} CPU without bound; give a quota of at most {cores / max_replicas:.3g} "
                "cores per replica, or pass --replica-cpus off"
            )
        total = quota_cores * max_replicas
        if total > cores + 1e-9:
            raise ConfigError(
                f"{quota_source} {quota_cores:g} x {max_source} {max_replicas} = {total:g} cores of quota, more than "
                f"the replicas' CPU set holds (CPU {self.replica_list}: {cores} core, from {self.source}): lower "
                f"{quota_source} to at most {cores / max_replicas:.4g}, lower {max_source} to at most "
                f"{max(1, int(cores / quota_cores + 1e-9))}, or give the replicas more CPUs (--replica-cpus)"
            )
