"""Limits files (the DSL): validation errors with line numbers, compiled env/safety/Kubernetes outputs, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, invoke_rlctl

from rlctl.contract import KnobBounds, Knobs
from rlctl.dsl import (
    compile_boundary,
    env_config,
    load_boundary,
    load_safety_config,
    parse_objective,
    parse_quantity,
    spec_from_text,
    validate_kubernetes,
    write_compiled,
)
from rlctl.errors import ConfigError

EXAMPLE = REPO / "rlctl" / "examples" / "gosvc.limits.yaml"

MINIMAL = """\
service: shop
slo:
  - p99_ms <= 20
"""


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        spec_from_text(text, source="svc.yaml")
    return str(info.value)


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_boundary(path)
    return str(info.value).replace(str(path), "svc.yaml")


def test_the_example_compiles_to_env_safety_and_kubernetes() -> None:
    spec = load_boundary(EXAMPLE)
    out = compile_boundary(spec)
    env = env_config(out["env"])
    assert env.slo_p99_ms == 8.0
    assert env.reward.replica == 0.05 and env.reward.error == 5.0
    b = env.bounds
    assert (b.min_replicas, b.max_replicas) == (1, 8)
    assert (b.min_gogc, b.max_gogc) == (50, 400)
    assert b.min_gomaxprocs == b.max_gomaxprocs == 2  # quota: cpu_limit 2
    assert b.max_gomemlimit_mib == 921  # floor(0.9 * 1024)
    assert set(b.allow) == {"replicas", "gogc", "object_pool_size", "conn_pool_size", "prefetch"}
    assert env.initial_knobs.gomaxprocs == 2 and env.initial_knobs.replicas == 1
    assert out["env"]["constraints"][1] == {"metric": "error_rate", "op": "<=", "value": 0.001}
    k8s = out["kubernetes"]
    assert "hpa" not in k8s  # controller: act, the one writer of the replicas (tests/test_rlctl/test_one_writer.py)
    assert k8s["pdb"]["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {"app": "gosvc"}}}
    container = k8s["deployment-patch"]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "GOMAXPROCS", "value": "2"}, {"name": "GOGC", "value": "100"},
                                {"name": "GOMEMLIMIT", "value": "921MiB"}]  # fmt: skip
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_hpa_and_pdb_validate_strictly_against_the_kubernetes_schema() -> None:
    pytest.importorskip("kubernetes_validate")
    advised = EXAMPLE.read_text().replace("controller: act\n  autoscaler: none", "controller: advise")
    out = compile_boundary(spec_from_text(advised))
    checks = validate_kubernetes(out["kubernetes"])
    assert checks["hpa"].startswith("ok") and checks["pdb"].startswith("ok")


def test_safety_json_round_trips_into_the_controller_safety_layer(tmp_path: Path) -> None:
    from rlctl.online.safety import SafetyLayer

    paths = write_compiled(compile_boundary(load_boundary(EXAMPLE)), tmp_path)
    assert {p.name for p in paths} == {"env.json", "safety.json", "pdb.yaml", "deployment-patch.yaml"}
    cfg = load_safety_config(tmp_path / "safety.json")
    assert cfg.max_step_replicas == 2 and cfg.max_rungs == 1 and cfg.cooldown_s["gomaxprocs"] == 30.0
    layer = SafetyLayer(cfg, interval_s=5.0)
    cur = Knobs(replicas=2, gomaxprocs=2, gogc=100, gomemlimit_mib=921, turbo=True).to_array()
    want = Knobs(replicas=8, gomaxprocs=4, gogc=800, gomemlimit_mib=921, turbo=False).to_array()
    safe, _ = layer.limit(cur, want, now_s=0.0)
    got = Knobs.from_array(safe)
    assert got.replicas == 4  # max_step 2
    assert got.gogc == 200  # one rung
    assert got.gomaxprocs == 2 and got.turbo is True  # pinned / denied


def test_safety_json_from_another_contract_is_rejected(tmp_path: Path) -> None:
    write_compiled(compile_boundary(load_boundary(EXAMPLE)), tmp_path)
    data = json.loads((tmp_path / "safety.json").read_text())
    data["schema_hash"] = "0000"
    (tmp_path / "safety.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"compiled for contract 0000, this is .*; recompile it"):
        load_safety_config(tmp_path / "safety.json")


def test_minimal_file_keeps_contract_defaults_and_emits_no_kubernetes() -> None:
    out = compile_boundary(spec_from_text(MINIMAL))
    bounds = out["env"]["env_config"]["bounds"]
    defaults = KnobBounds()
    assert bounds["max_replicas"] == defaults.max_replicas and bounds["allow"] == list(defaults.allow)
    assert out["env"]["env_config"]["slo_p99_ms"] == 20.0
    assert out["kubernetes"] == {}


def test_objectives_parse_into_metric_op_value() -> None:
    o = parse_objective("error_rate<=0.001")
    assert (o.metric, o.op, o.value) == ("error_rate", "<=", 0.001)
    assert o.holds({"error_rate": 0.0}) and not o.holds({"error_rate": 0.01})
    with pytest.raises(ValueError, match="unknown metric 'p99' in 'p99 <= 8'; did you mean 'p99_ms'"):
        parse_objective("p99 <= 8")
    with pytest.raises(ValueError, match=r"operator '==' .* is not allowed"):
        parse_objective("p99_ms == 8")
    assert parse_quantity("512Mi") == 512 * 2**20 and parse_quantity("500m") == 0.5


def test_errors_name_file_line_field_and_fix() -> None:
    msg = _errors(
        "service: shop\n"
        "slo:\n"
        "  - p99_ms <= 8\n"
        "  - eror_rate <= 0.001\n"
        "bounds:\n"
        "  replicas: [8, 1]\n"
        "  gomaxprocz: [1, 2]\n"
        "cost:\n"
        "  replicaz: 1\n"
        "kernel:\n"
        "  turbo: maybe\n"
    )
    lines = msg.splitlines()
    assert lines[0] == "invalid limits file:"
    assert lines[1:] == [
        "  svc.yaml:4: slo.1: unknown metric 'eror_rate' in 'eror_rate <= 0.001'; did you mean 'error_rate'?",
        "  svc.yaml:6: bounds.replicas: [8.0, 1.0] is not [min, max] with min <= max; write e.g. [1, 8]",
        "  svc.yaml:7: bounds.gomaxprocz: unknown field 'gomaxprocz'; did you mean 'gomaxprocs'?",
        "  svc.yaml:9: cost.replicaz: unknown field 'replicaz'; did you mean 'replica'?",
        "  svc.yaml:11: kernel.turbo: 'maybe' is not allowed: Input should be 'allow', 'deny', 'on' or 'off'",
    ]


def test_missing_fields_and_missing_p99_objective() -> None:
    assert "svc.yaml:1: slo: required field is missing; add it" in _errors("service: shop\n")
    msg = _errors("service: shop\nslo:\n  - error_rate <= 0.01\n")
    assert "svc.yaml:2: slo: no P99 objective; add 'p99_ms <= N'" in msg


def test_knob_values_that_need_kubernetes_name_their_line(tmp_path: Path) -> None:
    msg = _load(tmp_path, MINIMAL + "runtime:\n  gogc: [50, 400]\n  gomaxprocs: quota\n")
    assert msg == (
        "invalid limits file:\n  svc.yaml:6: runtime.gomaxprocs: 'quota' needs kubernetes.cpu_limit; "
        "add it or give a number"
    )
    msg = _load(tmp_path, MINIMAL + "runtime:\n  gomemlimit: 0.9 * memory_limit\n")
    assert "svc.yaml:5: runtime.gomemlimit: '0.9 * memory_limit' needs kubernetes.memory_limit; add it" in msg


def test_gomemlimit_above_the_container_limit_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + "runtime:\n  gomemlimit: [256Mi, 4Gi]\nkubernetes:\n  deployment: shop\n  memory_limit: 1Gi\n"
    msg = _load(tmp_path, text)
    assert "svc.yaml:5: runtime.gomemlimit: GOMEMLIMIT up to 4096 MiB exceeds kubernetes.memory_limit (1024 MiB)" in msg


def test_a_range_with_no_ladder_rung_is_refused(tmp_path: Path) -> None:
    msg = _load(tmp_path, MINIMAL + "runtime:\n  gogc: [60, 90]\n")
    assert "svc.yaml:5: runtime.gogc: [60, 90] holds no rung of the gogc ladder [25, 50, 100, 200, 400, 800]" in msg


def test_yaml_syntax_errors_give_the_line() -> None:
    msg = _errors("service: shop\nslo: [p99_ms <= 8\nbounds: {}\n")
    assert msg.startswith("svc.yaml:3: not valid YAML")


def test_pinned_kernel_knobs_and_denied_actions() -> None:
    spec = spec_from_text(MINIMAL + "kernel:\n  turbo: off\n  prefetch: deny\nactions:\n  conn_pool_size: deny\n")
    out = compile_boundary(spec)
    allow = out["safety"]["safety"]["bounds"]["allow"]
    assert "turbo" not in allow and "prefetch" not in allow and "conn_pool_size" not in allow
    assert out["env"]["env_config"]["initial_knobs"]["turbo"] is False


def test_dsl_does_not_import_the_simulator() -> None:
    code = (
        "import sys, rlctl.dsl, rlctl.surface_trigger; "
        "print(any(m == 'envs' or m.startswith('envs.') for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_cli_check_and_compile(tmp_path: Path) -> None:
    proc = invoke_rlctl("limits", "check", str(EXAMPLE))
    assert proc.returncode == 0 and f"ok: {EXAMPLE}" in proc.stdout
    proc = invoke_rlctl("limits", "compile", str(EXAMPLE), "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "c" / "k8s" / "hpa.yaml").exists()  # act: the controller alone scales
    pdb = yaml.safe_load((tmp_path / "c" / "k8s" / "pdb.yaml").read_text())
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["apiVersion"] == "policy/v1"
    assert json.loads((tmp_path / "c" / "env.json").read_text())["env_config"]["slo_p99_ms"] == 8.0


def test_the_old_group_name_boundary_still_works_with_a_note(tmp_path: Path) -> None:
    proc = invoke_rlctl("boundary", "compile", str(EXAMPLE), "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == "note: 'rlctl boundary' is deprecated; use 'rlctl limits' (same arguments)"
    assert (tmp_path / "c" / "safety.json").exists()
    top = invoke_rlctl("--help")
    assert "limits" in top.stdout and "boundary files" not in top.stdout.lower()


def test_the_python_names_before_limits_are_the_same_objects() -> None:
    import rlctl.dsl as dsl

    assert dsl.load_boundary is dsl.load_limits and dsl.compile_boundary is dsl.compile_limits
    assert dsl.BoundarySpec is dsl.LimitsSpec


def test_cli_check_reports_errors_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: Shop_1\nslo: ['p99_ms <= 8']\n")
    proc = invoke_rlctl("limits", "check", str(bad))
    assert proc.returncode == 2
    assert f"ConfigError: invalid limits file:\n  {bad}:1: service: 'Shop_1' is not a DNS-1123 label" in proc.stderr


def test_memory_limit_caps_gomemlimit_when_not_given() -> None:
    spec = spec_from_text(MINIMAL + "kubernetes:\n  deployment: shop\n  memory_limit: 2Gi\n")
    bounds = compile_boundary(spec)["env"]["env_config"]["bounds"]
    assert bounds["max_gomemlimit_mib"] == 1843  # floor(0.9 * 2048)
