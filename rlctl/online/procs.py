"""Local processes the online controller runs against: redis-server, ``gosvc serve`` and its load generator.

Each helper starts a real process on a free loopback port through the test-bed harness
(:func:`rlctl.harness.process.spawn`: journaled before it starts, so ``rlctl chaos cleanup
--backend local`` stops it after a crash), waits until it answers, and always stops it
(SIGTERM, then SIGKILL after a grace period) — use them as context managers.
Tests, ``rlctl bench serve`` and the end-to-end run (:mod:`rlctl.online.e2e`) use them; the
:class:`~rlctl.online.actuators.ProcessReplicaActuator` starts its replicas through
:class:`GoService`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from rlctl.errors import ConfigError, RlctlError
from rlctl.harness.process import Managed, find_gosvc, spawn

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gosvc_binary() -> Path:
    """The ``gosvc`` binary, by the harness's one search order (:func:`rlctl.harness.process.find_gosvc`)."""
    return Path(find_gosvc())


#: What the session journal of a process that only runs these helpers is called.
_COMMAND = "online"


class _Drain:
    """Reads a pipe line by line in a daemon thread, keeping the last lines (the pipe never fills)."""

    def __init__(self, pipe: IO[str], keep: int = 200, on_line: Any = None) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.on_line = on_line
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe: IO[str]) -> None:
        try:
            for line in pipe:
                self.lines.append(line.rstrip("\n"))
                if self.on_line is not None:
                    self.on_line(line)
        except (ValueError, OSError):  # pipe closed under us
            pass

    def tail(self, n: int = 20) -> str:
        return "\n".join(list(self.lines)[-n:])


class RedisServer:
    """A redis-server on a free loopback port, in its own temporary directory.

    :param port: the port (default: a free one). Restarting on the same port and ``dir``
        with ``appendonly=True`` brings the streams back: that is what the drills rely on.
    :param appendonly: write an append-only file with ``appendfsync always``, so a killed
        server loses nothing it acknowledged.
    :param binary: the redis-server executable (``$RLCTL_REDIS_SERVER``, else on ``PATH``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        directory: str | Path | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or os.environ.get("RLCTL_REDIS_SERVER") or shutil.which("redis-server")
        if not found or not Path(found).exists():
            raise ConfigError(
                "redis-server not found on PATH; install it (apt-get install redis-server) "
                "or set RLCTL_REDIS_SERVER to its path"
            )
        self.binary = found
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="rlctl-redis-"))
        self.proc: subprocess.Popen[str] | None = None
        self._managed: Managed | None = None
        self._drain: _Drain | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self._managed = spawn(
            None, "redis-server", args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, command=_COMMAND
        )
        self.proc = self._managed.proc
        assert self.proc.stdout is not None
        self._drain = _Drain(self.proc.stdout)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RlctlError(f"redis-server exited with {self.proc.returncode}: {self._drain.tail()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RlctlError(f"redis-server on port {self.port} did not answer PING within {timeout_s} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save."""
        if self._managed is not None:
            self._managed.kill()

    def stop(self) -> None:
        if self._managed is not None:
            self._managed.stop(grace_s=5.0)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class GoService:
    """One ``gosvc serve`` process on a free loopback port.

    The admin API (``/admin/knobs``) and pprof (``/debug/pprof/``) are on a separate listener,
    a free loopback port unless ``args`` has ``--admin-addr``; both need the bearer token.
    :attr:`admin_url` and :attr:`pprof_url` name it, from the ``admin_addr`` of the service's
    startup line.

    :param args: extra ``gosvc serve`` flags (``--cpu-us 500``, ``--gomaxprocs 1``, ...).
    :param token_file: the admin bearer-token file (at least 16 bytes); ``None`` disables the
        admin API and pprof.
    :param addr: the listen address (default: a free port on 127.0.0.1).
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        token_file: str | Path | None = None,
        addr: str = "127.0.0.1:0",
        binary: Path | None = None,
    ) -> None:
        self.binary = binary or gosvc_binary()
        self.args = list(args)
        self.token_file = token_file
        self.addr_arg = addr
        self.proc: subprocess.Popen[str] | None = None
        self._managed: Managed | None = None
        self.info: dict[str, Any] = {}
        self._stderr: _Drain | None = None

    @property
    def addr(self) -> str:
        return str(self.info["addr"])

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def admin_root(self) -> str:
        """``http://`` + the admin listener's address, as the startup line reports it."""
        return f"http://{self.info['admin_addr']}"

    @property
    def admin_url(self) -> str:
        return f"{self.admin_root}/admin/knobs"

    @property
    def pprof_url(self) -> str:
        """The pprof base URL (on the admin listener; send the bearer token)."""
        return f"{self.admin_root}/debug/pprof"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def start(self, timeout_s: float = 15.0) -> GoService:
        cmd = [str(self.binary), "serve", "--addr", self.addr_arg, *self.args]
        if self.token_file is not None:
            cmd += ["--admin-token-file", str(self.token_file)]
        self._managed = spawn(
            None, "gosvc-serve", cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            unset_env=("GOSVC_ADMIN_TOKEN",), command=_COMMAND,
        )  # fmt: skip
        self.proc = self._managed.proc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stderr = _Drain(self.proc.stderr)
        line = _readline(self.proc.stdout, timeout_s)
        if not line:
            code = self.proc.poll()
            self.stop()
            raise RlctlError(f"gosvc serve did not start (exit {code}): {self._stderr.tail()}")
        self.info = json.loads(line)
        _Drain(self.proc.stdout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        if self._managed is not None:
            self._managed.stop(grace_s=grace_s)

    def kill(self) -> None:
        if self._managed is not None:
            self._managed.kill()

    def __enter__(self) -> GoService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline(pipe: IO[str], timeout_s: float) -> str:
    """One line from ``pipe`` within ``timeout_s`` (empty on timeout or EOF)."""
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(pipe.readline()), daemon=True)
    t.start()
    t.join(timeout_s)
    return out[0].strip() if out else ""


class LoadGen:
    """``gosvc loadgen --control-stdin`` against one URL: the rate is set with :meth:`set_rate`.

    Every per-interval JSON record the generator prints lands in :attr:`records` (with the
    wall-clock ``time_s`` it was read at), so callers can compute per-second P99.
    """

    def __init__(
        self, url: str, *, interval_s: float = 1.0, timeout_s: float = 2.0, binary: Path | None = None
    ) -> None:
        self.url = url
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        cmd = [str(binary or gosvc_binary()), "loadgen", "--url", url, "--rate", "0", "--duration", "0",
               "--control-stdin", "--interval", f"{interval_s}s", "--timeout", f"{timeout_s}s"]  # fmt: skip
        self._managed = spawn(
            None, "loadgen", cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1,
            command=_COMMAND,
        )  # fmt: skip
        self.proc = self._managed.proc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stderr = _Drain(self.proc.stderr)
        self._stdout = _Drain(self.proc.stdout, on_line=self._record)
        self.rate = 0.0

    def _record(self, line: str) -> None:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return
        if isinstance(rec, dict):
            rec["time_s"] = time.time()
            with self._lock:
                self.records.append(rec)

    def set_rate(self, qps: float) -> None:
        if self.proc.poll() is not None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(f"rate {max(qps, 0.0):.3f}\n")
            self.proc.stdin.flush()
            self.rate = qps
        except (BrokenPipeError, ValueError):
            pass

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        self._managed.stop(grace_s=2.0)
