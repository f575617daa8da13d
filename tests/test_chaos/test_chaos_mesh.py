"""Rendering scenarios as Chaos Mesh manifests: every kind and action, names, Schedules, Workflows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from chaos import mesh
from chaos.schema import manifest_problems, validate_manifest
from chaos.spec import SIM_ONLY, FaultKind, Scenario, load_scenario, scenario_from_dict
from rlctl.errors import ChaosError, ConfigError

SCENARIOS = Path(__file__).resolve().parents[2] / "chaos" / "scenarios"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SEL = {"namespace": "demo", "labels": {"app": "gosvc"}}
TARGET = {"namespace": "demo", "labels": {"app": "loadgen"}, "mode": "all"}


def scenario(*faults: dict, sequences: tuple[dict, ...] = (), name: str = "t") -> Scenario:
    return scenario_from_dict({"name": name, "duration_s": 600, "faults": list(faults), "sequences": list(sequences)})


def fault(kind: str, **extra: object) -> dict:
    out: dict = {"kind": kind, "start_s": 10, "duration_s": 30, "selector": SEL}
    if kind == "network-partition":
        out["target"] = TARGET
    out.update(extra)
    return out


def render_one(kind: str, **extra: object) -> dict:
    (manifest,) = mesh.render_scenario(scenario(fault(kind, **extra)), run_id="r1")
    return manifest


# ------------------------------------------------------------------ every kind and action

CASES = [
    ("network-delay", {"params": {"latency_ms": 120, "jitter_ms": 0.5, "correlation": 50}}),
    ("network-loss", {"params": {"loss_percent": 12.5}}),
    ("network-partition", {"params": {"direction": "to"}}),
    ("network-partition", {"params": {"direction": "from"}}),
    ("network-partition", {"params": {"direction": "both", "fraction": 0.25}}),
    ("network-bandwidth", {"params": {"rate_mbps": 2.5}}),
    ("network-delay", {"target": TARGET}),
    ("cpu-stress", {"params": {"workers": 4, "load_percent": 55}}),
    ("memory-stress", {"params": {"workers": 2, "size_mib": 512}}),
    ("pod-kill", {"params": {"grace_period_s": 5}}),
    ("pod-failure", {}),
    ("container-kill", {"params": {"container": "sidecar"}}),
    ("io-latency", {"params": {"delay_ms": 3, "percent": 40, "path": "/var/lib/**", "volume_path": "/var/lib"}}),
    ("time-skew", {"params": {"offset_ms": 90000}}),
    ("pod-failure", {"selector": {**SEL, "mode": "fixed", "value": "2"}}),
    ("cpu-stress", {"selector": {**SEL, "mode": "random-max-percent", "value": "50"}}),
]


@pytest.mark.parametrize(("kind", "extra"), CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_every_kind_and_action_renders_schema_valid(kind: str, extra: dict) -> None:
    manifest = render_one(kind, **extra)
    assert manifest_problems(manifest) == []
    assert manifest["apiVersion"] == "chaos-mesh.org/v1alpha1"
    assert manifest["kind"] == mesh.CHAOS_MESH_KIND[FaultKind(kind)][0]  # type: ignore[index]
    assert manifest["spec"]["duration"] == "30s"
    assert manifest["spec"]["selector"] == {"namespaces": ["demo"], "labelSelectors": {"app": "gosvc"}}


def test_every_chaos_mesh_fault_kind_is_covered() -> None:
    covered = {FaultKind(k) for k, _ in CASES}
    assert covered == set(FaultKind) - SIM_ONLY


def test_action_fields_match_chaos_mesh() -> None:
    spec = render_one("network-delay", params={"latency_ms": 120, "jitter_ms": 0.5, "correlation": 50})["spec"]
    assert spec["action"] == "delay"
    assert spec["delay"] == {"latency": "120ms", "jitter": "0.5ms", "correlation": "50"}
    assert render_one("network-loss", params={"loss_percent": 12.5})["spec"]["loss"] == {
        "loss": "12.5",
        "correlation": "25",
    }
    spec = render_one("network-partition", params={"direction": "both", "fraction": 0.25})["spec"]
    assert (spec["action"], spec["direction"]) == ("partition", "both")
    assert spec["target"] == {
        "mode": "fixed-percent",
        "value": "25",
        "selector": {"namespaces": ["demo"], "labelSelectors": {"app": "loadgen"}},
    }
    assert render_one("network-bandwidth", params={"rate_mbps": 2.5})["spec"]["bandwidth"] == {
        "rate": "2500kbit",
        "limit": 20971520,
        "buffer": 10000,
    }
    assert render_one("network-bandwidth")["spec"]["bandwidth"]["rate"] == "10mbit"
    assert render_one("cpu-stress", params={"workers": 4, "load_percent": 55})["spec"]["stressors"] == {
        "cpu": {"workers": 4, "load": 55}
    }
    assert render_one("memory-stress", params={"size_mib": 512})["spec"]["stressors"] == {
        "memory": {"workers": 1, "size": "512MiB"}
    }
    assert render_one("pod-kill", params={"grace_period_s": 5})["spec"]["gracePeriod"] == 5
    assert render_one("pod-failure")["spec"]["action"] == "pod-failure"
    spec = render_one("container-kill", params={"container": "sidecar"})["spec"]
    assert (spec["action"], spec["containerNames"]) == ("container-kill", ["sidecar"])
    spec = render_one("io-latency")["spec"]
    assert {k: spec[k] for k in ("action", "delay", "percent", "path", "volumePath")} == {
        "action": "latency",
        "delay": "10ms",
        "percent": 100,
        "path": "/data/**",
        "volumePath": "/data",
    }
    assert render_one("time-skew")["spec"]["timeOffset"] == "-10m0s"


def test_labels_and_deterministic_names() -> None:
    first = mesh.render_scenario(scenario(fault("pod-kill"), fault("cpu-stress", name="Squeeze CPU")), run_id="r1")
    again = mesh.render_scenario(scenario(fault("pod-kill"), fault("cpu-stress", name="Squeeze CPU")), run_id="r1")
    assert first == again
    assert [m["metadata"]["name"] for m in first] == ["t-f0-pod-kill-r1", "t-f1-squeeze-cpu-r1"]
    for m in first:
        assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rlctl"
        assert m["metadata"]["labels"]["rlctl.io/run-id"] == "r1"
        assert m["metadata"]["namespace"] == "demo"
    other = mesh.render_scenario(scenario(fault("pod-kill")), run_id="r2")
    assert other[0]["metadata"]["name"] == "t-f0-pod-kill-r2"


def test_long_names_stay_dns1123_within_limits_and_distinct() -> None:
    long = "A Very Long Scenario Name That Goes On And On_and_on " * 3
    faults = [fault("pod-kill"), fault("pod-kill"), fault("pod-kill", repeat={"every_s": 60, "count": 2})]
    seq = {"name": "cascade " * 10, "steps": [fault("cpu-stress")]}
    manifests = mesh.render_scenario(scenario(*faults, sequences=(seq,), name=long), run_id="run-123")
    names = [m["metadata"]["name"] for m in manifests]
    assert len(set(names)) == len(names)
    for m, name in zip(manifests, names, strict=True):
        assert DNS1123.match(name), name
        assert len(name) <= mesh.NAME_LIMIT.get(m["kind"], 63)
        assert name.endswith("-run-123")
        assert manifest_problems(m) == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30s"), (90, "1m30s"), (300, "5m0s"), (3725.5, "1h2m5.5s"), (0.1, "100ms"), (1.5, "1.5s"), (-600, "-10m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert mesh.go_duration(seconds) == text


@pytest.mark.parametrize("bad", ["", "UPPER", "-x", "has_underscore", "x" * 25])
def test_bad_run_id_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="run id"):
        mesh.render_scenario(scenario(fault("pod-kill")), run_id=bad)


def test_new_run_ids_are_valid() -> None:
    assert mesh.check_run_id(mesh.new_run_id())


# ------------------------------------------------------------------ Schedule and Workflow


def test_repeating_fault_renders_as_schedule() -> None:
    (manifest,) = mesh.render_scenario(
        scenario(fault("network-delay", start_s=45, repeat={"every_s": 120, "count": 4})), run_id="r1"
    )
    validate_manifest(manifest)
    assert manifest["kind"] == "Schedule"
    spec = manifest["spec"]
    assert spec["schedule"] == "@every 2m0s"
    assert spec["type"] == "NetworkChaos"
    assert spec["historyLimit"] == 4
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["networkChaos"]["action"] == "delay"
    assert spec["networkChaos"]["duration"] == "30s"
    assert manifest["metadata"]["annotations"] == {"rlctl.io/start-offset": "45s", "rlctl.io/repeat-count": "4"}


@pytest.mark.parametrize("kind", sorted(k.value for k in set(FaultKind) - SIM_ONLY))
def test_every_kind_is_schema_valid_inside_schedule_and_workflow(kind: str) -> None:
    sched = fault(kind, repeat={"every_s": 60, "count": 2})
    seq = {"name": "seq", "steps": [fault(kind, start_s=0)]}
    for manifest in mesh.render_scenario(scenario(sched, sequences=(seq,)), run_id="r1"):
        validate_manifest(manifest)


def test_overlapping_schedule_warns() -> None:
    with pytest.warns(UserWarning, match="Forbid"):
        mesh.render_scenario(scenario(fault("pod-kill", duration_s=90, repeat={"every_s": 60})), run_id="r1")


def test_sequence_renders_as_serial_workflow() -> None:
    seq = {
        "name": "cascade",
        "start_s": 60,
        "gap_s": 15,
        "steps": [fault("network-delay", start_s=0, duration_s=20), fault("pod-kill", start_s=5, duration_s=10)],
    }
    (manifest,) = mesh.render_scenario(scenario(sequences=(seq,)), run_id="r1")
    validate_manifest(manifest)
    assert manifest["kind"] == "Workflow"
    spec = manifest["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    entry = templates[spec["entry"]]
    assert entry["templateType"] == "Serial"
    assert entry["children"] == ["step-0-network-delay", "gap-0", "wait-1", "step-1-pod-kill"]
    assert entry["deadline"] == "50s"
    step = templates["step-0-network-delay"]
    assert (step["templateType"], step["deadline"]) == ("NetworkChaos", "20s")
    assert step["networkChaos"]["delay"]["latency"] == "50ms"
    assert "duration" not in step["networkChaos"]  # the deadline bounds it
    assert templates["gap-0"] == {"name": "gap-0", "templateType": "Suspend", "deadline": "15s"}
    assert templates["wait-1"]["deadline"] == "5s"
    assert templates["step-1-pod-kill"]["podChaos"]["action"] == "pod-kill"
    assert len(manifest["metadata"]["name"]) <= 51


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kind", sorted(k.value for k in SIM_ONLY))
def test_simulator_only_faults_are_refused(kind: str) -> None:
    s = scenario(fault("pod-kill"), {"kind": kind, "start_s": 0, "duration_s": 10})
    with pytest.raises(ChaosError, match=rf"fault #1 \({kind}\) is simulator-only.*--backend sim"):
        mesh.render_scenario(s, run_id="r1")
    seq = {"name": "hw", "steps": [{"kind": kind, "start_s": 0, "duration_s": 10}]}
    with pytest.raises(ChaosError, match=rf"sequence 'hw' step #0 \({kind}\) is simulator-only"):
        mesh.render_scenario(scenario(sequences=(seq,)), run_id="r1")


def test_missing_namespace_is_an_error_unless_a_default_is_given() -> None:
    s = scenario({"kind": "pod-kill", "start_s": 0, "duration_s": 10})
    with pytest.raises(ChaosError, match=r"fault #0 \(pod-kill\) has no selector.namespace.*--namespace"):
        mesh.render_scenario(s, run_id="r1")
    (manifest,) = mesh.render_scenario(s, run_id="r1", namespace="fallback")
    assert manifest["metadata"]["namespace"] == "fallback"
    assert manifest["spec"]["selector"]["namespaces"] == ["fallback"]


def test_partition_without_target_is_refused() -> None:
    s = scenario({"kind": "network-partition", "start_s": 0, "duration_s": 10, "selector": SEL})
    with pytest.raises(ChaosError, match="needs `target`"):
        mesh.render_scenario(s, run_id="r1")


def test_value_modes_need_a_value() -> None:
    s = scenario(fault("pod-kill", selector={**SEL, "mode": "fixed-percent"}))
    with pytest.raises(ChaosError, match="needs `value`"):
        mesh.render_scenario(s, run_id="r1")


def test_target_only_on_network_faults() -> None:
    with pytest.raises(ConfigError, match="'target' applies to network faults only"):
        scenario({"kind": "pod-kill", "start_s": 0, "duration_s": 10, "target": TARGET})


# ------------------------------------------------------------------ windows (for the k8s backend)


def test_window_manifests_one_object_per_occurrence() -> None:
    s = scenario(
        fault("pod-kill", start_s=0, duration_s=10, repeat={"every_s": 100, "count": 3}),
        sequences=({"name": "seq", "start_s": 50, "steps": [fault("cpu-stress", start_s=0, duration_s=20)] * 2},),
    )
    planned = mesh.window_manifests(s, run_id="r1")
    names = [m["metadata"]["name"] for _, m in planned]
    assert names == [
        "t-f0-pod-kill-0-r1",
        "t-s0-0-cpu-stress-0-r1",
        "t-s0-1-cpu-stress-0-r1",
        "t-f0-pod-kill-1-r1",
        "t-f0-pod-kill-2-r1",
    ]
    assert [w.start_s for w, _ in planned] == [0, 50, 70, 100, 200]
    assert all(m["kind"] in ("PodChaos", "StressChaos") for _, m in planned)
    assert planned[1][1]["spec"]["duration"] == "20s"
    for _, m in planned:
        validate_manifest(m)


# ------------------------------------------------------------------ the example scenarios


def test_example_scenarios_load_and_render_schema_valid() -> None:
    kinds: set[str] = set()
    sim_only = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        s = load_scenario(path)
        if any(f.sim_only for f in s.all_faults()):
            sim_only.append(path.name)
            with pytest.raises(ChaosError, match="--backend sim"):
                mesh.render_scenario(s, run_id="r1")
            continue
        for m in mesh.render_scenario(s, run_id="r1"):
            validate_manifest(m)
            kinds.add(m["kind"])
            kinds.update(t["templateType"] for t in m["spec"].get("templates", []))
            kinds.add(m["spec"].get("type", m["kind"]))
    assert {"NetworkChaos", "StressChaos", "PodChaos", "IOChaos", "TimeChaos", "Schedule", "Workflow"} <= kinds
    assert sim_only == ["sim-hardware.yaml"]


def test_local_three_faults_scenario() -> None:
    s = load_scenario(SCENARIOS / "local-three-faults.yaml")
    assert [f.kind for f in s.faults] == [FaultKind.NETWORK_DELAY, FaultKind.CPU_STRESS, FaultKind.POD_KILL]
    assert 150 <= s.duration_s <= 240
    assert s.load.kind in ("constant", "step")
    assert all(w.end_s <= s.duration_s for w in s.windows())


def test_example_loads_are_modest() -> None:
    for path in SCENARIOS.glob("*.yaml"):
        load = load_scenario(path).load
        peak = {"constant": load.qps, "step": max(load.base_qps, load.step_qps), "ramp": load.end_qps}.get(
            load.kind, load.peak_qps
        )
        assert 50 <= peak <= 1000, path.name


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_scenario_round_trips_through_yaml(path: Path) -> None:
    s = load_scenario(path)
    again = scenario_from_dict(yaml.safe_load(yaml.safe_dump(s.model_dump(mode="json"))))
    assert again == s


def test_to_yaml_is_multi_document_and_reparses() -> None:
    manifests = mesh.render_scenario(load_scenario(SCENARIOS / "resource-pressure.yaml"), run_id="r1")
    text = mesh.to_yaml(manifests)
    assert text.count("---\n") == len(manifests)
    assert list(yaml.safe_load_all(text)) == manifests
