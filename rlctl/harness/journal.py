"""The on-disk journal of everything the test-bed harness changes on this host, and the cleanup.

Every process the harness starts (``gosvc serve``, its load generator and fault proxy,
redis-server, stress-ng) and every cgroup, quota or frozen process it makes is written down
*before* it happens, so a command killed at any instant (even by SIGKILL) can be reverted by
another process (``rlctl chaos cleanup --backend local``). One journal per run:

``${RLCTL_STATE_DIR:-/tmp/rlctl-state}/<run-id>/``

- ``owner.json``: the owning process's pid and start time (a run whose owner is gone is
  stale) and, for a command's own session journal, the ``command`` it belongs to;
- ``NNNNNN-<kind>.json``: one entry per outstanding change, removed once it is reverted:

  =========  ====================================================================
  kind       what cleanup does
  =========  ====================================================================
  process    SIGCONT + SIGKILL the process group (stress-ng, proxy, replica,
             load generator, redis-server); ``pid`` and ``start_time`` are in the
             entry before the program is exec'd (see :func:`rlctl.harness.process.spawn`),
             ``argv`` and ``cgroups`` too, and every process also carries
             ``RLCTL_CHAOS_RUN=<run-id>`` in its environment
  stopped    SIGCONT the pid (a replica frozen by a pod-failure fault)
  quota      write the original quota back (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
             on cgroup v1, ``cpu.max`` on v2; see :mod:`rlctl.cgroups`)
  cgroup     move any task left to the root cgroup and remove the directory (a cgroup v1
             CPU set has its own entry, ``cpuset: true``, in the ``cpuset`` hierarchy)
  =========  ====================================================================

A chaos run opens its journal under its ``--run-id`` (:meth:`Journal.open`); every other
command that starts processes (``rlctl probe``, ``rlctl calibrate``, the boundary
validation, the online end-to-end run and test-bed) journals into its *session* journal,
``<command>-<pid>-<start time>``, opened on first use (:func:`session`) and reverted and
removed when the process exits. :func:`using` makes a run's journal the one every harness
call of the block records into.

A pid is only signalled while its start time (``/proc/<pid>/stat`` field 22) is the one
recorded, so a recycled pid is never hit. :func:`cleanup` reverts in a safe order: resume
stopped processes, kill processes, restore quotas, remove cgroups (deepest first), then
delete the journal.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlctl import cgroups
from rlctl.cgroups import read_int as read_int  # re-exported for callers and tests
from rlctl.cgroups import write_int as write_int
from rlctl.errors import ChaosError, ConfigError

log = logging.getLogger(__name__)

#: Environment variable every process the harness starts carries: ``RLCTL_CHAOS_RUN=<run-id>`` (the
#: name predates the harness; kept so a cleanup finds the processes of older runs too).
MARKER_ENV = "RLCTL_CHAOS_RUN"
#: Root of the cgroup v1 CPU controller (the hierarchy in use is detected by :mod:`rlctl.cgroups`).
CGROUP_CPU_ROOT = cgroups.V1_CPU_ROOT
_OWNER = "owner.json"


def state_root(state_dir: str | Path | None = None) -> Path:
    """``state_dir``, else ``$RLCTL_STATE_DIR``, else ``/tmp/rlctl-state``."""
    return Path(state_dir or os.environ.get("RLCTL_STATE_DIR") or "/tmp/rlctl-state")


def check_run_id(run_id: str) -> str:
    """A run id is a path component and an environment value: letters, digits, ``-_.``."""
    ok = run_id and len(run_id) <= 63 and all(c.isalnum() or c in "-_." for c in run_id) and run_id[0].isalnum()
    if not ok:
        raise ConfigError(
            f"run id {run_id!r}: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return run_id


# ----------------------------------------------------------------------- processes


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its closing one.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z, ...), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """True while ``pid`` exists, is not a zombie and (if given) started at ``start_time``."""
    state = proc_state(pid)
    if state is None or state in "ZX":
        return False
    return start_time is None or proc_start_time(pid) == start_time


def marked_pids(run_id: str | None = None) -> dict[int, str]:
    """Live processes carrying :data:`MARKER_ENV` (of ``run_id``, or of any run): pid -> run id."""
    found: dict[int, str] = {}
    key = f"{MARKER_ENV}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(key):
                rid = var[len(key) :].decode(errors="replace")
                if (run_id is None or rid == run_id) and is_alive(int(entry.name)):
                    found[int(entry.name)] = rid
                break
    return found


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_process_tree(pid: int, start_time: int | None, *, group: bool = True, grace_s: float = 0.0) -> bool:
    """SIGCONT then SIGTERM (if ``grace_s``) then SIGKILL ``pid`` and, with ``group``, its process group.

    Returns False when the process was already gone (or its pid was recycled).
    """
    if not is_alive(pid, start_time):
        return False
    targets: list[tuple[Any, int]] = [(os.kill, pid)]
    if group:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                targets = [(os.killpg, pid)]
    for fn, target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            fn(target, signal.SIGCONT)
        if grace_s > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                fn(target, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while grace_s > 0 and time.monotonic() < deadline and is_alive(pid, start_time):
        time.sleep(0.05)
    for fn, target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            fn(target, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and is_alive(pid, start_time):
        time.sleep(0.02)
    return True


# ----------------------------------------------------------------------- the journal


@dataclass
class Entry:
    """One outstanding change, mirrored in ``path``."""

    journal: Journal
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def update(self, **changes: Any) -> None:
        self.data.update(changes)
        self.journal._write(self.path, self.data)

    def remove(self) -> None:
        """The change was reverted: forget it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Journal:
    """The journal directory of one run. Create with :meth:`open`; entries with :meth:`record`."""

    def __init__(self, run_id: str, root: Path) -> None:
        self.run_id = check_run_id(run_id)
        self.dir = root / run_id
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.owner_pid = os.getpid()

    @classmethod
    def open(cls, run_id: str, state_dir: str | Path | None = None, *, command: str | None = None) -> Journal:
        """Create the run's journal, owned by this process; refuses a run id whose owner is alive."""
        journal = cls(run_id, state_root(state_dir))
        owner = journal.owner()
        if owner and is_alive(owner.get("pid", -1), owner.get("start_time")) and owner.get("pid") != os.getpid():
            raise ChaosError(
                f"run id {run_id} is in use by process {owner['pid']} (journal {journal.dir}); pick another --run-id"
            )
        if journal.entries():
            raise ChaosError(
                f"run id {run_id} has a journal of unreverted changes in {journal.dir}; revert them with "
                f"`rlctl chaos cleanup --backend local --run-id {run_id}` first"
            )
        try:
            journal.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the journal {journal.dir} ({exc.strerror}); set RLCTL_STATE_DIR to a writable directory"
            ) from None
        existing = [int(p.name.split("-", 1)[0]) for p in journal.dir.glob("[0-9]*-*.json")]
        journal._seq = itertools.count(max(existing, default=0) + 1)
        journal._write(
            journal.dir / _OWNER,
            {"run_id": run_id, "pid": os.getpid(), "start_time": proc_start_time(os.getpid()), "created": time.time()}
            | ({"command": command} if command else {}),
        )
        return journal

    def owner(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.dir / _OWNER).read_text())
            return data
        except (OSError, ValueError):
            return None

    def record(self, kind: str, **data: Any) -> Entry:
        """Write an entry before the change it describes is made."""
        with self._lock:
            seq = next(self._seq)
        path = self.dir / f"{seq:06d}-{kind}.json"
        entry = Entry(self, path, {"kind": kind, "run_id": self.run_id, "seq": seq, **data})
        self._write(path, entry.data)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every outstanding entry, oldest first (unreadable ones are skipped with a warning)."""
        out = []
        for path in sorted(self.dir.glob("[0-9]*-*.json")):
            try:
                out.append({**json.loads(path.read_text()), "_path": str(path)})
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable journal entry %s: %s", path, exc)
        return out

    def close(self) -> None:
        """Remove the journal when nothing is outstanding (else keep it for ``cleanup``)."""
        if self.entries():
            log.warning("journal %s still lists unreverted changes; run rlctl chaos cleanup", self.dir)
            return
        with contextlib.suppress(FileNotFoundError):
            (self.dir / _OWNER).unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(path)


# ----------------------------------------------------------------------- cleanup


def _runs(root: Path, run_id: str | None, all_runs: bool) -> Iterator[Journal]:
    if run_id is not None:
        yield Journal(run_id, root)
        return
    if not root.is_dir():
        return
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            journal = Journal(d.name, root)
        except ConfigError:
            continue
        owner = journal.owner()
        if all_runs or not owner or not is_alive(owner.get("pid", -1), owner.get("start_time")):
            yield journal


def stale_runs(state_dir: str | Path | None = None) -> list[str]:
    """Run ids whose journal lists unreverted changes and whose owner process is gone."""
    return [j.run_id for j in _runs(state_root(state_dir), None, False) if j.entries()]


def cleanup(run_id: str | None = None, all: bool = False, *, state_dir: str | Path | None = None) -> list[str]:
    """Revert what local chaos runs left behind; returns one line per thing reverted.

    ``run_id``: that run only. Otherwise every run of the state directory whose owner process
    is gone, or with ``all=True`` every run of the state directory, live ones too. Besides what
    its journal lists, each run's processes are found by their :data:`MARKER_ENV` marker; runs
    journaled in another state directory are never touched.
    """
    root = state_root(state_dir)
    done: list[str] = []
    for journal in _runs(root, run_id, all):
        done += revert_journal(journal)
    return done


def _kill_marked(run_id: str) -> list[str]:
    """Kill the processes carrying the run's marker that the journal may not name."""
    done = []
    for pid, rid in marked_pids(run_id).items():
        if pid != os.getpid() and kill_process_tree(pid, proc_start_time(pid), group=False):
            done.append(f"killed process {pid} of run {rid}")
    return done


