"""rlctl.cgroups on cgroup v1 and v2.

Which test uses what:

- ``test_v1_real_*``: the real cgroup v1 ``cpu`` (and ``cpuset``) controllers of this host
  (needs root and a v1 host; fails, not skips, on a v1 host where they are not writable).
- ``test_v2_real_mount_*``: a real ``cgroup2`` mount in a private mount namespace
  (``unshare -m`` + ``mount -t cgroup2``), exercising what that mount offers: mkdir/rmdir,
  ``cgroup.procs``, ``cgroup.subtree_control`` and the kernel's "no internal processes" rule.
  On a host whose cpu controller is bound to cgroup v1 the mount offers no ``cpu``, so it
  uses another domain controller offered there (e.g. hugetlb) for the subtree rules and
  checks that CPU quotas are refused with the one clear error; with ``cpu`` offered it also
  sets ``cpu.max`` and reads real throttling. Skipped only where the kernel refuses the mount.
- ``test_v2_fixture_*``: a directory fixture reproducing the kernel's v2 file formats
  (``cpu.max``, ``cpu.stat``, ``cpuset.cpus``, ``cpu.weight``, ``cgroup.subtree_control``);
  always runs, so the v2 file protocol is tested even where no real mount is possible.
- ``test_no_writable_*``: the one error where no hierarchy is writable (a missing root; a
  v2 mount without the cpu controller; the real v1 controller seen by an unprivileged user).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlctl import cgroups
from rlctl.errors import ConfigError

V1 = cgroups.V1_CPU_ROOT
SPIN = [sys.executable, "-c", "while True: pass"]

# Kernel formats (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/cpusets.rst, sched-bwc.rst).
V2_CPU_STAT = (
    "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\ncore_sched.force_idle_usec 0\n"
    "nr_periods 40\nnr_throttled 4\nthrottled_usec 250000\nnr_bursts 0\nburst_usec 0\n"
)
V2_CPU_STAT_NO_CPU_CONTROLLER = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n"
V1_CPU_STAT = "nr_periods 100\nnr_throttled 25\nthrottled_time 1500000000\nnr_bursts 0\nburst_time 0\n"


def _cgroup_line(pid: int, hierarchy: str) -> str:
    """The path of ``pid`` in one hierarchy of /proc/PID/cgroup ("cpu" for v1 cpu, "" for v2)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if hierarchy in (controllers.split(",") if hierarchy else [controllers]):
            return path
    return "?"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


# ----------------------------------------------------------------------------- v1, for real


def _require_v1() -> cgroups.Cgroups:
    if not (V1 / "cpu.cfs_quota_us").exists():
        pytest.skip(f"not a cgroup v1 host ({V1} has no cpu.cfs_quota_us): the v2 tests cover this host")
    found = cgroups.detect()  # a v1 host where this fails is a test failure: the error says why
    assert found.version == 1 and found.root == V1
    return found


@pytest.mark.real  # the host's cgroups
def test_v1_real_quota_process_throttling_and_removal() -> None:
    """A 0.1-core group on the real v1 cpu controller throttles a spinning process; remove evacuates it."""
    hierarchy = _require_v1()
    name = f"rlctl-test-cgroups-{os.getpid()}"
    spin = subprocess.Popen(SPIN)
    group = V1 / name
    try:
        group = hierarchy.create(name, quota_cores=0.1)
        assert group == V1 / name and not cgroups.is_v2(group)
        assert cgroups.quota(group) == (10_000, 100_000)
        assert cgroups.quota_cores(group) == pytest.approx(0.1)
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "10000"
        cgroups.add(group, spin.pid)
        assert cgroups.procs(group) == [spin.pid]
        assert _cgroup_line(spin.pid, "cpu") == f"/{name}"
        deadline = time.monotonic() + 5.0
        stats = cgroups.throttling(group)
        while (stats is None or stats.throttled_periods < 3) and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = cgroups.throttling(group)
        assert stats is not None and stats.throttled_periods >= 3, stats
        assert stats.periods >= stats.throttled_periods
        # ~90 ms of every 100 ms period throttled: nanoseconds were turned into seconds.
        assert 0.05 * stats.throttled_periods < stats.throttled_s < 0.1 * stats.throttled_periods + 0.05
        cgroups.set_quota(group, None)
        assert cgroups.quota_cores(group) is None and (group / "cpu.cfs_quota_us").read_text().strip() == "-1"
        # Removal while the process still runs: it goes back to the root group, then the group goes.
        assert cgroups.remove(group) is True
        assert not group.exists()
        assert spin.poll() is None and _cgroup_line(spin.pid, "cpu") == "/"
        assert cgroups.remove(group) is False
    finally:
        _stop(spin)
        cgroups.remove(group)
    assert not group.exists()


