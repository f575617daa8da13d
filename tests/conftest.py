"""Shared fixtures, the in-process CLI runner, and the test markers.

Markers (registered here, in ``pytest_configure``):

- ``real``: the test starts something real: a server or a long-lived process (redis-server,
  the gosvc test-bed, Ray, stress-ng, promtool), touches the host's cgroups, or runs ``rlctl``
  as a subprocess because it needs one (signals, the console script itself, its real stdout).
- ``slow``: pure but long (training, a whole evaluation suite, long simulations).

``make test-fast`` runs ``pytest -m "not real and not slow"``; ``make test`` runs everything.
In a run that deselects ``real``, a test that starts one of the binaries above anyway fails
and says to mark it (see ``_no_real_processes``).

Tests live in folders that mirror the packages: ``tests/test_rlctl``, ``tests/test_envs``,
``tests/test_policies``, ``tests/test_chaos`` (not ``tests/rlctl``: this folder is on
``sys.path``, where a folder named like a package would shadow it as a namespace package).
Tests of the repository as a whole (docs, packaging, standalone, deployment files) stay at
the top. The support modules here (``conftest``, ``chaos_local_support``, ``online_support``,
``fakek8s``, ``reaper``) and ``fixtures/`` are shared: a test one folder down imports them
by name (this folder is put on ``sys.path``) and finds the repository at ``parents[2]``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
RLCTL = Path(sys.executable).parent / "rlctl"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

MARKERS = {
    "real": "starts a real server or process (redis-server, gosvc, Ray, stress-ng, promtool), touches the "
    "host's cgroups, or runs an rlctl subprocess; deselected by `make test-fast`",
    "slow": "pure but long-running (training, whole suites, long simulations); deselected by `make test-fast`",
}

#: Executables a test may start only when marked ``real`` (checked when ``real`` is deselected).
REAL_EXECUTABLES = frozenset(
    {"redis-server", "gosvc", "stress-ng", "prometheus", "promtool", "rlctl", "raylet", "gcs_server"}
)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def run_rlctl(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the installed ``rlctl`` console script as a user would; returns the completed process.

    For the few tests that need a real process (mark them ``real``); the rest use :func:`invoke_rlctl`.
    """
    return subprocess.run([str(RLCTL), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@dataclass(frozen=True)
class CliResult:
    """What :func:`invoke_rlctl` saw; the same fields as a completed subprocess."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def invoke_rlctl(*args: str, env: Mapping[str, str | None] | None = None, input: str | None = None) -> CliResult:
    """``rlctl ARGS`` in this process, from the repository root.

    It calls the console-script entry point, :func:`rlctl.cli.main` (which turns rlctl's errors
    and Typer's usage errors into one line on stderr and an exit code), inside Typer's
    ``CliRunner`` isolation: stdin, stdout, stderr and ``env`` are swapped for the call.
    """
    from typer.testing import CliRunner

    from rlctl import cli

    code = 0
    with contextlib.chdir(REPO), CliRunner().isolation(input=input, env=env) as (out, err, _):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return CliResult(args, code, stdout, stderr)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _no_real_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a run without ``real`` tests, an unmarked test that starts a real server fails and says so."""
    markexpr = request.config.getoption("markexpr", "") or ""
    if "not real" not in markexpr or request.node.get_closest_marker("real") is not None:
        yield
        return
    started: list[str] = []
    popen_init = subprocess.Popen.__init__

    def watched(self: Any, args: Any, *a: Any, **kw: Any) -> None:
        # The program, and the one after a `--`: the harness starts children as `bash -c GATE ... -- ARGV`.
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        programs = argv[:1] + [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "--"]
        started.extend(name for p in programs if (name := os.path.basename(os.fsdecode(p))) in REAL_EXECUTABLES)
        popen_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", watched)
    yield
    if started:
        pytest.fail(f"{request.node.nodeid} started {sorted(set(started))}: mark it @pytest.mark.real", pytrace=False)