def revert_journal(journal: Journal) -> list[str]:
    """Revert every entry of one run's journal (see the module docstring for the order); delete it when empty."""
    done: list[str] = []
    entries = journal.entries()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_kind.setdefault(e.get("kind", "?"), []).append(e)
    for e in by_kind.pop("stopped", []):
        if is_alive(e["pid"], e.get("start_time")) and _signal(e["pid"], signal.SIGCONT):
            done.append(f"resumed stopped process {e['pid']} ({e.get('what', 'replica')})")
        Path(e["_path"]).unlink(missing_ok=True)
    for e in reversed(by_kind.pop("process", [])):
        pid = e.get("pid")
        if pid and kill_process_tree(pid, e.get("start_time"), group=e.get("group", True)):
            done.append(f"killed {e.get('role', 'process')} process {pid}")
        Path(e["_path"]).unlink(missing_ok=True)
    done += _kill_marked(journal.run_id)
    for e in reversed(by_kind.pop("quota", [])):
        path = Path(e["path"])
        if path.is_dir():
            cgroups.write_quota_us(path, int(e["quota_us"]), int(e["period_us"]))
            done.append(f"restored {cgroups.quota_file(path)} to {e['quota_us']}")
        Path(e["_path"]).unlink(missing_ok=True)
    for e in sorted(by_kind.pop("cgroup", []), key=lambda e: len(Path(e["path"]).parts), reverse=True):
        path = Path(e["path"])
        if e.get("only_if_empty") and cgroups.has_subgroups(path):
            Path(e["_path"]).unlink(missing_ok=True)
            continue
        if cgroups.remove(path):
            done.append(f"removed cgroup {path}")
        Path(e["_path"]).unlink(missing_ok=True)
    for kind, rest in by_kind.items():
        for e in rest:
            log.warning("journal entry of unknown kind %r left in place: %s", kind, e["_path"])
    if not journal.entries():
        with contextlib.suppress(FileNotFoundError):
            (journal.dir / _OWNER).unlink()
        for tmp in journal.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            journal.dir.rmdir()
            done.append(f"removed journal {journal.dir}")
    return done


