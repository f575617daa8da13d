"""The real suite's sizing (peaks at most 70 % of the most replicas' capacity) and its CPU-split refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke_rlctl

from chaos.local_suite import (
    SIZING_FRACTION,
    load_scenario,
    peak_qps,
    render_summary,
    scale_scenario,
    scenario_path,
    size_scenarios,
    summarize,
)
from chaos.spec import Scenario
from rlctl.errors import ConfigError


def _specs(*names: str) -> dict[str, Scenario]:
    return {n: load_scenario(scenario_path(n)) for n in names}


def test_peaks_of_the_shipped_scenarios() -> None:
    specs = _specs("quick-flash", "step-podkill", "delay-stress")
    assert peak_qps(specs["quick-flash"]) == pytest.approx(600, rel=0.01)
    assert peak_qps(specs["step-podkill"]) == pytest.approx(500)
    assert peak_qps(specs["delay-stress"]) == pytest.approx(380)
    half = scale_scenario(specs["quick-flash"], 0.5)
    assert peak_qps(half) == pytest.approx(300, rel=0.01)
    assert half.load.base_qps == 75 and half.duration_s == 180


def test_rescale_brings_every_peak_to_70_percent_and_leaves_small_ones_alone() -> None:
    specs = _specs("quick-flash", "delay-stress")
    # 4 replicas of 200 QPS: 800 QPS, 70 % = 560; quick-flash (600) is over, delay-stress (380) under.
    sized, report = size_scenarios(specs, 200.0, 4, mode="rescale", source="test")
    assert peak_qps(sized["quick-flash"]) == pytest.approx(SIZING_FRACTION * 800, rel=1e-6)
    assert report["quick-flash"]["scale"] == pytest.approx(560 / 600, rel=0.01)
    assert report["quick-flash"]["fraction_of_capacity"] == pytest.approx(0.75, rel=0.01)
    assert sized["delay-stress"] is specs["delay-stress"] and report["delay-stress"]["scale"] == 1.0


def test_refuse_names_the_scenario_its_peak_the_capacity_and_the_fixes() -> None:
    with pytest.raises(ConfigError) as info:
        size_scenarios(_specs("quick-flash"), 200.0, 4, mode="refuse", source="given by --replica-capacity")
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert msg.startswith("scenario quick-flash: its peak of 600 QPS is 75% of 4 replicas' capacity")
    assert "(4 x 200 QPS, given by --replica-capacity)" in msg and "allows 70% (560 QPS)" in msg
    assert "--sizing rescale" in msg and "--max-replicas" in msg


def test_validate_real_refuses_quotas_over_the_replica_cpus_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "never"
    res = invoke_rlctl("validate-real", "--quick", "--replica-cpu", "0.5", "--replica-cpus", "1",
                       "--harness-cpus", "0", "--out", str(out))  # fmt: skip
    assert res.returncode == 2
    assert "--replica-cpu 0.5 x --max-replicas 4 = 2 cores of quota" in res.stderr
    assert "lower --replica-cpu to at most 0.25" in res.stderr
    assert not out.exists()
    bad = invoke_rlctl("validate-real", "--quick", "--sizing", "maybe", "--out", str(out))
    assert bad.returncode == 2 and "--sizing 'maybe'" in bad.stderr


def test_summary_shows_the_split_and_the_sizing() -> None:
    meta = {
        "schema": "x", "command": "rlctl validate-real", "started": "t",
        "machine": {"cpus": 2, "cpu_model": "AMD EPYC", "memory_gib": 1, "kernel": "k", "python": "3",
                    "git_commit": "abc"},
        "settings": {"path": "p", "replica_cpu_cores": 0.25, "cpu_us_per_request": 1000, "replicas": 2,
                     "max_replicas": 4, "interval_s": 5.0,
                     "cpu_split": {"replica_cpus": "1", "harness_cpus": "0", "source": "default",
                                   "harness_isolation": "cgroup cpuset /x (cgroup v1), CPU 0"}},
        "sizing": {"mode": "rescale", "fraction": 0.7, "replica_capacity": {"capacity_qps": 180.0},
                   "source": "measured", "scenarios": {"real-quick-flash": {"scale": 0.84, "peak_qps_run": 504.0}}},
    }  # fmt: skip
    md = render_summary(summarize([], meta))
    assert "CPUs: replicas on 1, harness on 0 (cgroup cpuset /x (cgroup v1), CPU 0)." in md
    assert "one replica's capacity 180 QPS (measured)" in md and "real-quick-flash x0.84 (peak 504 QPS)" in md
