"""The boundary rule library: learned from real sim chaos runs, kept in a file, enforced online.

Sim runs: a CPU stress of one core at 400 QPS breaks the P99 of a service running GOMAXPROCS=1
(the stressor takes its one P's core) and not of one running 2 or more; the learner must find
that, count its independent runs, retire it when a run contradicts it, and the safety layer
must refuse GOMAXPROCS=1 in the online loop while the telemetry shows the stress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_rlctl
from online_support import MemoryReplicas, gosvc, redis_server

from chaos.backends.online import OnlineController, RulePolicy
from chaos.backends.sim import SimBackend, SimConfig
from chaos.learn import LearnSettings, read_observations, update
from chaos.runner import build_report, write_report
from chaos.spec import scenario_from_dict
from policies.baselines import StaticController
from rlctl.contract import KNOB_COL, KnobBounds, Knobs, TelemetrySample
from rlctl.errors import ConfigError
from rlctl.online.actuators import Actuators, AdminKnobsActuator
from rlctl.online.loop import ControlConfig, ControlLoop
from rlctl.online.policy import Decision
from rlctl.online.procs import GoService
from rlctl.online.safety import SafetyConfig, SafetyLayer
from rlctl.rules import SCHEMA, Library, Rule, compile_rules, load_library, load_safety_rules, save_library

SETTINGS = LearnSettings()


def sim_run(out: Path, run_id: str, *, gomaxprocs: int, seed: int, load_percent: int = 100) -> Path:
    """One real sim chaos run (the runner's report), static knobs, a CPU stress from 90 s to 150 s."""
    scenario = scenario_from_dict({
        "name": f"cpu-{load_percent}", "kind": "fault", "duration_s": 200, "slo_p99_ms": 8,
        "load": {"kind": "constant", "qps": 400},
        "faults": [{"kind": "cpu-stress", "start_s": 90, "duration_s": 60,
                    "params": {"workers": 1, "load_percent": load_percent}}],
    })  # fmt: skip
    knobs = Knobs(replicas=2, gomaxprocs=gomaxprocs)
    backend = SimBackend(SimConfig(seed=seed, initial_knobs=knobs))
    # The registry's sim `static` runs Go's default GOMAXPROCS (the quota); these keep the starting knobs.
    record = backend.run(scenario, StaticController(knobs), run_id=run_id)
    report = build_report(scenario, [record], backend="sim", run_id=run_id)
    path = out / run_id / "report.json"
    write_report(report, None, path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seeds at GOMAXPROCS=1 (broke), three runs at 2, 4 and 8 (held)."""
    out = tmp_path_factory.mktemp("runs")
    for seed in range(5):
        sim_run(out / "support", f"gmp1-s{seed}", gomaxprocs=1, seed=seed)
    for i, gmp in enumerate((2, 4, 8)):
        sim_run(out / "held", f"gmp{gmp}", gomaxprocs=gmp, seed=10 + i)
    return out


@pytest.fixture(scope="module")
def library(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lib") / "rules.yaml"
    result = invoke_rlctl("rules", "learn", str(runs), "--library", str(path))
    assert result.returncode == 0, result.stderr
    return path


def cpu_rule(lib: Library) -> Rule:
    (rule,) = [r for r in lib.rules if r.fault == "cpu-stress" and r.breaks == "p99_ms"]
    return rule


def test_observations_say_what_hit_what_was_set_and_what_broke(runs: Path) -> None:
    obs, n = read_observations([runs], SETTINGS)
    assert n == 8 and len(obs) == 8
    broke = {o.values["gomaxprocs"]: sorted(o.broke) for o in obs if o.values["gomaxprocs"] != 1}
    assert broke == {2.0: [], 4.0: [], 8.0: []}
    for o in (o for o in obs if o.values["gomaxprocs"] == 1):
        assert o.kind == "cpu-stress" and o.values["workers"] == 1 and o.values["load_percent"] == 100
        assert "p99_ms" in o.broke and 0 <= o.broke["p99_ms"] <= 60
        assert o.values["qps_per_replica"] == pytest.approx(200, rel=0.1)


def test_a_rule_enters_with_five_independent_runs_and_compiles(library: Path) -> None:
    lib = load_library(library)
    rule = cpu_rule(lib)
    assert rule.id >= 1 and rule.status == "active"
    assert [c.text() for c in rule.when] == ["gomaxprocs <= 1"]
    assert [c.text() for c in rule.prefer] == ["gomaxprocs >= 2"]
    assert rule.support.count == 5 and rule.support.backends == {"sim": 5}
    assert rule.support.first_seen <= rule.support.last_seen
    assert rule.evidence["windows"] == 5
    (compiled,) = [c for c in compile_rules(lib) if c.id == rule.id]
    assert compiled.fault == "cpu-stress" and compiled.detect


def test_four_runs_are_a_candidate_and_a_replayed_seed_is_not_independent(runs: Path, tmp_path: Path) -> None:
    four = [*sorted((runs / "support").glob("gmp1-s[0-3]")), runs / "held"]
    lib = update(Library(), *read_observations(four, SETTINGS)[:1], SETTINGS, 4)
    assert not [r for r in lib.rules if r.fault == "cpu-stress" and r.breaks == "p99_ms"]
    assert [c.support.count for c in lib.candidates if c.breaks == "p99_ms"] == [4]
    # the same seed under another run id replays the same run: still four experiments
    replay = sim_run(tmp_path, "gmp1-s0-again", gomaxprocs=1, seed=0)
    lib = update(Library(), read_observations([*four, replay], SETTINGS)[0], SETTINGS, 5)
    assert [c.support.count for c in lib.candidates if c.breaks == "p99_ms"] == [4]


def test_relearning_keeps_numbers_and_a_contradiction_retires_the_rule(library: Path, runs: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    path = tmp_path / "rules.yaml"
    path.write_bytes(library.read_bytes())
    first = cpu_rule(load_library(path))
    assert invoke_rlctl("rules", "learn", str(runs), "--library", str(path)).returncode == 0
    again = cpu_rule(load_library(path))
    assert (again.id, again.status, again.support.count) == (first.id, "active", 5)
    # at half the stress GOMAXPROCS=1 holds: inside the rule's region (it has no intensity bound)
    held = sim_run(tmp_path / "new", "gmp1-light", gomaxprocs=1, seed=99, load_percent=50)
    result = invoke_rlctl("rules", "learn", str(held), "--library", str(path), "--json", "-")
    assert result.returncode == 0, result.stderr
    assert first.id in json.loads(result.stdout)["retired"]
    lib = load_library(path)
    retired = lib.rule(first.id)
    assert retired.status == "retired" and retired.retired is not None
    assert retired.retired.run == "sim:gmp1-light:static"
    assert all(c.id != first.id for c in compile_rules(lib))
    # relearning from the supporting runs now refuses the rule the stored contradiction falsifies
    assert invoke_rlctl("rules", "learn", str(runs), "--library", str(path)).returncode == 0
    lib = load_library(path)
    assert [r.id for r in lib.rules if r.fault == "cpu-stress" and r.status == "active" and r.breaks == "p99_ms"] == []


def test_list_and_show(library: Path) -> None:
    rule = cpu_rule(load_library(library))
    listed = invoke_rlctl("rules", "list", "--library", str(library), "--json", "-")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout)["rules"] if r["id"] == rule.id]
    assert row["support"] == 5 and "gomaxprocs <= 1" in row["statement"]
    shown = invoke_rlctl("rules", "show", str(rule.id), "--library", str(library), "--json", "-")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["enforced"] is True and len(doc["support"]["experiments"]) == 5
    missing = invoke_rlctl("rules", "show", "999", "--library", str(library))
    assert missing.returncode == 2 and "no rule 999" in missing.stderr


def test_bad_input_exits_2_and_never_touches_the_library(library: Path, runs: Path, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(library.read_bytes())
    before = path.read_bytes()
    not_report = tmp_path / "other.json"
    not_report.write_text(json.dumps({"schema": "rlctl.bench/v1", "x": 1}))
    r = invoke_rlctl("rules", "learn", str(runs), str(not_report), "--library", str(path))
    assert r.returncode == 2 and "not a chaos run report" in r.stderr and str(not_report) in r.stderr
    assert path.read_bytes() == before
    broken = tmp_path / "broken.yaml"
    broken.write_text("schema: rlctl.rules/v1\nrules: [\n")
    r = invoke_rlctl("rules", "list", "--library", str(broken))
    assert r.returncode == 2 and str(broken) in r.stderr
    future = tmp_path / "future.yaml"
    unknown = "schema: rlctl.rules/v9\nrules: []\n"
    future.write_text(unknown)
    r = invoke_rlctl("rules", "learn", str(runs), "--library", str(future))
    assert r.returncode == 2 and "rlctl.rules/v9" in r.stderr and future.read_text() == unknown
    edited = tmp_path / "edited.yaml"
    edited.write_text(before.decode().replace("breaks: p99_ms", "breaks: latency", 1))
    with pytest.raises(ConfigError, match="breaks 'latency'"):
        load_library(edited)
    r = invoke_rlctl("control", "--service", "x", "--metrics", "http://127.0.0.1:1/metrics", "--redis", "none",
                     "--rules", str(future), "--max-steps", "1", "--metrics-port", "0")  # fmt: skip
    assert r.returncode == 2 and "rlctl.rules/v9" in r.stderr


def test_library_round_trips(library: Path, tmp_path: Path) -> None:
    lib = load_library(library)
    assert lib.schema_ == SCHEMA
    save_library(lib, tmp_path / "copy.yaml")
    assert load_library(tmp_path / "copy.yaml") == lib


# --------------------------------------------------------------------------- the safety layer


def sample(**fields: float) -> np.ndarray:
    base = {"timestamp_s": 1000.0, "interval_s": 5.0, "offered_qps": 400.0, "p99_ms": 3.0, "cpu_util": 0.5}
    return TelemetrySample.from_dict({**base, **fields}, source="test").to_array()[None, :]


def test_safety_layer_forbids_the_rule_only_while_the_fault_is_detected(library: Path) -> None:
    rules = load_safety_rules(library)
    layer = SafetyLayer(SafetyConfig(rules=rules, cooldown_s={}), 5.0)
    g = KNOB_COL["gomaxprocs"]
    cur = Knobs(gomaxprocs=2).to_array()
    want = cur.copy()
    want[g] = 1
    assert layer.check_telemetry(sample(cfs_throttled_fraction=0.0), 1000.0) is None
    out, _ = layer.limit(cur, want, 1000.0)
    assert out[g] == 1  # no stress seen: allowed
    assert layer.check_telemetry(sample(cfs_throttled_fraction=0.4), 1000.0) is None
    out, notes = layer.limit(cur, want, 1000.0)
    assert out[g] == 2 and any("forbids gomaxprocs <= 1" in n and "cfs_throttled_fraction=0.4" in n for n in notes)
    out, notes = layer.limit(Knobs(gomaxprocs=1).to_array(), Knobs(gomaxprocs=1).to_array(), 1000.0)
    assert out[g] == 2 and any("gomaxprocs 1 -> 2" in n for n in notes)  # already inside: leaves it
    unknown = np.full(8, np.nan)  # knobs nobody can read stay unknown, and the note names only what moved
    unknown[g] = 2
    want_unknown = unknown.copy()
    want_unknown[g] = 1
    out, notes = layer.limit(unknown, want_unknown, 1000.0)
    assert out[g] == 2 and [n.split(": ")[-1] for n in notes if n.startswith("rule ")] == ["gomaxprocs 1 -> 2"]


# --------------------------------------------------------------------------- end to end, real gosvc


class WantsOneProc:
    """A policy that asks for GOMAXPROCS=1 (the action the learned rule forbids under CPU stress)."""

    name = "wants-one-proc"
    window = None

    def act(self, service: str, window: object, knobs: object) -> Decision:
        target = np.asarray(knobs, dtype=np.float64).copy()
        target[KNOB_COL["gomaxprocs"]] = 1
        return Decision([2, 0, 1, 1, 1, 1, 0, 0], target, self.name, "x", "y")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoService]:
    with gosvc(tmp_path_factory.mktemp("rules-gosvc"), "--cpu-us", "50") as svc:
        yield svc


@pytest.mark.real
def test_rule_learned_from_sim_runs_blocks_the_action_in_the_online_loop(library: Path, service: GoService) -> None:
    """The loop, a real gosvc's /admin/knobs: GOMAXPROCS stays 2 while the stress is seen, goes to 1 after."""
    admin = AdminKnobsActuator(service.admin_url, token_file=Path(service.token_file or ""))
    throttled = {"value": 0.4}

    def scrape() -> TelemetrySample:
        data = {"timestamp_s": time.time(), "interval_s": 1.0, "offered_qps": 400.0, "p99_ms": 3.0,
                "cpu_util": 0.5, "cfs_throttled_fraction": throttled["value"]}  # fmt: skip
        return TelemetrySample.from_dict(data, source="test")

    safety = SafetyConfig(rules=load_safety_rules(library), cooldown_s={})
    actuators = Actuators(admin=admin, replicas=MemoryReplicas(2))
    loop = ControlLoop(ControlConfig("rules-e2e", interval_s=1.0, safety=safety), actuators, scrape=scrape,
                       policy=WantsOneProc())  # fmt: skip
    admin.put({"gomaxprocs": 2})
    g = KNOB_COL["gomaxprocs"]
    blocked = loop.step()
    assert blocked.reason == "policy" and blocked.target[g] == 1
    assert admin.get()["gomaxprocs"] == 2, "the service's GOMAXPROCS, read back, must not have moved"
    assert any("cpu-stress detected" in n and "forbids gomaxprocs <= 1" in n for n in blocked.notes)
    throttled["value"] = 0.0
    time.sleep(0.01)
    allowed = loop.step()
    assert allowed.applied[g] == 1 and admin.get()["gomaxprocs"] == 1
    assert not any("forbids" in n for n in allowed.notes)


# --------------------------------------------------------------------------- chaos run --online --rules


class WantsOneProcController(StaticController):
    """A controller (the chaos runner's interface) that asks for GOMAXPROCS=1 every interval."""

    name = "wants-one-proc"

    def decide(self, windows: np.ndarray, knobs: np.ndarray) -> np.ndarray:
        out = np.asarray(knobs, dtype=np.float64).copy()
        out[:, KNOB_COL["gomaxprocs"]] = 1
        return out


def _stressed_window(throttled: float) -> np.ndarray:
    row = sample(cfs_throttled_fraction=throttled, timestamp_s=time.time(), replicas=2, gomaxprocs=2)
    return np.repeat(row[None, :, :], 3, axis=1)


@pytest.mark.real  # redis-server
def test_a_live_chaos_runs_online_path_enforces_the_rules(library: Path, tmp_path: Path) -> None:
    """`rlctl chaos run --online --rules`: the run's safety layer refuses what the rule forbids."""
    bounds = KnobBounds(max_replicas=4, max_gomaxprocs=4)
    knobs = Knobs(replicas=2, gomaxprocs=2).to_array()[None]
    g = KNOB_COL["gomaxprocs"]
    with redis_server(tmp_path / "redis") as server:
        out = {}
        for name, rules in (("plain", ()), ("ruled", load_safety_rules(library))):
            inner = WantsOneProcController(Knobs(replicas=2, gomaxprocs=2))
            ctl = OnlineController(inner, RulePolicy(inner), server.url, bounds=bounds, interval_s=5.0, rules=rules)
            ctl.reset(1, bounds, 5.0)
            out[name] = ctl.decide(_stressed_window(0.4), knobs)[0]
    assert out["plain"][g] == 1, "without the library the move goes through (the test could fail)"
    assert out["ruled"][g] == 2, "under the detected CPU stress the rule keeps GOMAXPROCS off 1"


def test_chaos_run_rules_need_the_online_path_and_a_good_file(library: Path, tmp_path: Path) -> None:
    scenario = Path(__file__).resolve().parents[2] / "chaos" / "scenarios" / "local-three-faults.yaml"
    result = invoke_rlctl("chaos", "run", str(scenario), "--backend", "local", "--rules", str(library))
    assert result.returncode == 2 and "--rules" in result.stderr and "add --online" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: nope\n")
    result = invoke_rlctl("chaos", "run", str(scenario), "--backend", "local", "--online", "--rules", str(bad))
    assert result.returncode == 2 and "bad.yaml" in result.stderr, result.stderr
