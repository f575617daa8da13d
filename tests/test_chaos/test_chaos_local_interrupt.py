"""A local run stopped by SIGINT or SIGTERM, or killed by SIGKILL mid-fault and then cleaned up, leaves nothing behind.

The run is ``rlctl chaos run --backend local`` in a subprocess, under tests/reaper.py (a child
subreaper, as a proper init would be). It is hit while a network delay, a CPU stressor and a
frozen replica (pod-failure, SIGSTOP) are all active; afterwards /proc, the cgroup tree and the
state directory must show no stress-ng, proxy or replica process, no stopped process, no cgroup
and no journal of the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaos_local_support import (
    REAPER,
    RLCTL,
    Seen,
    leftovers,
    pids,
    require_binaries,
    require_cgroups,
    stopped_pids,
    wait_for_roles,
    write_scenario,
)

from chaos.backends.local import cleanup
from rlctl import cgroups

pytestmark = pytest.mark.real  # gosvc, stress-ng, cgroups, signals to an rlctl process


def _scenario(tmp_path: Path) -> Path:
    return write_scenario(
        tmp_path / "crash.yaml",
        name="crash-mid-fault",
        duration_s=60,
        slo_p99_ms=200,
        load={"kind": "constant", "qps": 40},
        faults=[
            {"name": "delay", "kind": "network-delay", "start_s": 2, "duration_s": 50, "params": {"latency_ms": 20}},
            {"name": "cpu", "kind": "cpu-stress", "start_s": 2, "duration_s": 50,
             "params": {"workers": 1, "load_percent": 50}},
            {"name": "freeze", "kind": "pod-failure", "start_s": 2, "duration_s": 50},
        ],
    )  # fmt: skip


class Runner:
    """``rlctl chaos run`` under the reaper; ``pid`` is the runner's own pid."""

    def __init__(self, tmp_path: Path, run_id: str, state_dir: Path) -> None:
        self.log = tmp_path / "runner.log"
        cmd = [str(RLCTL), "chaos", "run", str(_scenario(tmp_path)), "--backend", "local", "-c", "static",
               "--run-id", run_id, "--interval", "2", "--replica-cpu", "0.25"]  # fmt: skip
        env = {**os.environ, "RLCTL_STATE_DIR": str(state_dir)}
        self.proc = subprocess.Popen(
            [sys.executable, str(REAPER), str(self.log), "--", *cmd],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def exit_code(self, timeout_s: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("exit "):
                return int(line.split()[1])
        raise AssertionError(f"the runner did not exit within {timeout_s:g}s; log: {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    require_binaries()
    require_cgroups()
    return tmp_path / "state"


def _hit_mid_fault(tmp_path: Path, state_dir: Path, run_id: str, sig: signal.Signals) -> tuple[Runner, Seen, int]:
    root = require_cgroups().root
    # v1: the run must leave the hierarchy's own quota as it was (v2's root has no cpu.max).
    quota_before = None if cgroups.is_v2(root) else cgroups.quota(root)
    runner = Runner(tmp_path, run_id, state_dir)
    try:
        seen = wait_for_roles(state_dir / run_id, {"proxy", "replica", "stress-ng", "stopped"}, timeout_s=60)
        time.sleep(1.0)
        assert pids(seen, "stopped") <= set(stopped_pids()), "the frozen replica is not in T state"
        assert (root / "rlctl" / run_id).is_dir()
        os.kill(runner.pid, sig)
        code = runner.exit_code(timeout_s=40)
    except BaseException:
        runner.close()
        cleanup(run_id, state_dir=state_dir)
        raise
    assert (None if cgroups.is_v2(root) else cgroups.quota(root)) == quota_before
    return runner, seen, code


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_mid_fault_reverts_everything(tmp_path: Path, state_dir: Path, sig: signal.Signals) -> None:
    run_id = f"{sig.name.lower()}-{int(time.time())}"
    runner, seen, code = _hit_mid_fault(tmp_path, state_dir, run_id, sig)
    try:
        assert code == 130, runner.log.read_text()[-2000:]
        assert "every fault of run" in runner.log.read_text()
        time.sleep(0.5)
        assert leftovers(run_id, seen, state_dir) == []
        assert not set(stopped_pids()) & pids(seen)
        assert cleanup(run_id, state_dir=state_dir) == []  # nothing left to revert
    finally:
        runner.close()
        cleanup(run_id, state_dir=state_dir)


def test_sigkill_mid_fault_then_cleanup_reverts_everything(tmp_path: Path, state_dir: Path) -> None:
    run_id = f"sigkill-{int(time.time())}"
    runner, seen, code = _hit_mid_fault(tmp_path, state_dir, run_id, signal.SIGKILL)
    try:
        assert code == -9
        left = leftovers(run_id, seen, state_dir)
        assert any("stress-ng" in x for x in left) and any("proxy" in x for x in left), left
        assert set(stopped_pids()) & pids(seen), "the frozen replica should still be stopped before cleanup"
        done = cleanup(run_id, state_dir=state_dir)
        text = "\n".join(done)
        assert "resumed stopped process" in text
        assert "killed stress-ng process" in text and "killed proxy process" in text
        assert f"removed cgroup {require_cgroups().root / 'rlctl' / run_id}" in text
        assert f"removed journal {state_dir / run_id}" in text
        runner.close()  # lets the reaper collect what cleanup killed
        assert leftovers(run_id, seen, state_dir) == []
        assert not set(stopped_pids()) & pids(seen)
        assert cleanup(run_id, state_dir=state_dir) == []
    finally:
        runner.close()
        cleanup(run_id, state_dir=state_dir)
