"""``rlctl bench isolation``: the flatness benchmark runs end to end, and its refusals.

The figures themselves live in deploy/results/isolation-2026-12-05/ (a benchmark, not a
timed test); here a tiny run checks what it measures and that it leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from chaos_local_support import require_cgroups
from conftest import invoke_rlctl

from rlctl import cgroups


@pytest.mark.real  # gosvc replicas, proxy and load generator in cgroups
def test_bench_isolation_tiny_run_measures_both_layouts_and_cleans_up(tmp_path: Path) -> None:
    found = require_cgroups()
    if len(cgroups.online_cpus()) < 2:
        pytest.fail("the CPU split needs 2 online CPUs", pytrace=False)
    out = tmp_path / "bench.json"
    state = tmp_path / "state"
    r = invoke_rlctl(
        "bench", "isolation", "--json", str(out), "--max-replicas", "2", "--repeats", "1", "--point-s", "3",
        "--warmup-s", "1", "--per-replica-qps", "20", "--cpu-us", "200",
        env={"RLCTL_STATE_DIR": str(state)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == "rlctl.bench.isolation/v1"
    assert data["config"]["quota_cores"] == pytest.approx(0.5)  # one replica CPU over two replicas
    assert len(data["cpu_iters_calibrations"]) == 3  # the work per request: the fastest calibration
    assert data["cpu_iters_per_request"] == max(data["cpu_iters_calibrations"])
    points = data["points"]
    assert sorted((p["layout"], p["replicas"]) for p in points) == [
        ("isolated", 1), ("isolated", 2), ("shared", 1), ("shared", 2),
    ]  # fmt: skip
    for p in points:
        assert p["target_qps"] == pytest.approx(20 * p["replicas"])
        assert p["seconds"] >= 2 and p["error_rate"] < 0.05 and p["p99_ms"] > 0
        assert len(p["loadavg_before"]) == 3 and len(p["loadavg_after"]) == 3
        assert set(p["cpu_busy"]) == {str(c) for c in cgroups.online_cpus()} and p["replicas_cores"] > 0
        if p["layout"] == "isolated":
            assert p["harness"].startswith("cgroup cpuset") and "CPU 0" in p["harness"]
            assert p["foreign_cores_on_replica_cpus"] is not None
        else:
            assert p["foreign_cores_on_replica_cpus"] is None
        assert p["foreign_cores"] >= 0
    for layout in ("isolated", "shared"):
        block = data["layouts"][layout]
        assert set(block["per_replicas"]) == {"1", "2"} and block["ratio_max_min"] >= 1.0
    # Nothing left: no journal of a point, no cgroup of the benchmark (the points' run ids carry this pid).
    # (this process's session journal stays open until it exits, but lists nothing outstanding)
    assert [str(e) for e in state.glob(f"bench-isolation-{os.getpid()}-*/[0-9]*.json")] == []
    cpuset_root = found.cpuset_root if found.version == 1 else found.root
    assert cpuset_root is not None
    for hierarchy in {found.root, cpuset_root}:
        assert list((hierarchy / "rlctl").glob(f"*bench-isolation-{os.getpid()}-*")) == []
    assert os.sched_getaffinity(0) == set(cgroups.online_cpus())  # this process is back on every CPU


def test_bench_isolation_refuses_no_split() -> None:
    r = invoke_rlctl("bench", "isolation", "--replica-cpus", "off")
    assert r.returncode == 2
    assert "--replica-cpus off: the benchmark compares the split with the shared layout" in r.stderr
