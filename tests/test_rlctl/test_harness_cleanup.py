"""Every command family that starts gosvc leaves nothing behind after SIGKILL and ``rlctl chaos cleanup``.

Each test runs the real command in a subprocess under tests/reaper.py (a child subreaper, as
a proper init would be), waits until its journal lists the processes (and cgroups) it
started, SIGKILLs it mid-run, checks that they did outlive it (else the test proves
nothing), runs ``rlctl chaos cleanup --backend local`` (the real CLI, without a run id: it
picks the runs whose owner is dead) and then asserts that no process of the run exists
(neither a journaled pid with its start time nor one carrying the run's marker), that its
cgroups are gone and that its journal is removed. Everything is loopback and short.

Families: ``rlctl chaos run --backend local``, ``rlctl probe``, ``rlctl calibrate --serve``
(with ``--cgroup-quota-cores``), the boundary validation (``python -m
rlctl.boundary.validate --cpu-shares``) and the online end-to-end test-bed (``python -m
rlctl.online.e2e``: redis-server, replicas, load generators).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chaos_local_support import GOSVC, REAPER, RLCTL, require_cgroups, write_scenario

from rlctl.harness.journal import cleanup, marked_pids, proc_start_time, proc_state
from rlctl.online.procs import GoService

pytestmark = pytest.mark.real  # gosvc, redis-server, cgroups, rlctl processes killed with SIGKILL

PY = sys.executable


@dataclass
class Journaled:
    """What one run's journal listed while it ran."""

    run_id: str = ""
    procs: dict[tuple[str, int], int | None] = field(default_factory=dict)
    cgroups: set[Path] = field(default_factory=set)

    def roles(self) -> set[str]:
        return {role for role, _ in self.procs}

    def alive(self) -> list[str]:
        return [
            f"{role} {pid} (state {proc_state(pid)})"
            for (role, pid), start in self.procs.items()
            if start is not None and proc_start_time(pid) == start and proc_state(pid) not in ("Z", "X")
        ]


def _read_journals(state: Path, into: Journaled) -> None:
    for run in state.glob("*"):
        if not run.is_dir():
            continue
        for f in run.glob("[0-9]*-*.json"):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            into.run_id = run.name
            if d.get("kind") == "process" and d.get("pid"):
                into.procs[(d.get("role", "process"), int(d["pid"]))] = d.get("start_time")
                into.cgroups |= {Path(c) for c in d.get("cgroups", []) if c}
            elif d.get("kind") == "cgroup" and not d.get("only_if_empty"):  # not a parent shared with other runs
                into.cgroups.add(Path(d["path"]))