@pytest.mark.real  # the host's cgroups
def test_v1_real_cpuset_twin_pins_the_process_and_is_removed() -> None:
    """v1 cpusets live in a second hierarchy: the twin gets cpus and mems before the task joins."""
    hierarchy = _require_v1()
    if hierarchy.cpuset_root is None:
        pytest.skip("no cgroup v1 cpuset controller mounted next to the cpu one")
    name = f"rlctl-test-cpuset-{os.getpid()}/leaf"
    sleeper = subprocess.Popen(["sleep", "30"])
    top = V1 / name.split("/")[0]
    twin_top = hierarchy.cpuset_root / name.split("/")[0]
    try:
        group = hierarchy.create(name, quota_cores=0.5, cpus="0")
        twin = hierarchy.cpuset_root / name
        assert (twin / "cpuset.cpus").read_text().strip() == "0"
        assert (twin / "cpuset.mems").read_text().strip() == (hierarchy.cpuset_root / "cpuset.mems").read_text().strip()
        assert cgroups.cpus(group) == "0"
        assert cgroups.procs_files(group) == [group / "cgroup.procs", twin / "cgroup.procs"]
        cgroups.add(group, sleeper.pid)
        status = Path(f"/proc/{sleeper.pid}/status").read_text()
        assert "Cpus_allowed_list:\t0\n" in status
        assert _cgroup_line(sleeper.pid, "cpuset") == f"/{name}"
        cgroups.remove(top)
        assert not top.exists() and not twin_top.exists()
        assert _cgroup_line(sleeper.pid, "cpuset") == "/" and _cgroup_line(sleeper.pid, "cpu") == "/"
    finally:
        _stop(sleeper)
        cgroups.remove(top)
        if twin_top.exists():
            cgroups.remove(twin_top)


# ----------------------------------------------------------------------------- v2, a real mount


