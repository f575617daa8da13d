"""The online decision path of live chaos runs, the new scores, and the real-suite summary.

The path runs against a real redis-server: each decision's sample goes into the service's
telemetry stream and comes back through the consumer group; the safety layer limits what
the controller asked; the audit stream records every decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_rlctl
from online_support import redis_server

from chaos.backends.online import (
    LOCAL_KNOBS,
    BackendActuators,
    OnlineController,
    OnlinePath,
    RulePolicy,
    audit_trail,
    served_policies,
)
from chaos.local_suite import render_summary, summarize
from chaos.record import SERIES_KEYS, RunRecord
from chaos.runner import score
from chaos.spec import scenario_from_dict
from policies.base import Controller, FloatArray
from policies.guard import GuardConfig, SLOGuard
from rlctl.contract import COL, KNOB_COL, N_TELEMETRY, KnobBounds, Knobs
from rlctl.errors import ConfigError


class Greedy(Controller):
    """Asks for four more replicas and GOMAXPROCS 4 every time."""

    name = "greedy"

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = knobs.copy()
        out[:, KNOB_COL["replicas"]] += 4
        out[:, KNOB_COL["gomaxprocs"]] = 4
        out[:, KNOB_COL["turbo"]] = 0
        return out


def _window(p99: float = 5.0, offered: float = 300.0) -> FloatArray:
    row = np.zeros(N_TELEMETRY)
    row[COL["offered_qps"]] = offered
    row[COL["served_qps"]] = offered
    row[COL["p99_ms"]] = p99
    row[COL["p50_ms"]] = p99 / 2
    row[COL["cpu_util"]] = 0.9
    row[COL["replicas"]] = 2
    return np.repeat(row[None, None, :], 3, axis=1)


@pytest.mark.real  # redis-server
def test_decisions_go_through_redis_and_the_safety_layer(tmp_path: Path) -> None:
    bounds = KnobBounds(max_replicas=5, max_gomaxprocs=4)
    with redis_server(tmp_path / "redis") as server:
        ctl = OnlineController(Greedy(), RulePolicy(Greedy()), server.url, bounds=bounds, interval_s=5.0)
        ctl.reset(1, bounds, 5.0)
        knobs = Knobs(replicas=2, gomaxprocs=1).to_array()[None]
        first = ctl.decide(_window(), knobs)[0]
        # Safety: two replicas per interval at most, GOMAXPROCS one step; turbo is not a local knob.
        assert first[KNOB_COL["replicas"]] == 4
        assert first[KNOB_COL["gomaxprocs"]] == 2
        assert first[KNOB_COL["turbo"]] == knobs[0, KNOB_COL["turbo"]]
        second = ctl.decide(_window(), first[None])[0]
        assert second[KNOB_COL["replicas"]] <= 5  # the bound, whatever the cooldown
        summary = ctl.summary()
        assert summary["decisions"] == {"policy": 2}
        from rlctl.online.store import TelemetryStore

        store = TelemetryStore(server.url)
        assert store.length(ctl.service) == 2  # both samples went through the stream
        records = store.audit_records(ctl.service)
        assert [r.reason for r in records] == ["policy", "policy"]
        assert records[0].safe_knobs["replicas"] == 4 and records[0].target_knobs["replicas"] == 6
        out = tmp_path / "audit.jsonl"
        assert audit_trail(server.url, ctl.service, out) == 2
        assert len(out.read_text().splitlines()) == 2


@pytest.mark.real  # redis-server
def test_stale_or_broken_telemetry_holds_the_knobs(tmp_path: Path) -> None:
    bounds = KnobBounds(max_replicas=5)
    with redis_server(tmp_path / "redis") as server:
        ctl = OnlineController(Greedy(), RulePolicy(Greedy()), server.url, bounds=bounds, interval_s=5.0)
        ctl.reset(1, bounds, 5.0)
        knobs = Knobs(replicas=2).to_array()[None]
        w = _window()
        w[0, -1, COL["cpu_util"]] = np.nan  # the replicas' /metrics did not answer
        out = ctl.decide(w, knobs)[0]
        np.testing.assert_array_equal(out, knobs[0])
        assert ctl.summary()["decisions"] == {"hold/telemetry-nonfinite": 1}


def test_backend_actuators_hand_changes_over() -> None:
    act = BackendActuators()
    assert act.controllable() == LOCAL_KNOBS
    cur = Knobs().to_array()
    tgt = cur.copy()
    tgt[KNOB_COL["replicas"]] = 5
    now, results = act.apply(cur, tgt)
    assert now[KNOB_COL["replicas"]] == 5 and list(results) == ["replicas"]
    read, errors = act.read(np.full_like(cur, np.nan))
    np.testing.assert_array_equal(read, now)
    assert errors == {}


def _record(p99: list[float], actions: list[dict[str, Any]], extra: dict[str, Any]) -> RunRecord:
    n = len(p99)
    series = {k: np.zeros(n) for k in SERIES_KEYS}
    series["t_s"] = np.arange(1, n + 1) * 10.0
    series["dt_s"] = np.full(n, 10.0)
    series["p99_ms"] = np.array(p99, dtype=float)
    series["offered_qps"] = np.full(n, 100.0)
    series["replicas"] = np.full(n, 2.0)
    return RunRecord("x", "local", series, interval_s=10.0, actions=actions, extra=extra)


def test_scores_count_flaps_steady_violations_and_core_seconds() -> None:
    fault = {"name": "k", "kind": "pod-kill", "start_s": 50, "duration_s": 10}
    s = scenario_from_dict({"name": "s", "duration_s": 200, "slo_p99_ms": 8, "faults": [fault]})
    # Intervals (0,10] .. (190,200]; the fault's part is (50,120] (window 50-60 s and 60 s after).
    p99 = [1.0] * 20
    p99[2] = p99[6] = p99[15] = 20.0
    moves = [(2, 3), (3, 2), (2, 3), (3, 4), (4, 3)]
    actions = [{"t_s": 10.0 * i, "knob": "replicas", "from": a, "to": b} for i, (a, b) in enumerate(moves)]
    actions.append({"t_s": 99.0, "knob": "gogc", "from": 100, "to": 200})
    sc = score(_record(p99, actions, {"replica_cpu_cores": 0.25, "core_seconds_used": 42.5}), s)
    assert sc["slo_violation_s"] == 30.0
    assert sc["steady_violation_s"] == 20.0  # (20,30] and (150,160]; (60,70] is the fault's
    assert sc["steady_s"] == 130.0
    assert sc["flaps"] == 3  # up-down, down-up, up-down
    assert sc["core_seconds_used"] == 42.5
    assert sc["core_seconds_allocated"] == pytest.approx(400.0 * 0.25)


def _report(name: str, repeat: int, res: dict[str, dict[str, float]]) -> dict[str, Any]:
    results = {}
    for c, v in res.items():
        results[c] = {"slo_violation_s": v["viol"], "steady_violation_s": v.get("steady", 0.0),
                      "replica_seconds": v["rs"], "core_seconds_used": v["rs"] / 4, "actions": 3, "flaps": 1,
                      "recovery": [{"recovery_s": 5.0, "recovered": True}], "controller": {}}  # fmt: skip
    return {"scenario": {"name": name}, "controllers": list(res), "results": results, "repeat": repeat,
            "files": {"json": f"/x/{name}-r{repeat}/report.json"}}  # fmt: skip


META = {"command": "rlctl validate-real", "started": "t", "machine": {"cpus": 2, "cpu_model": "cpu", "memory_gib": 1,
        "kernel": "k", "python": "3.11", "git_commit": "abc"}, "settings": {"path": "p", "replica_cpu_cores": 0.25,
        "cpu_us_per_request": 1000, "replicas": 2, "max_replicas": 5, "interval_s": 5.0}}  # fmt: skip


def test_summary_totals_spread_and_verdict() -> None:
    reports = [
        _report("a", 1, {"ppo:default": {"viol": 10, "rs": 900}, "hpa-tuned": {"viol": 40, "rs": 1000}}),
        _report("b", 1, {"ppo:default": {"viol": 0, "rs": 800}, "hpa-tuned": {"viol": 10, "rs": 800}}),
        _report("a", 2, {"ppo:default": {"viol": 30, "rs": 1100}, "hpa-tuned": {"viol": 40, "rs": 1000}}),
        _report("b", 2, {"ppo:default": {"viol": 0, "rs": 800}, "hpa-tuned": {"viol": 10, "rs": 800}}),
    ]
    s = summarize(reports, META)
    a = s["scenarios"]["a"]["per_controller"]["ppo:default"]["slo_violation_s"]
    assert a == {"mean": 20.0, "min": 10.0, "max": 30.0, "n": 2}
    tot = s["totals"]["ppo:default"]["slo_violation_s"]
    assert tot["mean"] == 20.0 and tot["min"] == 10.0 and tot["max"] == 30.0  # a: 20 (10-30), b: 0
    partial = summarize(reports[:3], META)  # b has one repeat only: it still counts once
    assert partial["totals"]["hpa-tuned"]["slo_violation_s"]["mean"] == 50.0
    v = s["verdict"]
    assert v["violation_ratio"] == pytest.approx(0.4) and v["replica_seconds_ratio"] == pytest.approx(1.0)
    assert v["met"] is True
    json.dumps(s, allow_nan=False)
    md = render_summary(s)
    assert "| SLO violation (s) | 20 (10–30) | 40 |" in md and "goal met" in md
    worse = summarize([_report("a", 1, {"ppo:default": {"viol": 5, "rs": 500, "steady": 5},
                                        "hpa-tuned": {"viol": 40, "rs": 1000, "steady": 1}})], META)  # fmt: skip
    assert worse["verdict"]["met"] is False and worse["verdict"]["steady_worse"][0]["scenario"] == "a"


def test_validate_real_rejects_unknown_scenario_before_starting_anything() -> None:
    res = invoke_rlctl("validate-real", "--quick", "--scenario", "nope", "--out", "/tmp/rlctl-never-written")
    assert res.returncode == 2
    assert "--scenario 'nope'" in res.stderr and "flash-crowd" in res.stderr
    assert not Path("/tmp/rlctl-never-written").exists()


def test_online_flag_is_refused_on_the_simulator(tmp_path: Path) -> None:
    scen = Path(__file__).resolve().parents[2] / "chaos" / "scenarios" / "real" / "quick-flash.yaml"
    res = invoke_rlctl("chaos", "run", str(scen), "--backend", "sim", "--online")
    assert res.returncode == 2 and "--online needs a live backend" in res.stderr


def test_simulator_predicts_the_real_suite_with_the_test_bed_profile() -> None:
    from chaos.local_suite import simulate

    pred = simulate(["quick-flash"], ["static", "hpa-tuned"])["real-quick-flash"]
    # Two 0.25-core replicas cannot carry a 600 QPS flash crowd; the HPA adds replicas and violates less.
    assert pred["static"]["replica_seconds"] == pytest.approx(2 * 180, rel=0.05)
    assert pred["hpa-tuned"]["replica_seconds"] > pred["static"]["replica_seconds"]
    assert pred["static"]["slo_violation_s"] > pred["hpa-tuned"]["slo_violation_s"]
    s = summarize([_report("real-quick-flash", 1, {"static": {"viol": 50, "rs": 360},
                                                   "hpa-tuned": {"viol": 20, "rs": 700}})],
                  {**META, "simulator": {"profile": "envs/profiles/testbed-real.yaml",
                                         "scenarios": {"real-quick-flash": pred}}})  # fmt: skip
    md = render_summary(s)
    assert "simulator's prediction" in md and "| real-quick-flash | static |" in md


class Keep(Controller):
    name = "keep"

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        return knobs.copy()


@pytest.mark.real  # redis-server
def test_the_guard_runs_in_the_control_loop_on_the_online_path(tmp_path: Path) -> None:
    bounds = KnobBounds(max_replicas=8)
    knobs = Knobs(replicas=2).to_array()[None]
    with redis_server(tmp_path / "redis") as server:
        plain = OnlineController(Keep(), RulePolicy(Keep()), server.url, bounds=bounds, interval_s=5.0)
        guarded = OnlineController(Keep(), RulePolicy(Keep()), server.url, bounds=bounds, interval_s=5.0,
                                   guard=GuardConfig(slo_p99_ms=8.0))  # fmt: skip
        for ctl in (plain, guarded):
            ctl.reset(1, bounds, 5.0)
        hot = _window(p99=20.0)  # 2.5x the SLO: the loop's window holds one sample per decision
        assert [plain.decide(hot, knobs)[0, KNOB_COL["replicas"]] for _ in range(2)] == [2, 2]
        assert [guarded.decide(hot, knobs)[0, KNOB_COL["replicas"]] for _ in range(2)] == [2, 4]  # 2 misses: +100 %
        from rlctl.online.store import TelemetryStore

        first, second = TelemetryStore(server.url).audit_records(guarded.service)
        assert "SLO guard" not in first.detail
        assert second.controller == "keep+guard" and "SLO guard: replicas 2 -> 4" in second.detail


def test_guarded_policies_are_served_and_keep_their_guard_online() -> None:
    assert served_policies(["ppo:a", "hpa-tuned", "ppo+guard:b", "static"]) == ["a", "b"]
    path = OnlinePath(["default"])
    path.serve = type("Serve", (), {"url": "http://127.0.0.1:9"})()
    path.store_url = "redis://127.0.0.1:9/0"
    cfg = GuardConfig(slo_p99_ms=12.0)
    ctl = path.controller(SLOGuard(Keep(), cfg, name="ppo+guard:default"), "ppo+guard:default",
                          bounds=KnobBounds(), interval_s=5.0)  # fmt: skip
    assert ctl.guard == cfg and type(ctl.policy).__name__ == "HttpPolicy"
    with pytest.raises(ConfigError, match=r"ppo\+guard:default: expected the policy under the SLO guard"):
        path.controller(Keep(), "ppo+guard:default", bounds=KnobBounds(), interval_s=5.0)