class Command:
    """A command under the reaper with its own state directory."""

    def __init__(self, tmp_path: Path, argv: list[str], state: Path) -> None:
        self.log = tmp_path / "command.log"
        self.env = {**os.environ, "RLCTL_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
        self.state = state
        self.proc = subprocess.Popen(
            [PY, str(REAPER), str(self.log), "--", *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def wait_for(self, roles: set[str], *, cgroups: int = 0, timeout_s: float = 60.0) -> Journaled:
        seen = Journaled()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _read_journals(self.state, seen)
            if roles <= seen.roles() and len(seen.cgroups) >= cgroups:
                return seen
            if self.proc.poll() is not None or proc_state(self.pid) in (None, "Z"):
                break
            time.sleep(0.2)
        raise AssertionError(
            f"the journal never listed {sorted(roles)} and {cgroups} cgroup(s) within {timeout_s:g}s: "
            f"{seen}; log: {self.log.read_text()[-2000:] if self.log.exists() else ''}"
        )

    def sigkill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.stdout.readline().startswith("exit "):
                return
        raise AssertionError("the command did not die from SIGKILL")

    def cleanup_cli(self) -> str:
        out = subprocess.run(
            [str(RLCTL), "chaos", "cleanup", "--backend", "local"],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _kill_and_clean(cmd: Command, seen: Journaled, *, roles: set[str]) -> tuple[str, float]:
    """SIGKILL the command, check ``roles`` outlived it, clean up with the CLI; returns its output and seconds."""
    time.sleep(0.5)
    _read_journals(cmd.state, seen)
    cmd.sigkill()
    alive = seen.alive()
    assert {s.split()[0] for s in alive} >= roles, f"expected {roles} to outlive the command, alive: {alive}"
    for group in seen.cgroups:
        assert group.is_dir(), f"{group} should still exist before cleanup"
    t0 = time.monotonic()
    text = cmd.cleanup_cli()
    took = time.monotonic() - t0
    cmd.close()  # the reaper collects what cleanup killed
    return text, took


def _assert_nothing_left(cmd: Command, seen: Journaled) -> None:
    time.sleep(0.3)
    assert seen.alive() == [], f"processes of {seen.run_id} survived cleanup: {seen.alive()}"
    assert marked_pids(seen.run_id) == {}, f"marked processes of {seen.run_id} survived: {marked_pids(seen.run_id)}"
    left = [str(g) for g in seen.cgroups if g.exists()]
    assert left == [], f"cgroups of {seen.run_id} survived cleanup: {left}"
    assert not (cmd.state / seen.run_id).exists(), f"journal {seen.run_id} is still there"


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (GOSVC.is_file() and os.access(GOSVC, os.X_OK)):
        pytest.fail(f"{GOSVC} is missing: build the Go test-bed with `make gosvc`", pytrace=False)
    state = tmp_path / "state"
    yield state
    cleanup(all=True, state_dir=state)  # whatever a failed test left


def _run(
    tmp_path: Path, state: Path, argv: list[str], roles: set[str], *, survivors: set[str], cgroups: int = 0
) -> None:
    """Wait for ``roles`` (and ``cgroups``) in the journal, SIGKILL; ``survivors`` must outlive the command."""
    cmd = Command(tmp_path, argv, state)
    try:
        seen = cmd.wait_for(roles, cgroups=cgroups, timeout_s=90)
        text, took = _kill_and_clean(cmd, seen, roles=survivors)
        assert f"removed journal {state / seen.run_id}" in text, text
        for group in seen.cgroups:
            assert f"removed cgroup {group}" in text, text
        # A process writing to the dead command's pipe may die of SIGPIPE first; these do not.
        for role in survivors - {"loadgen"}:
            assert f"killed {role} process" in text, text
        _assert_nothing_left(cmd, seen)
        (tmp_path / "cleanup.txt").write_text(text)
        print(f"{argv[1:3]}: cleanup took {took:.2f}s: {text.strip()!r}")
    finally:
        cmd.close()


def test_chaos_run_local_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    require_cgroups()
    scenario = write_scenario(
        tmp_path / "s.yaml", name="harness-kill", duration_s=60, slo_p99_ms=200, load={"kind": "constant", "qps": 40},
        faults=[{"name": "delay", "kind": "network-delay", "start_s": 1, "duration_s": 50,
                 "params": {"latency_ms": 5}}],
    )  # fmt: skip
    argv = [str(RLCTL), "chaos", "run", str(scenario), "--backend", "local", "-c", "static",
            "--run-id", f"harness-{os.getpid()}", "--interval", "2", "--replica-cpu", "0.25"]  # fmt: skip
    # The load generator writes every sample into the dead runner's pipe: it may die of SIGPIPE before cleanup.
    _run(tmp_path, state, argv, {"proxy", "replica", "loadgen"}, survivors={"proxy", "replica"}, cgroups=1)


def test_chaos_run_local_with_cpu_split_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    """With --replica-cpus the journals list the cpusets too (the harness's, the replicas' v1 twins); all go."""
    found = require_cgroups()
    scenario = write_scenario(
        tmp_path / "s.yaml", name="harness-kill-split", duration_s=60, slo_p99_ms=200,
        load={"kind": "constant", "qps": 40}, faults=[],
    )  # fmt: skip
    argv = [str(RLCTL), "chaos", "run", str(scenario), "--backend", "local", "-c", "static",
            "--run-id", f"cpusplit-{os.getpid()}", "--interval", "2", "--replica-cpu", "0.25",
            "--max-replicas", "4", "--replica-cpus", "auto"]  # fmt: skip
    cpuset_root = found.cpuset_root if found.version == 1 else found.root
    assert cpuset_root is not None
    cmd = Command(tmp_path, argv, state)
    try:
        # the run's cpu group, its cpuset twin (v1) and the harness's cpuset
        seen = cmd.wait_for({"proxy", "replica", "loadgen"}, cgroups=3 if found.version == 1 else 2, timeout_s=90)
        harness = [g for g in seen.cgroups if g.name.startswith("harness-chaos-run-")]
        assert len(harness) == 1 and harness[0].parent == cpuset_root / "rlctl", seen.cgroups
        if found.version == 1:
            assert cpuset_root / "rlctl" / f"cpusplit-{os.getpid()}" in seen.cgroups, seen.cgroups
        replica_pids = [pid for role, pid in seen.procs if role == "replica"]
        status = Path(f"/proc/{replica_pids[0]}/status").read_text()
        assert "Cpus_allowed_list:\t1\n" in status  # the default split of this 2-vCPU host
        text, _ = _kill_and_clean(cmd, seen, roles={"proxy", "replica"})
        # The replicas' groups (and on v1 the run's cpuset twin) go with the run's group, in the same rmdir pass.
        assert f"removed cgroup {harness[0]}" in text, text
        assert f"removed cgroup {found.root / 'rlctl' / f'cpusplit-{os.getpid()}'}" in text, text
        _assert_nothing_left(cmd, seen)
        assert [p.name for p in state.iterdir()] == [], "every journal (the run's and the session's) is removed"
    finally:
        cmd.close()


def test_probe_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    with GoService(["--cpu-us", "100"]) as svc:
        # 5 s intervals: the load generator writes nothing to the dead probe's pipe before cleanup.
        argv = [str(RLCTL), "probe", svc.url, "--ramp", "20,20,10", "--max-qps", "400", "--interval-s", "5",
                "--quiet", "--json", str(tmp_path / "probe.json")]  # fmt: skip
        _run(tmp_path, state, argv, {"loadgen"}, survivors={"loadgen"})
        assert "killed loadgen process" in (tmp_path / "cleanup.txt").read_text()
        assert svc.alive(), "cleanup must not touch processes of other runs"


def test_calibrate_serve_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    require_cgroups()
    argv = [str(RLCTL), "calibrate", "--serve=--cpu-us 200", "--cgroup-quota-cores", "0.5",
            "--json", str(tmp_path / "cal.json"), "--profile", str(tmp_path / "p.yaml"),
            "--step-s", "5", "--interval-s", "0.5"]  # fmt: skip
    # A load-generator step lasts a second: only the service is sure to be running at the kill.
    _run(tmp_path, state, argv, {"gosvc-serve", "loadgen"}, survivors={"gosvc-serve"}, cgroups=1)


def test_boundary_validate_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    require_cgroups()
    argv = [PY, "-m", "rlctl.boundary.validate", "--json", str(tmp_path / "v.json"), "--configs", "cpu",
            "--iters-per-us", "600", "--cpu-shares", "2048", "--logs", str(tmp_path / "logs")]  # fmt: skip
    _run(tmp_path, state, argv, {"gosvc-serve", "loadgen"}, survivors={"gosvc-serve", "loadgen"}, cgroups=1)


def test_online_e2e_testbed_killed_then_cleaned(tmp_path: Path, state: Path) -> None:
    argv = [PY, "-m", "rlctl.online.e2e", "--policy", "hpa", "--warm-s", "120", "--step-s", "5",
            "--low-qps", "50", "--cpu-us", "100", "--out", str(tmp_path / "e2e")]  # fmt: skip
    # The load generator reports every second into the dead run's pipe: it may die of SIGPIPE before cleanup.
    roles = {"redis-server", "gosvc-serve", "loadgen"}
    _run(tmp_path, state, argv, roles, survivors={"redis-server", "gosvc-serve"})
