"""One writer per Deployment: what ``rlctl limits compile`` emits for each controller mode, and what it refuses.

``controller: act`` (the default): ``rlctl control`` patches the scale, so no HPA or
ScaledObject is emitted and asking for one is an error (exit 2, file:line, the fix, nothing
written). ``advise``: an HPA on the external metric the controller publishes, or a KEDA
ScaledObject (no KEDA CRD schema is vendored: its structure is checked here). ``shadow``: the
CPU HPA the shadow is compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, invoke_rlctl

from rlctl.dsl import compile_limits, spec_from_text, validate_kubernetes
from rlctl.errors import ConfigError
from rlctl.online.loop import ControllerMetrics

EXAMPLE = REPO / "rlctl" / "examples" / "gosvc.limits.yaml"

BASE = """\
service: shop
slo: ["p99_ms <= 20"]
bounds: {replicas: [2, 12]}
max_step: {replicas: 3}
kubernetes:
  namespace: web
  deployment: shop
"""


def compiled(extra: str = "") -> dict[str, Any]:
    text = BASE + "".join(f"  {line}\n" for line in extra.splitlines())
    return dict(compile_limits(spec_from_text(text, source="shop.yaml"), source="shop.yaml", text=text)["kubernetes"])


def refusal(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        compiled(extra)
    return str(info.value)


def test_act_emits_no_autoscaler_the_controller_is_the_one_writer() -> None:
    objects = compiled()
    assert set(objects) == {"pdb", "deployment-patch"}
    assert set(compiled("controller: act\nautoscaler: none")) == {"pdb", "deployment-patch"}


@pytest.mark.parametrize("autoscaler", ["hpa", "keda"])
def test_act_with_an_autoscaler_on_the_same_deployment_is_refused(autoscaler: str) -> None:
    message = refusal(f"autoscaler: {autoscaler}")
    assert message.startswith("invalid limits file:\n  shop.yaml:8: kubernetes.autoscaler: ")
    assert f"autoscaler {autoscaler!r} with controller 'act' puts two writers on Deployment web/shop" in message
    assert "Fix: controller: advise" in message and "autoscaler: none" in message


def test_an_explicit_cpu_target_in_act_mode_is_refused_too() -> None:
    message = refusal("hpa_cpu_utilization: 70")
    assert "shop.yaml:8: kubernetes.hpa_cpu_utilization: " in message
    assert "controller 'act' (the default) scales it: two writers" in message
    assert "Fix: remove hpa_cpu_utilization" in message


def test_advise_emits_an_hpa_on_the_advice_that_validates_strictly() -> None:
    objects = compiled("controller: advise")
    assert set(objects) == {"hpa", "pdb", "deployment-patch"}
    spec = objects["hpa"]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 12)
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": ControllerMetrics().desired_replicas._name,  # the gauge the controller publishes
        "selector": {"matchLabels": {"service": "shop"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0
    assert spec["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 3, "periodSeconds": 15}]
    assert validate_kubernetes(objects)["hpa"].startswith("ok")


def test_advise_with_keda_emits_a_scaled_object_with_a_prometheus_trigger() -> None:
    objects = compiled("controller: advise\nautoscaler: keda\nprometheus_url: http://prom.mon:9090")
    assert set(objects) == {"scaledobject", "pdb", "deployment-patch"}
    so = objects["scaledobject"]
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert so["metadata"]["name"] == "shop" and so["metadata"]["namespace"] == "web"
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == "shop"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 12)
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 12}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.mon:9090",
        "query": 'max(rlctl_desired_replicas{service="shop"})',
        "threshold": "1",
        "ignoreNullValues": "false",
    }
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # the CRD: a map of strings
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0
    assert validate_kubernetes(objects)["scaledobject"].startswith("skipped: a KEDA custom resource")


def test_shadow_emits_the_cpu_hpa_it_is_compared_with() -> None:
    objects = compiled("controller: shadow\nhpa_cpu_utilization: 70")
    (metric,) = objects["hpa"]["spec"]["metrics"]
    assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 70}}}  # fmt: skip
    assert "shop.yaml:9: kubernetes.autoscaler" in refusal("controller: shadow\nautoscaler: keda")


def test_the_cli_refuses_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "shop.yaml"
    spec.write_text(BASE + "  autoscaler: hpa\n")
    out = tmp_path / "out"
    proc = invoke_rlctl("limits", "compile", str(spec), "--out", str(out))
    assert proc.returncode == 2
    assert f"{spec}:8: kubernetes.autoscaler: autoscaler 'hpa' with controller 'act' puts two writers" in proc.stderr
    assert not out.exists()
    spec.write_text(BASE + "  controller: advise\n")
    proc = invoke_rlctl("limits", "compile", str(spec), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "k8s" / "hpa.yaml").exists()


def test_the_shipped_example_compiles_with_one_writer() -> None:
    objects = compile_limits(spec_from_text(EXAMPLE.read_text()))["kubernetes"]
    assert "hpa" not in objects and "scaledobject" not in objects
