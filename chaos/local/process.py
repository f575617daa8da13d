"""Journaled child processes: spawned in their own session, marked, and always stoppable."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chaos.local.journal import MARKER_ENV, Entry, Journal, kill_process_tree, proc_start_time
from rlctl import cgroups
from rlctl.errors import ChaosError

log = logging.getLogger(__name__)

_REPO_GOSVC = Path(__file__).resolve().parents[2] / "deploy" / "gosvc" / "bin" / "gosvc"


def find_gosvc(path: str | Path | None = None) -> str:
    """The gosvc binary: ``path``, else the repository's build, else ``gosvc`` on PATH."""
    if path:
        p = Path(path)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ChaosError(f"gosvc binary {p} is not an executable file; build it with `bash deploy/gosvc/build.sh`")
        return str(p)
    if _REPO_GOSVC.is_file() and os.access(_REPO_GOSVC, os.X_OK):
        return str(_REPO_GOSVC)
    found = shutil.which("gosvc")
    if found:
        return found
    raise ChaosError(
        f"the local backend needs the gosvc test-bed: {_REPO_GOSVC} does not exist and gosvc is not on PATH; "
        "build it with `bash deploy/gosvc/build.sh` (or pass --gosvc PATH)"
    )


def find_stress_ng(path: str | Path | None = None) -> str:
    """The stress-ng binary: ``path``, else ``stress-ng`` on PATH, else ``/usr/bin/stress-ng``."""
    candidates = [str(path)] if path else [shutil.which("stress-ng") or "", "/usr/bin/stress-ng"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise ChaosError(
        "CPU and memory stress faults need stress-ng, which is not installed: "
        "`apt-get install stress-ng` (or `make system`), or pass --stress-ng PATH"
    )


#: Pids of the live children :class:`Managed` waits for itself; :func:`reap_orphans` leaves them alone.
_MANAGED: set[int] = set()


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (``PR_SET_CHILD_SUBREAPER``).

    A stressor's workers outlive their parent by a moment when the process group is killed;
    they are re-parented to the nearest subreaper, else to pid 1, which in some containers
    never reaps. With this set, :func:`reap_orphans` collects them. False where unsupported.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans() -> int:
    """Reap exited children this process adopted as a subreaper; returns how many."""
    me, n = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in _MANAGED:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] == "Z" and int(rest[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                n += 1
    return n


@dataclass
class Managed:
    """A child process of the run, with its journal entry (removed once the process is gone)."""

    role: str
    proc: subprocess.Popen[Any]
    entry: Entry
    start_time: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; forget the journal entry."""
        if self.proc.poll() is None:
            kill_process_tree(self.pid, self.start_time, grace_s=grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)
        _MANAGED.discard(self.pid)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.entry.remove()

    def kill(self) -> None:
        """SIGKILL at once (a pod kill)."""
        self.stop(grace_s=0.0)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def spawn(
    journal: Journal,
    role: str,
    argv: Sequence[str],
    *,
    cgroup: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    detail: dict[str, Any] | None = None,
) -> Managed:
    """Record, then start ``argv`` in its own session, marked with the run id.

    With ``cgroup`` the process enters that cgroup before it execs (so every child it
    forks is in it too): ``sh`` writes its own pid into the group's ``cgroup.procs`` (every
    one :func:`rlctl.cgroups.procs_files` names, on v1 or v2), then execs; it exits with 1
    instead when a write fails.
    """
    entry = journal.record("process", role=role, argv=list(argv), pid=None, group=True, **(detail or {}))
    full = list(argv)
    if cgroup is not None:
        files = [str(f) for f in cgroups.procs_files(cgroup)]
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'
        full = ["/bin/sh", "-c", join, "sh", *files, "--", *argv]
    child_env = {**os.environ, **(env or {}), MARKER_ENV: journal.run_id}
    try:
        proc = subprocess.Popen(
            full, stdin=stdin, stdout=stdout, stderr=stderr, env=child_env, start_new_session=True, text=True
        )
    except OSError as exc:
        entry.remove()
        raise ChaosError(f"cannot start {role} ({argv[0]}): {exc.strerror}") from None
    _MANAGED.add(proc.pid)
    start = proc_start_time(proc.pid)
    entry.update(pid=proc.pid, start_time=start)
    return Managed(role, proc, entry, start)


def read_json_line(m: Managed, *, timeout_s: float, what: str, log_path: Path | None = None) -> dict[str, Any]:
    """The first JSON line the process prints (gosvc's ``{"event":"listening",...}``)."""
    assert m.proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or m.proc.poll() is not None:
            break
        ready, _, _ = select.select([m.proc.stdout], [], [], min(left, 0.2))
        if ready:
            line = m.proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                data: dict[str, Any] = json.loads(line)
                return data
    code = m.proc.poll()
    m.stop(grace_s=0.5)
    tail = ""
    if log_path is not None and log_path.exists():
        tail = " ; its log ends: " + " | ".join(log_path.read_text(errors="replace").splitlines()[-5:])
    state = f"exited with code {code}" if code is not None else f"said nothing within {timeout_s:g}s"
    raise ChaosError(f"{what} {state}{tail}")