def _inside_cgroup2_mount(mnt: Path) -> dict[str, object]:
    """Runs in the private mount namespace, ``mnt`` a fresh cgroup2 mount; returns what it saw."""
    offered = (mnt / "cgroup.controllers").read_text().split()
    seen: dict[str, object] = {"offered": offered}
    if "cpu" in offered:
        ctl = "cpu"
    else:
        # The cpu controller is bound to v1 here: quotas must be refused with the clear error...
        try:
            cgroups.detect(mnt)
            raise AssertionError("detect() accepted a cgroup2 mount without the cpu controller")
        except ConfigError as exc:
            seen["cpu_refused"] = str(exc)
        # ...and the subtree rules are tested with a domain controller the mount does offer.
        ctl = next((c for c in ("pids", "memory", "io", "hugetlb", "rdma", "misc") if c in offered), "")
    seen["controller"] = ctl
    root_before = (mnt / "cgroup.subtree_control").read_text().split()
    run = f"rlctl/test-{os.getpid()}"
    sleeper = subprocess.Popen(["sleep", "30"])
    created_rlctl = not (mnt / "rlctl").exists()
    try:
        hierarchy = cgroups.detect(mnt, controllers=(ctl,) if ctl else ())
        assert hierarchy.version == 2 and hierarchy.root == mnt, hierarchy
        leaf = hierarchy.create(f"{run}/r0", quota_cores=0.25 if ctl == "cpu" else None)
        assert cgroups.is_v2(leaf) and (leaf / "cgroup.controllers").exists()
        if ctl:
            # The kernel only shows a controller in a child once the parent offers it.
            for node in (mnt, mnt / "rlctl", mnt / run):
                assert ctl in (node / "cgroup.subtree_control").read_text().split(), node
            assert ctl in (leaf / "cgroup.controllers").read_text().split()
        cgroups.add(leaf, sleeper.pid)
        assert cgroups.procs(leaf) == [sleeper.pid]
        seen["proc_cgroup"] = _cgroup_line(sleeper.pid, "")
        if ctl:
            # "No internal processes": an inner node that offers controllers refuses tasks.
            try:
                cgroups.add(mnt / run, sleeper.pid)
                seen["internal_process"] = "accepted"
            except OSError as exc:
                seen["internal_process"] = f"refused: {exc.strerror}"
        if ctl == "cpu":
            assert (leaf / "cpu.max").read_text() == "25000 100000\n"
            seen["throttling"] = str(cgroups.throttling(leaf))
        else:
            # cpu.stat exists without the cpu controller but has no throttling counters.
            assert "nr_throttled" not in (leaf / "cpu.stat").read_text()
            assert cgroups.throttling(leaf) is None
        # rmdir of a populated v2 group fails: remove() must move the task to the root first.
        try:
            leaf.rmdir()
            seen["rmdir_populated"] = "accepted"
        except OSError as exc:
            seen["rmdir_populated"] = f"refused: {exc.strerror}"
        assert cgroups.remove(mnt / run) is True
        assert not (mnt / run).exists()
        seen["after_remove"] = _cgroup_line(sleeper.pid, "")
        assert sleeper.poll() is None
    finally:
        _stop(sleeper)
        cgroups.remove(mnt / run)
        if created_rlctl:
            cgroups.remove(mnt / "rlctl")
        # The v2 hierarchy is the host's one: give the root back the controllers it offered.
        for c in (mnt / "cgroup.subtree_control").read_text().split():
            if c not in root_before:
                (mnt / "cgroup.subtree_control").write_text(f"-{c}")
    return seen


@pytest.mark.real  # the host's cgroups
def test_v2_real_mount_in_a_private_namespace(tmp_path: Path) -> None:
    """A real cgroup2 mount (private mount namespace): groups, leaves, subtree control, removal."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or "cgroup2" not in Path("/proc/filesystems").read_text():
        pytest.skip("a private cgroup2 mount needs root, unshare(1) and cgroup2 in /proc/filesystems")
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    out = tmp_path / "seen.json"
    script = 'mount -t cgroup2 none "$1" || exit 99; exec "$2" "$3" --inside-cgroup2-mount "$1" "$4"'
    argv = [unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", str(mnt), sys.executable,
            __file__, str(out)]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    if r.returncode == 99 or ("Operation not permitted" in r.stderr and not out.exists()):
        pytest.skip(f"the kernel refused a private cgroup2 mount: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(out.read_text())
    print("real cgroup2 mount:", json.dumps(seen))
    assert seen["proc_cgroup"].endswith(f"/rlctl/test-{seen['pid']}/r0"), seen
    assert seen["after_remove"] == "/", seen  # evacuated to the root group, not killed
    assert seen["rmdir_populated"].startswith("refused"), seen
    if seen["controller"]:
        assert seen["internal_process"].startswith("refused"), seen
    if "cpu" not in seen["offered"]:
        assert "offers" in seen["cpu_refused"] and "(no cpu)" in seen["cpu_refused"], seen
        assert "RLCTL_CGROUP_ROOT" in seen["cpu_refused"], seen


# ----------------------------------------------------------------------------- v2, a fixture


def _v2_node(path: Path, *, controllers: str, cpu: bool) -> Path:
    """One cgroup v2 directory as the kernel populates it (a fixture: plain files)."""
    path.mkdir(parents=True, exist_ok=True)
    files = {"cgroup.controllers": f"{controllers}\n", "cgroup.subtree_control": "\n", "cgroup.procs": "",
             "cgroup.type": "domain\n", "cpu.stat": V2_CPU_STAT if cpu else V2_CPU_STAT_NO_CPU_CONTROLLER}  # fmt: skip
    if cpu:
        files |= {"cpu.max": "max 100000\n", "cpu.weight": "100\n", "cpuset.cpus": "\n", "cpuset.mems": "\n"}
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def v2_tree(tmp_path: Path) -> Path:
    """``root/rlctl/run/r0`` of a cgroup v2 host, files in the kernel's formats, before rlctl writes."""
    root = _v2_node(tmp_path / "cgroup", controllers="cpuset cpu io memory hugetlb pids rdma misc", cpu=True)
    _v2_node(root / "rlctl", controllers="cpuset cpu", cpu=True)
    _v2_node(root / "rlctl" / "run", controllers="cpuset cpu", cpu=True)
    _v2_node(root / "rlctl" / "run" / "r0", controllers="cpuset cpu", cpu=True)
    return root


