"""Journaled child processes: found by one lookup, spawned in their own session, marked, always stoppable.

:func:`spawn` is how every command starts a process on this host: the journal entry (role,
argv, cgroups) is written first, the process is held in a small shell until its pid and
start time are in the entry too, and only then execs the program (in its cgroups, when
given). :meth:`Managed.stop` is SIGTERM, then SIGKILL after a grace period, for the whole
process group, and forgets the entry. :func:`run` is :func:`subprocess.run` through the
same path.
"""

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

from rlctl import cgroups
from rlctl.errors import ChaosError, ConfigError, RlctlError
from rlctl.harness.journal import MARKER_ENV, Entry, Journal, kill_process_tree, proc_start_time, session

log = logging.getLogger(__name__)

#: Where ``make gosvc`` (``bash deploy/gosvc/build.sh``) puts the test-bed binary.
REPO_GOSVC = Path(__file__).resolve().parents[2] / "deploy" / "gosvc" / "bin" / "gosvc"
#: Environment variable naming the gosvc binary (the second place :func:`find_gosvc` looks).
GOSVC_ENV = "RLCTL_GOSVC"
_BUILD = "build it with `make gosvc` (or `bash deploy/gosvc/build.sh`)"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_gosvc(path: str | Path | None = None, *, option: str = "--gosvc") -> str:
    """The gosvc binary (test-bed, load generator and fault proxy), from the one search order.

    1. ``path`` (the command's ``option``, e.g. ``--gosvc`` or ``--loadgen``): must be executable;
    2. ``$RLCTL_GOSVC``: must be executable;
    3. the repository's build, ``deploy/gosvc/bin/gosvc``;
    4. ``gosvc`` on ``PATH``.

    :raises ConfigError: the one message naming every place looked at and the fix.
    """
    if path:
        p = Path(path)
        if not _executable(p):
            raise ConfigError(f"{option} {p}: not an executable file; {_BUILD} and pass its path")
        return str(p)
    env = os.environ.get(GOSVC_ENV)
    if env:
        if not _executable(Path(env)):
            raise ConfigError(f"${GOSVC_ENV}={env}: not an executable file; {_BUILD}, or unset {GOSVC_ENV}")
        return env
    if _executable(REPO_GOSVC):
        return str(REPO_GOSVC)
    found = shutil.which("gosvc")
    if found:
        return found
    raise ConfigError(
        f"no gosvc binary (the Go test-bed): looked at {option} (not given), ${GOSVC_ENV} (not set), "
        f"{REPO_GOSVC} ({'not executable' if REPO_GOSVC.exists() else 'missing'}) and `gosvc` on PATH "
        f"(not found); {_BUILD}, or pass {option} PATH"
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


_BASH = shutil.which("bash") or "/bin/bash"
# Held until the parent has journaled the pid: read "go" from the gate pipe (EOF, i.e. the parent
# died first, means exit without running anything), join the cgroups, close the gate, exec.
_GATE = (
    'g=$1; shift; IFS= read -r go <&"$g" && [ "$go" = go ] || exit 111; '
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; '
    'eval "exec $g<&-"; exec "$@"'
)


def spawn(
    journal: Journal | None,
    role: str,
    argv: Sequence[str],
    *,
    cgroup: Path | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    unset_env: Sequence[str] = (),
    detail: dict[str, Any] | None = None,
    bufsize: int = -1,
    command: str = "rlctl",
) -> Managed:
    """Record, then start ``argv`` in its own session, marked with the run id.

    ``journal`` None: the current one (:func:`rlctl.harness.journal.session`, named after
    ``command`` when this call opens it). The entry (``role``, ``argv``, ``cgroups``) is
    written before anything starts; the child is a shell that waits until the entry also
    holds its pid and start time, then joins ``cgroup`` (so every child it forks is in it
    too; every ``cgroup.procs`` :func:`rlctl.cgroups.procs_files` names, on v1 or v2) and
    execs ``argv`` (same pid, same start time). If this process dies before releasing it,
    the shell exits without running ``argv``; it exits with 1 when a cgroup write fails.
    """
    journal = journal or session(command)
    files = [str(f) for f in cgroups.procs_files(cgroup)] if cgroup is not None else []
    fields: dict[str, Any] = {"argv": list(argv), "pid": None, "group": True}
    fields["cgroups"] = [str(cgroup)] if cgroup is not None else []  # ``detail`` may name the ones it joins later
    entry = journal.record("process", role=role, **(fields | (detail or {})))
    child_env = {k: v for k, v in os.environ.items() if k not in unset_env}
    child_env.update({**(env or {}), MARKER_ENV: journal.run_id})
    gate_r, gate_w = os.pipe()
    full = [_BASH, "-c", _GATE, "rlctl-harness", str(gate_r), *files, "--", *argv]
    try:
        proc = subprocess.Popen(
            full, stdin=stdin, stdout=stdout, stderr=stderr, env=child_env, start_new_session=True, text=True,
            bufsize=bufsize, pass_fds=(gate_r,),
        )  # fmt: skip
    except OSError as exc:
        os.close(gate_w)
        entry.remove()
        raise RlctlError(f"cannot start {role} ({argv[0]}): {exc.strerror}") from None
    finally:
        os.close(gate_r)
    _MANAGED.add(proc.pid)
    start = proc_start_time(proc.pid)
    try:
        entry.update(pid=proc.pid, start_time=start)
    finally:
        with contextlib.suppress(OSError):
            os.write(gate_w, b"go\n")
        os.close(gate_w)
    return Managed(role, proc, entry, start)


def run(
    role: str,
    argv: Sequence[str],
    *,
    timeout_s: float,
    journal: Journal | None = None,
    command: str = "rlctl",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """:func:`subprocess.run` with captured text output, journaled as :func:`spawn` is.

    :raises subprocess.TimeoutExpired: after ``timeout_s`` (the process is killed first).
    """
    m = spawn(journal, role, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, command=command)
    try:
        out, err = m.proc.communicate(timeout=timeout_s)
    except BaseException:
        m.stop(grace_s=0.0)
        raise
    m.stop()
    return subprocess.CompletedProcess(list(argv), m.proc.returncode, out, err)


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
