"""The CLI as a user runs it: exit codes, JSON output, files written (in-process, through ``rlctl.cli.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke_rlctl


def test_help_lists_commands() -> None:
    r = invoke_rlctl("--help")
    assert r.returncode == 0
    for cmd in ("demo", "bench", "topology", "simulate"):
        assert cmd in r.stdout


def test_topology_prints_json() -> None:
    r = invoke_rlctl("topology")
    assert r.returncode == 0
    topo = json.loads(r.stdout)
    assert topo["cores"] >= 1 and topo["logical_cpus"] >= topo["cores"]


def test_bench_env_prints_the_documented_keys() -> None:
    r = invoke_rlctl("bench", "env", "--seconds", "0.3", "--rounds", "2", "--batch", "16")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"single_env_steps_per_s", "batched_service_steps_per_s", "batch_size", "cartpole_steps_per_s"}
    assert out["batch_size"] == 16 and out["single_env_steps_per_s"] > 0 and out["rounds"] == 2


def test_simulate_bad_scenario_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nload: {kind: sine}\n")
    r = invoke_rlctl("simulate", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "ConfigError" in r.stderr and str(bad) in r.stderr and "load.kind" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_simulate_writes_plot_and_scores(tmp_path: Path) -> None:
    sc = tmp_path / "s.yaml"
    sc.write_text("name: quick\nduration_s: 600\nload: {kind: step, base_qps: 500, step_qps: 6000, at_s: 200}\n"
                  "faults:\n  - {kind: pod-kill, start_s: 300, duration_s: 5}\n")  # fmt: skip
    r = invoke_rlctl("simulate", str(sc), "--controller", "hpa", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["replica_seconds"] > 0 and len(scores["recovery_seconds"]) == 1
    assert (tmp_path / "o" / "quick.png").stat().st_size > 10_000


@pytest.mark.slow  # a 30-minute scenario under the hindsight oracle
def test_simulate_runs_the_oracle_with_the_replicas_a_failed_fan_calls_for(tmp_path: Path) -> None:
    """``rlctl simulate --controller oracle`` is the oracle ``rlctl eval`` scores: under a failed
    fan at a heavy load it adds replicas over the throttled span instead of missing the SLO."""
    spec = tmp_path / "fan.yaml"
    spec.write_text(
        "name: fan\nkind: fault\nduration_s: 1800\nload: {kind: constant, qps: 13400, noise: false}\n"
        "faults:\n  - {kind: fan-failure, start_s: 300, duration_s: 900, params: {r_factor: 1.8}}\n"
    )
    r = invoke_rlctl("simulate", str(spec), "--controller", "oracle", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout.strip().splitlines()[-1])
    assert scores["slo_violation_s"] <= 30.0  # the first half minute, before any replica can start