# ----------------------------------------------------------------------- the current journal

_lock = threading.Lock()
_session: Journal | None = None
_stack: list[Journal] = []


def session(command: str = "rlctl", state_dir: str | Path | None = None) -> Journal:
    """The journal harness calls record into when they are given none.

    The innermost :func:`using` block's journal, else this process's session journal,
    ``<command>-<pid>-<start time>`` in the state directory, opened on the first call (the
    first caller's ``command`` names it) and reverted and removed when the process exits.
    """
    global _session
    with _lock:
        if _stack:
            return _stack[-1]
        if _session is None or _session.owner_pid != os.getpid():  # a forked child gets its own
            pid = os.getpid()
            name = "".join(c if c.isalnum() or c in "-_." else "-" for c in command)[:24] or "rlctl"
            _session = Journal.open(f"{name}-{pid}-{proc_start_time(pid) or 0}", state_dir, command=command)
            _session.owner_pid = pid
            atexit.register(_close_session, _session)
        return _session


def _close_session(journal: Journal) -> None:
    if journal.owner_pid != os.getpid():
        return
    with contextlib.suppress(Exception):
        left = revert_journal(journal)
        if any(not line.startswith("removed journal") for line in left):
            log.warning("stopped what %s left behind at exit: %s", journal.run_id, "; ".join(left))


@contextlib.contextmanager
def using(journal: Journal) -> Iterator[Journal]:
    """Within the block, harness calls without a journal record into ``journal`` (a chaos run's)."""
    with _lock:
        _stack.append(journal)
    try:
        yield journal
    finally:
        with _lock:
            _stack.remove(journal)
