"""``rlctl chaos run``: the runner, its scores and report, the sim backend, CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from chaos_local_support import report_shape, require_binaries, tiny_ppo_artifact, write_scenario
from conftest import invoke_rlctl

from chaos.record import SERIES_KEYS, RunRecord
from chaos.runner import build_report, check_controller_names, render_markdown, score
from chaos.spec import load_scenario, scenario_from_dict
from rlctl.errors import ConfigError

SCENARIOS = Path(__file__).resolve().parents[2] / "chaos" / "scenarios"


def _record(p99: list[float], *, dt: float = 1.0, offered: float = 100.0, replicas: float = 2.0) -> RunRecord:
    n = len(p99)
    series = {k: np.zeros(n) for k in SERIES_KEYS}
    series["t_s"] = np.arange(1, n + 1) * dt
    series["dt_s"] = np.full(n, dt)
    series["p99_ms"] = np.array(p99, dtype=float)
    series["offered_qps"] = np.full(n, offered)
    series["replicas"] = np.full(n, replicas)
    return RunRecord(
        "static", "local", series, interval_s=dt, actions=[{"t_s": 3.0, "knob": "replicas", "from": 2, "to": 3}]
    )


def test_scores_violation_cost_and_recovery() -> None:
    s = scenario_from_dict(
        {"name": "s", "duration_s": 10, "slo_p99_ms": 100,
         "faults": [{"name": "a", "kind": "network-delay", "start_s": 2, "duration_s": 3},
                    {"name": "b", "kind": "pod-kill", "start_s": 8, "duration_s": 1}]}
    )  # fmt: skip
    # Intervals end at 1..10 s. Over the SLO in (2,3], (3,4], (5,6], (6,7]; (9,10] has load but no P99.
    rec = _record([10, 10, 150, 150, 10, 200, 300, 10, 10, math.nan])
    sc = score(rec, s)
    assert sc["slo_violation_s"] == 5.0
    assert sc["replica_seconds"] == 20.0
    a, b = sc["recovery"]
    # a ends at 5 s: (5,6] and (6,7] are over, (7,8] is back: 2 s.
    assert a == {"fault": "a", "kind": "network-delay", "start_s": 2.0, "end_s": 5.0, "violation_s_during": 2.0,
                 "recovered": True, "recovery_s": 2.0, "bound_s": 2.0}  # fmt: skip
    assert b["recovered"] is False and b["recovery_s"] is None  # (9,10] had load and no answer
    assert sc["actions"] == 1 and sc["actions_per_hour"] == 360.0
    assert sc["p99_ms_median"] == 10.0
    report = build_report(s, [rec], backend="local", run_id="r1")
    json.dumps(report, allow_nan=False)  # strict JSON: the NaN became null
    md = render_markdown(report)
    assert "| static | 5.0 | 20 | 1 |" in md
    assert "| b | 9 | not recovered (> 1) |" in md


def test_controller_names_are_checked() -> None:
    assert check_controller_names(["ppo:default", "hpa-tuned", "hpa-0.6", "static"]) == [
        "ppo:default", "hpa-tuned", "hpa-0.6", "static",
    ]  # fmt: skip
    for bad, msg in [("hpa-2", "use ppo:default"), ("ppo:", "use ppo:default"), ("magic", "hpa-<target>")]:
        with pytest.raises(ConfigError, match=msg):
            check_controller_names([bad])
    with pytest.raises(ConfigError, match="given twice"):
        check_controller_names(["static", "static"])
    with pytest.raises(ConfigError, match="at least one --controller"):
        check_controller_names([])


def test_sim_backend_runs_a_shipped_scenario_with_two_controllers(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    scenario = SCENARIOS / "local-three-faults.yaml"
    proc = invoke_rlctl(
        "chaos", "run", str(scenario), "--backend", "sim", "-c", "static", "-c", "hpa-tuned",
        "--report", str(out), "--json", str(tmp_path / "out.json"), "--run-id", "sim-1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["schema"] == "rlctl.chaos-run/v1" and report["backend"] == "sim" and report["run_id"] == "sim-1"
    assert report["controllers"] == ["static", "hpa-tuned"]
    spec = load_scenario(scenario)
    assert [f["fault"] for f in report["faults"]] == ["delay", "cpu", "kill"]
    for name in ("static", "hpa-tuned"):
        r = report["results"][name]
        assert len(r["series"]["t_s"]) == spec.duration_s / 5
        assert [x["fault"] for x in r["recovery"]] == ["delay", "cpu", "kill"]
        assert r["replica_seconds"] > 0 and r["slo_violation_s"] >= 0
        assert isinstance(r["boundary_events"], list)
    assert 0.3 <= report["results"]["hpa-tuned"]["controller"]["hpa_target_cpu"] <= 0.9
    assert (out / "timelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| static |" in md and "| hpa-tuned |" in md and "![timelines](timelines.png)" in md
    assert "SLO violation (s)" in proc.stdout  # the Rich table
    shape = report_shape(report)
    assert {"slo_violation_s", "replica_seconds", "recovery", "boundary_events", "actions", "knob_changes",
            "injections", "series"} <= set(shape["result"])  # fmt: skip
    assert shape["recovery"] == [
        "bound_s", "end_s", "fault", "kind", "recovered", "recovery_s", "start_s", "violation_s_during",
    ]  # fmt: skip


@pytest.mark.real  # needs the gosvc and stress-ng binaries
def test_local_backend_refuses_faults_it_cannot_inject_before_starting_anything(tmp_path: Path) -> None:
    require_binaries()
    proc = invoke_rlctl("chaos", "run", str(SCENARIOS / "resource-pressure.yaml"), "--backend", "local", "--dry-run")
    assert proc.returncode == 2
    assert "ChaosError: scenario 'resource-pressure' cannot run on the local backend" in proc.stderr
    assert "(io-latency): the local backend cannot delay disk I/O" in proc.stderr
    assert "(time-skew)" in proc.stderr and "--backend k8s or --backend sim" in proc.stderr


@pytest.mark.real  # needs the gosvc and stress-ng binaries
def test_local_dry_run_prints_the_plan(tmp_path: Path) -> None:
    require_binaries()
    proc = invoke_rlctl(
        "chaos", "run", str(SCENARIOS / "local-three-faults.yaml"), "--backend", "local", "--dry-run",
        "-c", "static", "-c", "hpa-tuned", "--run-id", "plan-1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "30s-60s delay: fault proxy delay" in proc.stdout
    assert "130s-150s kill: SIGKILL the selected replicas, restart after 15s" in proc.stdout
    assert "run id plan-1" in proc.stderr


def test_cli_input_errors_exit_2(tmp_path: Path) -> None:
    scenario = str(SCENARIOS / "local-three-faults.yaml")
    cases = [
        (["--backend", "mars"], "--backend 'mars': choose sim, local or k8s"),
        (["-c", "oracle", "--backend", "local", "--dry-run"], "runs in the simulator only"),
        (["-c", "ppo:/nonexistent/policy"], "ArtifactError"),
        (["-c", "static", "--run-id", "../etc"], "run id '../etc'"),
        (["-c", "bogus"], "controller 'bogus': unknown controller"),
    ]
    for args, msg in cases:  # each fails before any fault: bad input is exit code 2
        proc = invoke_rlctl("chaos", "run", scenario, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert msg in proc.stderr, (args, proc.stderr)
    bad = write_scenario(tmp_path / "bad.yaml", name="bad", duration_s=60, faults=[{"kind": "nope"}])
    proc = invoke_rlctl("chaos", "run", str(bad))
    assert proc.returncode == 2 and "ConfigError" in proc.stderr


def test_oracle_is_refused_off_the_simulator() -> None:
    from chaos.runner import ControllerContext, resolve_controller

    s = load_scenario(SCENARIOS / "local-three-faults.yaml")
    with pytest.raises(ConfigError, match="runs in the simulator only"):
        resolve_controller("oracle", ControllerContext("local", s))
    ctrl, _ = resolve_controller("oracle", ControllerContext("sim", s))
    assert ctrl.name == "oracle"


@pytest.mark.slow  # builds a PPO artifact, then a two-hour scenario with six faults
def test_sim_backend_runs_a_ppo_artifact(tmp_path: Path) -> None:
    policy = tiny_ppo_artifact(tmp_path / "art")
    out = tmp_path / "ppo.json"
    proc = invoke_rlctl(
        "chaos", "run", str(SCENARIOS / "pod-churn.yaml"), "-c", f"ppo:{policy}", "-c", "threshold", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["controllers"] == [f"ppo:{policy}", "threshold"]
    r = report["results"][f"ppo:{policy}"]
    assert r["controller"]["artifact"] == str(policy)
    assert len(r["recovery"]) == len(report["faults"]) == 6  # four kills (a Schedule), a failure, a container kill
    assert r["actions"] == len({a["t_s"] for a in r["knob_changes"]})


@pytest.mark.real  # gosvc
@pytest.mark.slow
def test_k8s_backend_injects_through_chaos_mesh_and_scales_the_deployment(tmp_path: Path) -> None:
    """Against the fake API server: chaos objects created and deleted on time, the Deployment scaled."""
    import subprocess

    from chaos_local_support import GOSVC
    from fakek8s import FakeKubeAPI

    require_binaries()
    sel = {"namespace": "rlctl-demo", "labels": {"app": "gosvc"}, "mode": "one"}
    scenario = write_scenario(
        tmp_path / "k8s.yaml", name="k8s-two-faults", duration_s=12, slo_p99_ms=100,
        load={"kind": "constant", "qps": 30},
        faults=[{"name": "delay", "kind": "network-delay", "start_s": 2, "duration_s": 4, "selector": sel,
                 "params": {"latency_ms": 150}},
                {"name": "kill", "kind": "pod-kill", "start_s": 7, "duration_s": 3, "selector": sel}],
    )  # fmt: skip
    svc = subprocess.Popen([str(GOSVC), "serve", "--addr", "127.0.0.1:0", "--cpu-us", "50"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert svc.stdout is not None
        addr = json.loads(svc.stdout.readline())["addr"]
        with FakeKubeAPI(inject_delay_s=0.2, delete_delay_s=0.2) as api:
            api.add_deployment("rlctl-demo", "gosvc", 5)
            kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
            out = tmp_path / "k8s.json"
            proc = invoke_rlctl(
                "chaos", "run", str(scenario), "--backend", "k8s", "-n", "rlctl-demo", "--kubeconfig", str(kubeconfig),
                "--url", f"http://{addr}", "--metrics-url", f"http://{addr}/metrics", "--deployment", "gosvc",
                "-c", "static", "-c", "hpa-0.1", "--interval", "2", "--json", str(out), "--run-id", "k8s-1",
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            report = json.loads(out.read_text())
            created = [r.path for r in api.calls("POST")]
            deleted = [r.path for r in api.calls("DELETE")]
            assert sum("/networkchaos" in p for p in created) == 2 and sum("/podchaos" in p for p in created) == 2
            assert len(deleted) == len(created) and api.names() == []
            # Each controller starts from the same two replicas; the HPA's scaling shows up as PATCHes too.
            patches = [r.body["spec"]["replicas"] for r in api.calls("PATCH")]
            hpa_moves = [a["to"] for a in report["results"]["hpa-0.1"]["knob_changes"] if a["knob"] == "replicas"]
            assert patches == [2, 2, *hpa_moves]
            assert api.deployments[("rlctl-demo", "gosvc")]["replicas"] == (hpa_moves or [2])[-1]
    finally:
        svc.terminate()
        svc.wait(timeout=10)
    for name in ("static", "hpa-0.1"):
        r = report["results"][name]
        assert {i["fault"] for i in r["injections"]} == {"delay", "kill"}
        assert all(i["injected_s"] is not None and i["reverted_s"] is not None for i in r["injections"])
        assert 10 <= len(r["series"]["t_s"]) <= 13
    sim = tmp_path / "sim.json"
    assert (
        invoke_rlctl("chaos", "run", str(scenario), "-c", "static", "-c", "hpa-0.1", "--json", str(sim)).returncode == 0
    )
    assert report_shape(json.loads(sim.read_text())) == report_shape(report)


def test_guarded_policy_resolves_by_name_and_runs_on_the_simulator(tmp_path: Path) -> None:
    from chaos.runner import ControllerContext, resolve_controller
    from policies.guard import SLOGuard

    assert check_controller_names(["ppo+guard:default"]) == ["ppo+guard:default"]
    with pytest.raises(ConfigError, match="use ppo:default"):
        check_controller_names(["ppo+guard:"])
    s = load_scenario(SCENARIOS / "pod-churn.yaml")
    ctrl, facts = resolve_controller("ppo+guard:default", ControllerContext("sim", s))
    assert isinstance(ctrl, SLOGuard) and ctrl.name == "ppo+guard:default" and "guard" in facts
    out = tmp_path / "g.json"
    proc = invoke_rlctl(
        "chaos", "run", str(SCENARIOS / "pod-churn.yaml"), "-c", "ppo+guard:default", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["controllers"] == ["ppo+guard:default"]
