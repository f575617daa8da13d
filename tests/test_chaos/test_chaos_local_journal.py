"""The local backend's journal and cleanup: each kind of entry is reverted, and only ours."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from chaos_local_support import require_cgroups
from conftest import invoke_rlctl

from chaos.backends.local import cleanup
from chaos.backends.local.faults import check_local, select_replicas
from chaos.backends.local.replicas import Replica
from chaos.spec import Selector, scenario_from_dict
from rlctl import cgroups
from rlctl.errors import ChaosError, ConfigError
from rlctl.harness.journal import (
    MARKER_ENV,
    Journal,
    check_run_id,
    is_alive,
    marked_pids,
    proc_start_time,
    proc_state,
)
from rlctl.harness.process import spawn


def _wait_state(pid: int, want: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while proc_state(pid) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc_state(pid) == want


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_run_ids_are_path_safe() -> None:
    assert check_run_id("20260101-ab12") == "20260101-ab12"
    for bad in ("", "../x", "a/b", "-x", "x" * 64, "a b"):
        with pytest.raises(ConfigError, match="run id"):
            check_run_id(bad)


def test_stopped_process_is_resumed_and_killed(state: Path) -> None:
    journal = Journal.open("stopped-1", state)
    m = spawn(journal, "replica", ["sleep", "60"])
    try:
        journal.record("stopped", pid=m.pid, start_time=m.start_time, what="replica r0")
        os.kill(m.pid, signal.SIGSTOP)
        _wait_state(m.pid, "T")
        done = cleanup("stopped-1", state_dir=state)
        assert done[0] == f"resumed stopped process {m.pid} (replica r0)"
        assert f"killed replica process {m.pid}" in done
        assert f"removed journal {state / 'stopped-1'}" in done
        m.proc.wait(timeout=5)
        assert not (state / "stopped-1").exists()
    finally:
        m.proc.kill()
        m.proc.wait()


def test_recycled_pid_is_never_signalled(state: Path) -> None:
    journal = Journal.open("recycled", state)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        # Same pid, another start time: the journal's process is gone, this one is not it.
        journal.record("process", role="stress-ng", pid=victim.pid, start_time=(proc_start_time(victim.pid) or 0) + 1)
        assert cleanup("recycled", state_dir=state) == [f"removed journal {state / 'recycled'}"]
        assert is_alive(victim.pid)
    finally:
        victim.kill()
        victim.wait()


def test_process_spawned_before_its_pid_was_journaled_is_found_by_its_marker(state: Path) -> None:
    journal = Journal.open("marker-1", state)
    entry = journal.record("process", role="stress-ng", pid=None)
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, MARKER_ENV: "marker-1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in marked_pids("marker-1") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marked_pids("marker-1") == {proc.pid: "marker-1"}
        done = cleanup("marker-1", state_dir=state)
        assert f"killed process {proc.pid} of run marker-1" in done
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not entry.path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.real  # the host's cgroups
def test_quota_and_cgroup_are_restored_and_removed(state: Path) -> None:
    hierarchy = require_cgroups()
    parent = hierarchy.root / f"rlctl-test-{os.getpid()}"
    try:
        child = hierarchy.create(f"{parent.name}/preexisting")
        cgroups.write_quota_us(child, 30000, cgroups.PERIOD_US)
        journal = Journal.open("quota-1", state)
        journal.record("quota", path=str(child), quota_us=30000, period_us=cgroups.PERIOD_US)
        cgroups.write_quota_us(child, 5000, cgroups.PERIOD_US)
        ours = parent / "ours"
        journal.record("cgroup", path=str(ours))
        hierarchy.create(f"{parent.name}/ours")
        sleeper = spawn(journal, "stress-ng", ["sleep", "60"], cgroup=ours)
        deadline = time.monotonic() + 5
        while str(sleeper.pid) not in (ours / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
            time.sleep(0.02)
        done = cleanup("quota-1", state_dir=state)
        sleeper.proc.wait(timeout=5)
        assert f"killed stress-ng process {sleeper.pid}" in done
        assert f"restored {cgroups.quota_file(child)} to 30000" in done
        assert f"removed cgroup {ours}" in done
        assert cgroups.quota(child)[0] == 30000
        assert not ours.exists()
    finally:
        for d in (parent / "preexisting", parent / "ours", parent):
            if d.exists():
                d.rmdir()


def test_a_journal_with_unreverted_changes_blocks_its_run_id(state: Path) -> None:
    journal = Journal.open("busy-1", state)
    journal.record("cgroup", path=str(state / "nowhere"))
    (state / "busy-1" / "owner.json").unlink()  # as after a crash of another process
    with pytest.raises(ChaosError, match=r"rlctl chaos cleanup --backend local --run-id busy-1"):
        Journal.open("busy-1", state)
    assert cleanup("busy-1", state_dir=state) == [f"removed journal {state / 'busy-1'}"]


def test_cleanup_without_run_id_reverts_only_runs_whose_owner_is_gone(state: Path) -> None:
    live = Journal.open("live-1", state)  # owned by this (alive) process
    live.record("cgroup", path=str(state / "nowhere"))
    dead = Journal("dead-1", state)
    dead.dir.mkdir(parents=True)
    dead._write(dead.dir / "owner.json", {"pid": 999_999_999, "start_time": 1})
    dead.record("cgroup", path=str(state / "nowhere"))
    assert cleanup(state_dir=state) == [f"removed journal {state / 'dead-1'}"]
    assert (state / "live-1").exists()
    done = cleanup(all=True, state_dir=state)
    assert done[-1] == f"removed journal {state / 'live-1'}"
    assert not any(p.name.endswith("-1") for p in state.iterdir())


def test_unsupported_faults_are_refused_up_front_naming_the_backend() -> None:
    s = scenario_from_dict(
        {
            "name": "mixed",
            "duration_s": 60,
            "faults": [
                {"kind": "network-delay", "start_s": 1, "duration_s": 5},
                {"name": "slow-disk", "kind": "io-latency", "start_s": 1, "duration_s": 5},
                {"kind": "time-skew", "start_s": 1, "duration_s": 5},
                {"kind": "fan-failure", "start_s": 1, "duration_s": 5},
                {"kind": "numa-misplacement", "start_s": 1, "duration_s": 5},
            ],
        }
    )
    with pytest.raises(ChaosError) as err:
        check_local(s)
    msg = str(err.value)
    assert "fault #1 'slow-disk' (io-latency): the local backend cannot delay disk I/O" in msg
    assert "fault #2 (time-skew): the local backend cannot skew" in msg
    assert msg.count("run it with --backend k8s or --backend sim") == 2
    assert "fault #3 (fan-failure): fan failure is simulator-only" in msg
    assert "fault #4 (numa-misplacement): NUMA misplacement is simulator-only; run it with --backend sim" in msg
    assert "network-delay" not in msg


def test_selectors_pick_like_chaos_mesh() -> None:
    reps = [Replica(f"r{i}") for i in range(4)]
    rng = np.random.default_rng(0)
    assert len(select_replicas(Selector(mode="one"), reps, rng)) == 1
    assert select_replicas(Selector(mode="all"), reps, rng) == reps
    assert len(select_replicas(Selector(mode="fixed", value="2"), reps, rng)) == 2
    assert len(select_replicas(Selector(mode="fixed-percent", value="50"), reps, rng)) == 2
    assert 1 <= len(select_replicas(Selector(mode="random-max-percent", value="75"), reps, rng)) <= 3
    assert select_replicas(Selector(mode="all"), [], rng) == []
    with pytest.raises(ChaosError, match="needs a numeric value"):
        select_replicas(Selector(mode="fixed", value="x"), reps, rng)


def test_cli_cleanup_local_reports_nothing_to_revert_on_a_clean_state(tmp_path: Path) -> None:
    env = {"RLCTL_STATE_DIR": str(tmp_path)}
    r = invoke_rlctl("chaos", "cleanup", "--backend", "local", "--all", "--json", "-", env=env)
    assert r.returncode == 0, r.stderr
    assert '"reverted": []' in r.stdout
