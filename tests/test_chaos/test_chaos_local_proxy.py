"""The fault proxy and the replica manager against the real test-bed (gosvc proxy + gosvc serve)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_local_support import GOSVC, require_binaries, require_cgroups

from chaos.backends.local import cleanup
from chaos.backends.local.proxy import FaultProxy
from chaos.backends.local.replicas import ReplicaManager
from rlctl import cgroups
from rlctl.contract import Knobs
from rlctl.errors import ChaosError
from rlctl.harness.journal import Journal, proc_state

pytestmark = pytest.mark.real  # gosvc proxy and replicas in cgroups


def _get(url: str, timeout_s: float = 2.0) -> tuple[float, int | str]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
            return time.monotonic() - start, resp.status
    except urllib.error.HTTPError as exc:
        return time.monotonic() - start, exc.code
    except (urllib.error.URLError, OSError) as exc:
        return time.monotonic() - start, type(exc).__name__


def _wait(cond, timeout_s: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Journal, FaultProxy]]:
    require_binaries()
    state = tmp_path / "state"
    journal = Journal.open("proxy-test", state)
    proxy = FaultProxy(str(GOSVC), journal, health_interval_s=0.2, log_path=tmp_path / "proxy.log").start()
    try:
        yield journal, proxy
    finally:
        proxy.stop()
        cleanup("proxy-test", state_dir=state)


def test_network_faults_through_the_proxy(setup: tuple[Journal, FaultProxy], tmp_path: Path) -> None:
    journal, proxy = setup
    reps = ReplicaManager(str(GOSVC), journal, proxy, Knobs(replicas=1), quota_cores=None, cpu_us=50)
    try:
        reps.scale_to(1)
        url = f"{proxy.url}/work"
        assert _get(url)[1] == 200
        proxy.set_fault("delay", {"latency_ms": 150, "jitter_ms": 0})
        took, status = _get(url)
        assert status == 200 and took >= 0.14
        proxy.clear_fault("delay")
        proxy.set_fault("loss", {"percent": 100, "mode": "reset"})
        assert _get(url)[1] != 200
        proxy.set_fault("partition", {"fraction": 1, "mode": "blackhole"})
        took, status = _get(url, timeout_s=0.5)
        assert status != 200 and took >= 0.45
        assert proxy.faults()["partition"] == {"fraction": 1, "mode": "blackhole"}
        proxy.clear_fault()
        assert _get(url)[1] == 200
        stats = proxy.stats()
        assert stats["delayed"] == 1 and stats["lost"] == 1 and stats["partitioned"] == 1
        with pytest.raises(ChaosError, match="percent=150 is out of range"):
            proxy.set_fault("loss", {"percent": 150})
    finally:
        reps.shutdown()


def test_replicas_in_cgroups_scaled_killed_frozen_and_tuned(setup: tuple[Journal, FaultProxy], tmp_path: Path) -> None:
    require_cgroups()
    journal, proxy = setup
    reps = ReplicaManager(str(GOSVC), journal, proxy, Knobs(replicas=2, gomaxprocs=1), quota_cores=0.25, cpu_us=50)
    reps.setup()
    try:
        reps.scale_to(2)
        base = require_cgroups().root / "rlctl" / "proxy-test"
        for r in reps.live():
            assert r.cgroup == base / r.name
            assert cgroups.quota(r.cgroup)[0] == 25000
            assert str(r.proc.pid) in (r.cgroup / "cgroup.procs").read_text().split()  # type: ignore[union-attr]
        url = f"{proxy.url}/work"
        for _ in range(10):
            assert _get(url)[1] == 200
        assert [u["requests"] for u in proxy.upstreams()] == [5, 5]  # round robin

        reps.scale_to(3)
        assert len(proxy.upstreams()) == 3
        reps.scale_to(1)
        assert len(proxy.upstreams()) == 1 and len(reps.live()) == 1
        assert not (base / "r2").exists()

        victim = reps.live()[0]
        reps.kill(victim, restart_after_s=0.2)
        assert proxy.upstreams() == [] and reps.live() == []
        time.sleep(0.3)
        (back,) = reps.due_restarts()
        assert back.name == victim.name and back.generation == 2 and len(proxy.upstreams()) == 1

        reps.scale_to(2)
        frozen = reps.ready()[0]
        reps.freeze(frozen)
        assert proc_state(frozen.proc.pid) == "T"  # type: ignore[union-attr]
        assert any(e["kind"] == "stopped" for e in journal.entries())
        _wait(lambda: sum(u["healthy"] for u in proxy.upstreams()) == 1)  # the readiness probe ejects it
        reps.thaw(frozen)
        _wait(lambda: all(u["healthy"] for u in proxy.upstreams()))
        assert not any(e["kind"] == "stopped" for e in journal.entries())

        reps.set_quota(frozen, 0.5)
        assert cgroups.quota(frozen.cgroup)[0] == 50000  # type: ignore[arg-type]
        assert any(e["kind"] == "quota" and e["quota_us"] == 25000 for e in journal.entries())

        assert reps.apply_knobs(Knobs(replicas=2, gomaxprocs=2, gogc=200)) == []
        for r in reps.ready():
            auth = {"Authorization": f"Bearer {reps.token}"}
            req = urllib.request.Request(f"{r.admin_url}/admin/knobs", headers=auth)
            with urllib.request.urlopen(req, timeout=2) as resp:
                knobs = json.loads(resp.read())
            assert knobs["gomaxprocs"] == 2 and knobs["gogc"] == 200
    finally:
        reps.shutdown()
    assert not (require_cgroups().root / "rlctl" / "proxy-test").exists()
