"""``rlctl chaos render`` and ``rlctl chaos cleanup``: in-process, on the Typer app (CliRunner) and through the
console-script entry point ``rlctl.cli.main`` (``invoke_rlctl``: one-line errors and exit codes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import invoke_rlctl
from fakek8s import FakeKubeAPI
from typer.testing import CliRunner

from chaos.schema import validate_manifest
from rlctl.cli import app
from rlctl.errors import ChaosError, ConfigError

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "chaos" / "scenarios"
runner = CliRunner()


# ------------------------------------------------------------------ render


def test_render_prints_valid_multi_document_yaml() -> None:
    result = runner.invoke(app, ["chaos", "render", str(SCENARIOS / "pod-churn.yaml"), "--run-id", "t1"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Schedule", "PodChaos", "PodChaos"]
    for doc in docs:
        validate_manifest(doc)
        assert doc["metadata"]["labels"]["rlctl.io/run-id"] == "t1"
        assert doc["metadata"]["name"].endswith("-t1")


def test_render_is_deterministic_for_a_run_id() -> None:
    args = ["chaos", "render", str(SCENARIOS / "cascading-sequence.yaml"), "--run-id", "t1"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and first.stdout == second.stdout
    assert "kind: Workflow" in first.stdout


def test_render_namespace_fills_selectors_without_one(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nfaults:\n  - {kind: pod-kill, start_s: 0, duration_s: 10}\n")
    result = runner.invoke(app, ["chaos", "render", str(path), "--run-id", "t1"])
    assert isinstance(result.exception, ChaosError)
    assert f"{path}: fault #0 (pod-kill) has no selector.namespace" in str(result.exception)
    result = runner.invoke(app, ["chaos", "render", str(path), "--run-id", "t1", "--namespace", "demo"])
    assert result.exit_code == 0
    (doc,) = yaml.safe_load_all(result.stdout)
    assert doc["metadata"]["namespace"] == "demo"
    assert doc["spec"]["selector"]["namespaces"] == ["demo"]


def test_render_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "m.yaml"
    result = runner.invoke(app, ["chaos", "render", str(SCENARIOS / "local-three-faults.yaml"), "-o", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert len(list(yaml.safe_load_all(out.read_text()))) == 3


def test_render_refuses_simulator_only_faults() -> None:
    path = SCENARIOS / "sim-hardware.yaml"
    result = runner.invoke(app, ["chaos", "render", str(path)])
    assert isinstance(result.exception, ChaosError)
    message = str(result.exception)
    assert str(path) in message
    assert "fault #0 (fan-failure) is simulator-only" in message
    assert "`--backend sim`" in message


def test_render_bad_run_id_is_bad_input() -> None:
    result = runner.invoke(app, ["chaos", "render", str(SCENARIOS / "pod-churn.yaml"), "--run-id", "Bad_ID"])
    assert isinstance(result.exception, ConfigError)


def test_bad_scenario_file_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfaults:\n  - kind: network-delay\n    start_s: -5\n    duration_s: 10\n")
    proc = invoke_rlctl("chaos", "render", str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"ConfigError: {path}: invalid scenario: field faults.0.start_s:")
    assert "Traceback" not in proc.stderr


def test_unknown_parameter_and_missing_file_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfaults:\n  - {kind: cpu-stress, start_s: 0, duration_s: 5, params: {cores: 2}}\n")
    proc = invoke_rlctl("chaos", "render", str(path))
    assert proc.returncode == 2
    assert f"{path}: invalid scenario: field faults.0:" in proc.stderr
    assert "unknown parameter(s) ['cores'] for fault kind 'cpu-stress'" in proc.stderr
    proc = invoke_rlctl("chaos", "render", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "nope.yaml: cannot read scenario file" in proc.stderr


# ------------------------------------------------------------------ cleanup


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, Path]]:
    with FakeKubeAPI() as fake:
        labels = {"app.kubernetes.io/managed-by": "rlctl", "rlctl.io/run-id": "r1"}
        fake.put_object("demo", "networkchaos", {"kind": "NetworkChaos", "metadata": {"name": "a", "labels": labels}})
        fake.put_object("demo", "podchaos", {"kind": "PodChaos", "metadata": {"name": "b", "labels": labels}})
        yield fake, fake.write_kubeconfig(tmp_path / "kubeconfig")


def test_cleanup_process_against_the_fake_cluster(cluster: tuple[FakeKubeAPI, Path]) -> None:
    fake, kubeconfig = cluster
    args = ["chaos", "cleanup", "--backend", "k8s", "--run-id", "r1", "--namespace", "demo", "--kubeconfig"]
    proc = invoke_rlctl(*args, str(kubeconfig), "--json", "-", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"dry_run": True, "objects": ["NetworkChaos/demo/a", "PodChaos/demo/b"]}
    assert fake.names() == ["a", "b"]
    proc = invoke_rlctl(*args, str(kubeconfig), "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["objects"] == ["NetworkChaos/demo/a", "PodChaos/demo/b"]
    assert fake.names() == []
    assert all(r.query.get("labelSelector") for r in fake.calls("GET") if r.path.endswith("chaos"))


def test_cleanup_prints_a_table(cluster: tuple[FakeKubeAPI, Path]) -> None:
    fake, kubeconfig = cluster
    args = ["chaos", "cleanup", "--all", "-n", "demo", "--kubeconfig", str(kubeconfig)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "deleted (any run)" in result.stdout and "NetworkChaos" in result.stdout
    assert fake.names() == []
    result = runner.invoke(app, args)
    assert "nothing to clean up" in result.stdout


@pytest.mark.parametrize(
    ("args", "error", "expected"),
    [
        (["-n", "demo"], ConfigError, "exactly one of --run-id ID"),
        (["-n", "demo", "--all", "--run-id", "r1"], ConfigError, "exactly one of --run-id ID"),
        (["--all"], ConfigError, "pass --namespace NS"),
        (["--all", "-n", "kube-system"], ChaosError, "system namespaces are never allowed"),
        (["--all", "-n", "demo", "--backend", "sim"], ConfigError, "choose k8s or local"),
        (["--all", "-n", "demo", "--kubeconfig", "/nonexistent/kubeconfig"], ConfigError, "does not exist"),
    ],
)
def test_cleanup_bad_input(args: list[str], error: type[Exception], expected: str) -> None:
    result = runner.invoke(app, ["chaos", "cleanup", *args])
    assert isinstance(result.exception, error), result.output
    assert expected in str(result.exception)


def test_cleanup_bad_input_exits_2_through_the_entry_point() -> None:
    proc = invoke_rlctl("chaos", "cleanup", "--all", "-n", "kube-system")
    assert proc.returncode == 2
    assert proc.stderr.startswith("ChaosError: refusing to touch kube-system: system namespaces are never allowed")
