"""The test-bed harness's parts: the one gosvc lookup, the held start, the session journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlctl.errors import ConfigError
from rlctl.harness import process
from rlctl.harness.journal import Journal, cleanup, proc_start_time, proc_state
from rlctl.harness.process import find_gosvc, run, spawn


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_gosvc_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, env, repo = _exe(tmp_path / "flag"), _exe(tmp_path / "env"), _exe(tmp_path / "repo")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    on_path = _exe(bindir / "gosvc")
    monkeypatch.setattr(process, "REPO_GOSVC", repo)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("RLCTL_GOSVC", str(env))
    assert find_gosvc(flag) == str(flag)
    assert find_gosvc() == str(env)
    monkeypatch.delenv("RLCTL_GOSVC")
    assert find_gosvc() == str(repo)
    monkeypatch.setattr(process, "REPO_GOSVC", tmp_path / "missing")
    assert find_gosvc() == str(on_path)


def test_find_gosvc_names_every_place_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "REPO_GOSVC", tmp_path / "missing")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RLCTL_GOSVC", raising=False)
    with pytest.raises(ConfigError) as info:
        find_gosvc(option="--loadgen")
    msg = str(info.value)
    for place in ("--loadgen (not given)", "$RLCTL_GOSVC (not set)", f"{tmp_path / 'missing'} (missing)", "PATH"):
        assert place in msg
    assert "`make gosvc`" in msg and "pass --loadgen PATH" in msg
    monkeypatch.setenv("RLCTL_GOSVC", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"\$RLCTL_GOSVC=\S+/nope: not an executable file; build it with `make"):
        find_gosvc()
    with pytest.raises(ConfigError, match=r"--gosvc \S+/x: not an executable file"):
        find_gosvc(tmp_path / "x")


def test_the_entry_holds_pid_start_time_argv_and_cgroups_before_the_program_runs(tmp_path: Path) -> None:
    journal = Journal.open("held-1", tmp_path)
    marker = tmp_path / "ran"
    m = spawn(journal, "probe-me", ["sh", "-c", f"touch {marker}; sleep 30"])
    try:
        entry = json.loads(m.entry.path.read_text())
        assert entry["pid"] == m.pid and entry["start_time"] == proc_start_time(m.pid)
        assert entry["argv"] == ["sh", "-c", f"touch {marker}; sleep 30"] and entry["cgroups"] == []
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        assert proc_start_time(m.pid) == entry["start_time"]  # exec keeps the pid and its start time
    finally:
        m.stop(grace_s=1.0)
    assert not m.entry.path.exists()
    assert cleanup("held-1", state_dir=tmp_path) == [f"removed journal {tmp_path / 'held-1'}"]


def test_a_child_whose_parent_dies_before_releasing_it_never_runs(tmp_path: Path) -> None:
    """The held shell reads EOF from the gate when the parent is gone, and exits without exec."""
    marker = tmp_path / "ran"
    code = f"""
import os, sys
os.environ["RLCTL_STATE_DIR"] = {str(tmp_path / "state")!r}
from rlctl.harness import process
real_write = os.write
os.write = lambda fd, data: os._exit(0) if data == b"go\\n" else real_write(fd, data)  # die instead of releasing
process.spawn(None, "never", ["touch", {str(marker)!r}], command="gate")
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    time.sleep(0.5)
    assert not marker.exists()


def test_run_is_journaled_and_forgotten(tmp_path: Path) -> None:
    journal = Journal.open("run-1", tmp_path)
    out = run("echo", ["sh", "-c", "echo $RLCTL_CHAOS_RUN"], timeout_s=10, journal=journal)
    assert out.returncode == 0 and out.stdout.strip() == "run-1"
    assert journal.entries() == []
    journal.close()


def test_a_session_journal_is_reverted_when_its_process_exits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = """
from rlctl.harness import process
m = process.spawn(None, "sleeper", ["sleep", "60"], command="unit")
print(m.pid, m.start_time, flush=True)
"""
    env = {**os.environ, "RLCTL_STATE_DIR": str(state)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    pid, start = (int(v) for v in out.stdout.split())
    assert proc_start_time(pid) != start or proc_state(pid) in ("Z", None)
    assert list(state.iterdir()) == []
