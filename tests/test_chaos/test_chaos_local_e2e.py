"""End to end on this host: a three-fault scenario (network delay, CPU stress, pod kill) against
the real test-bed, under two controllers, through ``rlctl chaos run --backend local``.

Low load and one minute per controller; the report (JSON, Markdown, PNG) must have the shape
the sim backend's has, every fault must have been injected and reverted, and nothing of the
run may be left on the host.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from chaos_local_support import report_shape, require_binaries, require_cgroups, tiny_ppo_artifact, write_scenario
from conftest import run_rlctl

from chaos.backends.local import LocalBackend, LocalConfig
from chaos.spec import load_scenario
from policies.base import Controller
from rlctl.contract import COL, KNOB_COL, KnobBounds
from rlctl.harness.journal import marked_pids

pytestmark = [pytest.mark.real, pytest.mark.slow]  # gosvc, stress-ng, cgroups, rlctl processes

SLO_MS = 150.0


def _scenario(tmp_path: Path) -> Path:
    return write_scenario(
        tmp_path / "local-three-faults-60s.yaml",
        name="local-three-faults-60s",
        description="The shipped local-three-faults scenario cut to one minute at low load.",
        kind="fault",
        duration_s=60,
        slo_p99_ms=SLO_MS,
        load={"kind": "step", "base_qps": 40, "step_qps": 80, "at_s": 24},
        faults=[
            {"name": "delay", "kind": "network-delay", "start_s": 8, "duration_s": 12,
             "params": {"latency_ms": 200, "jitter_ms": 20}},
            {"name": "cpu", "kind": "cpu-stress", "start_s": 26, "duration_s": 12, "selector": {"mode": "all"},
             "params": {"workers": 1, "load_percent": 90}},
            {"name": "kill", "kind": "pod-kill", "start_s": 44, "duration_s": 8, "params": {"restart_delay_s": 4}},
        ],
    )  # fmt: skip


def test_three_faults_two_controllers_end_to_end(tmp_path: Path) -> None:
    require_binaries()
    require_cgroups()
    scenario = _scenario(tmp_path)
    out = tmp_path / "report"
    run_id = f"e2e-{int(time.time())}"
    started = time.monotonic()
    proc = run_rlctl(
        "chaos", "run", str(scenario), "--backend", "local", "-c", "static", "-c", "hpa-tuned",
        "--report", str(out), "--run-id", run_id, "--interval", "2", "--replica-cpu", "0.5", timeout=400,
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took < 300, f"two one-minute runs took {took:.0f}s"

    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == "local" and report["controllers"] == ["static", "hpa-tuned"]
    assert (out / "timelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| static |" in md and "| hpa-tuned |" in md and "## Recovery after each fault" in md
    assert "fault kill at" in md and "SIGKILL, restart after 4s" in md
    assert "SLO violation (s)" in proc.stdout

    for name in ("static", "hpa-tuned"):
        r = report["results"][name]
        s = r["series"]
        assert 55 <= len(s["t_s"]) <= 61, len(s["t_s"])
        assert max(s["offered_qps"]) > 60 and min(s["offered_qps"][2:20]) < 60  # the load stepped up
        injected = {i["fault"]: i for i in r["injections"]}
        assert set(injected) == {"delay", "cpu", "kill"}
        assert all(i["error"] is None and i["reverted_s"] is not None for i in injected.values()), injected
        # mode all: a stressor in the cgroup of every replica running then (the HPA may have scaled to one).
        assert injected["cpu"]["targets"] and set(injected["cpu"]["targets"]) <= {"r0", "r1"}
        assert "--cpu 1 --cpu-load 90 --timeout 12s" in injected["cpu"]["detail"]
        assert len(injected["kill"]["targets"]) == 1
        history = r["extra"]["replica_history"][injected["kill"]["targets"][0]]
        assert any(h.startswith("killed pid") for h in history) and len(history) == 3  # started, killed, started
        # 200 ms of added delay puts P99 over the 150 ms SLO for (nearly) the whole window.
        delay = next(x for x in r["recovery"] if x["fault"] == "delay")
        assert delay["violation_s_during"] >= 8, delay
        assert r["slo_violation_s"] >= 8
        before, during = s["replicas"][40], min(s["replicas"][44:48])
        assert during == before - 1, "the killed replica is gone until it restarts"
        assert s["replicas"][-1] == before
        assert r["replica_seconds"] >= 30
        assert r["extra"]["proxy_stats"]["delayed"] > 100

    # The same report shape as the sim backend's.
    sim = tmp_path / "sim.json"
    proc = run_rlctl("chaos", "run", str(scenario), "--backend", "sim", "-c", "static", "-c", "hpa-tuned",
                     "--json", str(sim))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert report_shape(json.loads(sim.read_text())) == report_shape(report)

    assert marked_pids(run_id) == {}
    assert not (require_cgroups().root / "rlctl" / run_id).exists()
    assert not (Path("/tmp/rlctl-state") / run_id).exists()


def test_a_ppo_artifact_drives_replicas_and_runtime_knobs_under_packet_loss(tmp_path: Path) -> None:
    """An (untrained) PPO artifact on the local backend: its scaling and runtime knobs reach the replicas."""
    require_binaries()
    require_cgroups()
    policy = tiny_ppo_artifact(tmp_path / "art")
    scenario = write_scenario(
        tmp_path / "loss.yaml", name="loss-20s", duration_s=20, slo_p99_ms=SLO_MS,
        load={"kind": "constant", "qps": 40},
        faults=[{"name": "loss", "kind": "network-loss", "start_s": 4, "duration_s": 8,
                 "params": {"loss_percent": 20}}],
    )  # fmt: skip
    out = tmp_path / "ppo.json"
    proc = run_rlctl(
        "chaos", "run", str(scenario), "--backend", "local", "-c", f"ppo:{policy}", "--json", str(out),
        "--interval", "2", "--loss-mode", "reset", "--max-replicas", "4", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())["results"][f"ppo:{policy}"]
    (loss,) = r["injections"]
    assert loss["error"] is None and loss["detail"] == "proxy loss percent=20, correlation=25, mode=reset"
    assert r["extra"]["proxy_stats"]["lost"] > 20
    # Go's client retries a GET once on a reset connection: about 20 % x 20 % of requests fail.
    assert max(r["series"]["error_rate"][4:13]) > 0
    assert len(r["series"]["t_s"]) >= 18 and r["actions"] == len({a["t_s"] for a in r["knob_changes"]})


class Scripted(Controller):
    """Moves replicas and runtime knobs at its third decision, and records what it saw after."""

    name = "scripted"

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def decide(self, windows: np.ndarray, knobs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.seen.append(windows[0, -1].copy())
        out = knobs.copy()
        if self.calls == 3:
            out[0, KNOB_COL["replicas"]] = 3
            out[0, KNOB_COL["gomaxprocs"]] = 2
            out[0, KNOB_COL["gogc"]] = 200
        return out


def test_scaling_and_runtime_knobs_reach_the_replicas(tmp_path: Path) -> None:
    require_binaries()
    require_cgroups()
    scenario = load_scenario(
        write_scenario(tmp_path / "quiet.yaml", name="quiet-16s", duration_s=16, load={"kind": "constant", "qps": 40})
    )
    ctrl = Scripted()
    backend = LocalBackend(LocalConfig(interval_s=2.0, replica_cpu=0.25, log_dir=tmp_path / "logs"))
    record = backend.run(scenario, ctrl, run_id=f"knobs-{int(time.time())}")
    assert [(a["knob"], a["from"], a["to"]) for a in record.actions] == [
        ("replicas", 2, 3), ("gomaxprocs", 1, 2), ("gogc", 100, 200),
    ]  # fmt: skip
    before, after = ctrl.seen[2], ctrl.seen[-1]
    # What the replicas report through /metrics, not what was asked for.
    assert (before[COL["gomaxprocs"]], before[COL["gogc"]]) == (1.0, 100.0)
    assert (after[COL["gomaxprocs"]], after[COL["gogc"]]) == (2.0, 200.0)
    assert after[COL["replicas"]] == 3.0 and record.series["replicas"][-1] == 3.0
    assert sorted(record.extra["replica_history"]) == ["r0", "r1", "r2"]
    assert record.notes == []