def test_v2_fixture_detect_create_quota_weight_cpuset_and_procs(v2_tree: Path) -> None:
    """The v2 file protocol: detection, subtree_control on every inner node, cpu.max, cpu.weight, cpuset.cpus."""
    hierarchy = cgroups.detect(v2_tree)
    assert (hierarchy.version, hierarchy.root, hierarchy.controllers) == (2, v2_tree, ("cpu",))
    leaf = hierarchy.create("rlctl/run/r0", quota_cores=0.5, shares=16384, cpus="0-1")
    assert leaf == v2_tree / "rlctl" / "run" / "r0"
    # Controllers are offered on the way down (root, rlctl, run), never in the leaf.
    for node in (v2_tree, v2_tree / "rlctl", v2_tree / "rlctl" / "run"):
        assert (node / "cgroup.subtree_control").read_text() == "+cpu +cpuset", node
    assert (leaf / "cgroup.subtree_control").read_text() == "\n"
    assert (leaf / "cpu.max").read_text() == "50000 100000\n"
    assert cgroups.quota(leaf) == (50_000, 100_000) and cgroups.quota_cores(leaf) == 0.5
    assert (leaf / "cpu.weight").read_text() == "1600\n"  # 16 x the default of 1024 shares = 16 x 100
    assert (leaf / "cpuset.cpus").read_text() == "0-1\n" and cgroups.cpus(leaf) == "0-1"
    assert not (leaf / "cpu.cfs_quota_us").exists()
    cgroups.set_quota(leaf, None)
    assert (leaf / "cpu.max").read_text() == "max 100000\n" and cgroups.quota(leaf) == (-1, 100_000)
    cgroups.set_quota(leaf, 0.0001)
    assert (leaf / "cpu.max").read_text() == "1000 100000\n"  # the kernel's minimum quota
    assert cgroups.quota_file(leaf) == leaf / "cpu.max"
    assert cgroups.procs_files(leaf) == [leaf / "cgroup.procs"]
    cgroups.add(leaf, 4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"


def test_v2_fixture_subtree_control_already_offered_is_not_rewritten(v2_tree: Path) -> None:
    """An inner node that already offers cpu (the kernel shows "cpu", no "+") is left alone."""
    for node in (v2_tree, v2_tree / "rlctl", v2_tree / "rlctl" / "run"):
        (node / "cgroup.subtree_control").write_text("cpuset cpu io\n")
    cgroups.detect(v2_tree).create("rlctl/run/r0", quota_cores=1.0)
    for node in (v2_tree, v2_tree / "rlctl", v2_tree / "rlctl" / "run"):
        assert (node / "cgroup.subtree_control").read_text() == "cpuset cpu io\n"


def test_v2_fixture_throttling_units_are_normalised(v2_tree: Path, tmp_path: Path) -> None:
    """v2 throttled_usec (µs) and v1 throttled_time (ns) both come back in seconds."""
    leaf = v2_tree / "rlctl" / "run" / "r0"
    assert cgroups.throttling(leaf) == cgroups.Throttling(periods=40, throttled_periods=4, throttled_s=0.25)
    (leaf / "cpu.stat").write_text(V2_CPU_STAT_NO_CPU_CONTROLLER)
    assert cgroups.throttling(leaf) is None  # cpu not offered by the parent: no counters
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cgroup.procs").write_text("")
    (v1 / "cpu.stat").write_text(V1_CPU_STAT)
    assert cgroups.throttling(v1) == cgroups.Throttling(periods=100, throttled_periods=25, throttled_s=1.5)


def test_v2_fixture_journal_restores_cpu_max(v2_tree: Path, tmp_path: Path) -> None:
    """``rlctl chaos cleanup`` restores a journaled v2 quota through cpu.max (no cpu.cfs_* files on v2)."""
    from rlctl.harness.journal import Journal, revert_journal

    leaf = v2_tree / "rlctl" / "run" / "r0"
    journal = Journal.open("cg2-fixture", tmp_path / "state")
    quota_us, period_us = cgroups.quota(leaf)
    journal.record("quota", path=str(leaf), quota_us=quota_us, period_us=period_us)
    cgroups.set_quota(leaf, 0.25)
    done = revert_journal(journal)
    assert f"restored {leaf}/cpu.max to -1" in done
    assert (leaf / "cpu.max").read_text() == "max 100000\n"


def test_detect_prefers_a_v1_cpu_controller_on_hybrid_hosts(tmp_path: Path) -> None:
    """systemd's hybrid layout: v1 cpu at root/cpu and an empty cgroup2 at root/unified -> v1."""
    (tmp_path / "cpu").mkdir()
    for name, text in {"cgroup.procs": "", "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}.items():
        (tmp_path / "cpu" / name).write_text(text)
    _v2_node(tmp_path / "unified", controllers="", cpu=False)
    found = cgroups.detect(tmp_path)
    assert (found.version, found.root, found.cpuset_root) == (1, tmp_path / "cpu", None)
    assert cgroups.detect(tmp_path / "cpu").root == tmp_path / "cpu"  # the cpu mount itself as the root


def test_detect_reads_the_root_from_the_environment(v2_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cgroups.ROOT_ENV, str(v2_tree))
    assert cgroups.detect().root == v2_tree


def test_create_refuses_a_name_outside_the_root(v2_tree: Path) -> None:
    with pytest.raises(ConfigError, match="must name a group below"):
        cgroups.detect(v2_tree).create("../elsewhere")


# ----------------------------------------------------------------------------- nothing writable


def test_no_writable_hierarchy_at_a_missing_root_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-cgroups-here"
    with pytest.raises(ConfigError) as info:
        cgroups.detect(missing, purpose="per-replica CPU quotas", alternative="--replica-cpu 0")
    msg = str(info.value)
    assert msg.startswith(
        f"per-replica CPU quotas need a writable cgroup CPU controller, and none was found under {missing} (given root)"
    )
    assert f"no cgroup v1 cpu controller at {missing / 'cpu'}" in msg
    assert f"no cgroup v2 hierarchy at {missing}" in msg
    assert "Run as root" in msg and "RLCTL_CGROUP_ROOT" in msg and "--replica-cpu 0" in msg


def test_no_writable_hierarchy_v2_without_cpu_names_what_it_offers(tmp_path: Path) -> None:
    _v2_node(tmp_path, controllers="memory pids", cpu=False)
    with pytest.raises(ConfigError, match=r"is cgroup v2 but offers memory pids \(no cpu\)"):
        cgroups.detect(tmp_path)


@pytest.mark.real  # the host's cgroups
def test_no_writable_hierarchy_for_an_unprivileged_user_on_the_real_v1_controller() -> None:
    """The real v1 controller, seen by uid 65534: not writable, so the one error (exit 2 via ConfigError)."""
    # The venv's interpreter may sit in root's home: use the system's, which any user can run
    # (rlctl.cgroups needs only the standard library and rlctl.errors).
    python = "/usr/bin/python3"
    if not (V1 / "cpu.cfs_quota_us").exists() or os.geteuid() != 0 or not os.access(python, os.X_OK):
        pytest.skip("needs root (to switch user), /usr/bin/python3 and the cgroup v1 cpu controller")
    code = (
        "import sys\nfrom rlctl import cgroups\nfrom rlctl.errors import ConfigError\n"
        "try:\n    cgroups.detect(purpose='per-replica CPU quotas', alternative='--replica-cpu 0')\n"
        "except ConfigError as exc:\n    print(f'{type(exc).__name__}: {exc}')\n    sys.exit(exc.exit_code)\n"
    )
    # The checkout may not be readable by that user (a 0700 temporary folder in CI): give it a
    # world-readable copy of the three modules the check imports.
    shared = Path(tempfile.mkdtemp(prefix="rlctl-nobody-"))
    try:
        (shared / "rlctl").mkdir()
        for name in ("__init__.py", "errors.py", "cgroups.py"):
            shutil.copy(Path(cgroups.__file__).parent / name, shared / "rlctl" / name)
        for path in (shared, shared / "rlctl", *(shared / "rlctl").iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(shared)}
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                           user=65534, group=65534, cwd="/")  # fmt: skip
    finally:
        shutil.rmtree(shared)
    assert r.returncode == 2, r.stderr
    assert r.stdout.startswith("ConfigError: per-replica CPU quotas need a writable cgroup CPU controller")
    assert f"{V1} is the cgroup v1 cpu controller but not writable" in r.stdout


def test_replica_manager_setup_raises_the_one_error(tmp_path: Path) -> None:
    """The chaos backend's replica manager passes its root through and names its own way out."""
    from chaos.backends.local.replicas import ReplicaManager
    from rlctl.contract import Knobs

    mgr = ReplicaManager("gosvc", None, None, Knobs(), quota_cores=0.5, cgroup_root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"per-replica CPU quotas need .* --replica-cpu 0"):
        mgr.setup()


# ----------------------------------------------------------------------------- the replica / harness split


def test_cpu_list_round_trip_and_errors() -> None:
    assert cgroups.parse_cpu_list("0-2,5, 7") == (0, 1, 2, 5, 7)
    assert cgroups.format_cpu_list((7, 0, 1, 2, 5, 1)) == "0-2,5,7"
    with pytest.raises(ConfigError, match=r"--replica-cpus '1-x' is not a CPU list"):
        cgroups.parse_cpu_list("1-x", source="--replica-cpus")
    with pytest.raises(ConfigError, match="is not a CPU list"):
        cgroups.parse_cpu_list("3-1")


def test_cpu_split_default_explicit_and_refusals() -> None:
    two = (0, 1)
    split = cgroups.CpuSplit.resolve(online=two)
    assert split is not None and (split.replica, split.harness) == ((1,), (0,))  # this host's default
    eight = cgroups.CpuSplit.resolve(online=tuple(range(8)))
    assert eight is not None and (eight.replica_list, eight.harness_list) == ("2-7", "0-1")
    given = cgroups.CpuSplit.resolve("2-3", "auto", online=(0, 1, 2, 3))
    assert given is not None and (given.replica_list, given.harness_list) == ("2-3", "0-1")
    assert "--replica-cpus 2-3" in given.source
    assert cgroups.CpuSplit.resolve("off", "auto", online=two) is None
    with pytest.raises(ConfigError, match=r"CPU 1 is in both sets"):
        cgroups.CpuSplit.resolve("1", "0-1", online=two)
    with pytest.raises(ConfigError, match=r"--replica-cpus 5: CPU 5 is not online \(online: 0-1\)"):
        cgroups.CpuSplit.resolve("5", "0", online=two)
    with pytest.raises(ConfigError, match="leaves --harness-cpus no CPU"):
        cgroups.CpuSplit.resolve("0-1", "auto", online=two)
    with pytest.raises(ConfigError, match="one online CPU"):
        cgroups.CpuSplit.resolve(online=(0,))


def test_cpu_split_refuses_quotas_over_the_replica_set() -> None:
    """The sum of replica quotas at the most replicas must fit the set: exit 2, value, source, fix."""
    split = cgroups.CpuSplit.resolve(online=(0, 1))
    assert split is not None
    split.check_quotas(0.25, 4, quota_source="--replica-cpu", max_source="--max-replicas")  # exactly one core
    with pytest.raises(ConfigError) as info:
        split.check_quotas(0.25, 5, quota_source="--replica-cpu", max_source="--max-replicas")
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert msg.startswith("--replica-cpu 0.25 x --max-replicas 5 = 1.25 cores of quota, more than the replicas'")
    assert "CPU 1: 1 core, from the default split of 2 online CPUs" in msg
    assert "lower --replica-cpu to at most 0.2" in msg and "lower --max-replicas to at most 4" in msg
    with pytest.raises(ConfigError, match="no quota"):
        split.check_quotas(None, 4, quota_source="--replica-cpu", max_source="--max-replicas")


def test_v2_fixture_cpuset_only_group_offers_cpuset_on_every_parent(v2_tree: Path) -> None:
    """v2: a cpuset-only group (the harness's) needs +cpuset, not +cpu, in every parent's subtree_control."""
    hierarchy = cgroups.detect(v2_tree, controllers=("cpu", "cpuset"))
    assert hierarchy.controllers == ("cpu", "cpuset")
    group = hierarchy.create_cpuset("rlctl/harness-x", "0")
    assert group == v2_tree / "rlctl" / "harness-x" == hierarchy.cpuset_path("rlctl/harness-x")
    for node in (v2_tree, v2_tree / "rlctl"):
        assert (node / "cgroup.subtree_control").read_text() == "+cpuset", node
    assert (group / "cpuset.cpus").read_text() == "0\n" and cgroups.cpus(group) == "0"
    assert not (group / "cpu.max").exists()  # no quota written, no cpu controller asked for


def test_v2_fixture_harness_isolation_journals_its_cpuset(v2_tree: Path, tmp_path: Path) -> None:
    """HarnessIsolation on v2: the group is journaled before it exists, with the split's harness CPUs."""
    from rlctl.harness.isolation import CGROUP, HarnessIsolation
    from rlctl.harness.journal import Journal

    journal = Journal.open("iso-v2-fixture", tmp_path / "state")
    split = cgroups.CpuSplit.resolve("1", "0", online=(0, 1))
    assert split is not None
    iso = HarnessIsolation(split, journal=journal, cgroup_root=v2_tree)
    iso._enter_cgroup(cgroups.detect(v2_tree, controllers=("cpu", "cpuset")))  # the fixture cannot hold tasks
    assert iso.mode == CGROUP and iso.group == v2_tree / "rlctl" / "harness-iso-v2-fixture"
    assert (iso.group / "cpuset.cpus").read_text() == "0\n"
    assert (v2_tree / "cgroup.subtree_control").read_text() == "+cpuset"
    assert (iso.group / "cgroup.procs").read_text() != ""  # this process (and its children) written there
    paths = {e["path"]: e for e in journal.entries() if e["kind"] == "cgroup"}
    assert str(iso.group) in paths and paths[str(iso.group)]["cpuset"] is True


@pytest.mark.real  # the host's cgroups
def test_v1_real_harness_isolation_pins_this_process_and_its_children_then_restores() -> None:
    """v1: the harness cpuset holds this process; a child started inside is born on the harness CPUs."""
    from rlctl.harness.isolation import CGROUP, HarnessIsolation
    from rlctl.harness.journal import Journal, revert_journal

    hierarchy = _require_v1()
    if hierarchy.cpuset_root is None or len(cgroups.online_cpus()) < 2:
        pytest.fail("this v1 host needs the cpuset controller and 2 CPUs for the split", pytrace=False)
    split = cgroups.CpuSplit.resolve()
    assert split is not None
    before = os.sched_getaffinity(0)
    state = Path(tempfile.mkdtemp(prefix="rlctl-iso-"))
    journal = Journal.open(f"iso-v1-{os.getpid()}", state)
    try:
        with HarnessIsolation(split, journal=journal) as iso:
            assert iso.mode == CGROUP and iso.group is not None
            assert iso.group.parent.parent == hierarchy.cpuset_root  # cpuset hierarchy only, no cpu group
            assert not (V1 / "rlctl" / iso.group.name).exists()
            assert os.sched_getaffinity(0) == set(split.harness)
            child = subprocess.Popen(["sleep", "30"])
            try:
                allowed = Path(f"/proc/{child.pid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
                assert allowed == split.harness_list
                assert _cgroup_line(child.pid, "cpuset") == f"/rlctl/{iso.group.name}"
            finally:
                _stop(child)
            assert [e["path"] for e in journal.entries()][-1] == str(iso.group)
            with HarnessIsolation(split, journal=journal) as inner:  # nested: a no-op
                assert inner.group == iso.group
            assert iso.group.is_dir()
        assert not iso.group.exists()
        assert os.sched_getaffinity(0) == before
        assert _cgroup_line(os.getpid(), "cpuset") == "/"
    finally:
        revert_journal(journal)


@pytest.mark.real  # sched_setaffinity of this process
def test_harness_isolation_falls_back_to_affinity_without_cgroups(tmp_path: Path) -> None:
    """No writable cgroup: the harness is pinned by sched_setaffinity, and the mask comes back afterwards."""
    from rlctl.harness.isolation import AFFINITY, HarnessIsolation
    from rlctl.harness.journal import Journal

    if len(cgroups.online_cpus()) < 2:
        pytest.fail("the split needs 2 online CPUs", pytrace=False)
    split = cgroups.CpuSplit.resolve()
    assert split is not None
    before = os.sched_getaffinity(0)
    journal = Journal.open("iso-affinity", tmp_path / "state")
    with HarnessIsolation(split, journal=journal, cgroup_root=tmp_path / "none") as iso:
        assert iso.mode == AFFINITY and "sched_setaffinity" in iso.detail
        assert os.sched_getaffinity(0) == set(split.harness)
        out = subprocess.run(["grep", "Cpus_allowed_list", "/proc/self/status"], capture_output=True, text=True)
        assert out.stdout.split()[-1] == split.harness_list
    assert os.sched_getaffinity(0) == before
    assert journal.entries() == []
    strict = HarnessIsolation(split, journal=journal, cgroup_root=tmp_path / "none", allow_affinity=False)
    with pytest.raises(ConfigError, match="writable cgroup"):
        strict.__enter__()


def test_probe_harness_cpus_refuses_an_offline_cpu() -> None:
    from conftest import invoke_rlctl

    r = invoke_rlctl("probe", "http://127.0.0.1:9", "--json", "-", "--harness-cpus", "999")
    assert r.returncode == 2 and "--harness-cpus 999: CPU 999 is not online" in r.stderr


@pytest.mark.real  # gosvc, the load generator, the host's cgroups
def test_probe_with_harness_cpus_runs_pinned_and_restores_this_process(tmp_path: Path) -> None:
    from conftest import invoke_rlctl

    from rlctl.online.procs import GoService

    if len(cgroups.online_cpus()) < 2:
        pytest.fail("the split needs 2 online CPUs", pytrace=False)
    before = os.sched_getaffinity(0)
    out = tmp_path / "probe.json"
    with GoService(["--cpu-us", "100"]) as svc:
        r = invoke_rlctl("probe", svc.url, "--ramp", "50,50,2", "--max-qps", "300", "--quiet", "--json", str(out),
                         "--harness-cpus", "0", env={"RLCTL_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert len(report["curve"]) >= 3 and report["stopped_at_qps"] > 0
    assert os.sched_getaffinity(0) == before


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--inside-cgroup2-mount":
    result = _inside_cgroup2_mount(Path(sys.argv[2]))
    result["pid"] = os.getpid()
    Path(sys.argv[3]).write_text(json.dumps(result))
