"""The advise overlays (deploy/k8s/advise-keda, advise-hpa) and the one-writer rule over every build.

Built-in kinds validate strictly with ``kubernetes-validate``, as in ``tests/test_deploy_k8s.py``.
No KEDA CRD schema is vendored: the ScaledObject is checked by structure (the fields KEDA's
``keda.sh/v1alpha1`` CRD defines, the trigger's metadata a map of strings) and against the
controller it follows (service name, replica bounds, the metric it publishes).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlctl.online.loop import ControllerMetrics

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
BUILDS = {"base": "base", "example": "overlays/example", "advise-keda": "advise-keda", "advise-hpa": "advise-hpa"}
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
                      "triggers"}  # fmt: skip
TRIGGER_KEYS = {"type", "name", "metadata", "metricType", "authenticationRef", "useCachedMetrics"}


@pytest.fixture(autouse=True)
def kubectl_present() -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed for `kubectl kustomize`: install it (apt-get install kubectl) and rerun")


@functools.cache
def build(name: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(["kubectl", "kustomize", str(K8S / BUILDS[name])], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def controller_params(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The controller's ``rlctl control`` options, parsed by the installed CLI."""
    import typer.main

    from rlctl.cli import app

    (container,) = one(docs, "Deployment", "rlctl-controller")["spec"]["template"]["spec"]["containers"]
    args = [*container.get("command", []), *container.get("args", [])]
    assert args[:2] == ["rlctl", "control"]
    command = typer.main.get_command(app).commands["control"]  # type: ignore[attr-defined]
    with command.make_context("control", args[2:]) as ctx:
        return dict(ctx.params)


def writers(docs: tuple[dict[str, Any], ...]) -> dict[str, list[str]]:
    """Deployment name -> what sets its replicas: HPAs, ScaledObjects, an act-mode controller."""
    out: dict[str, list[str]] = {}
    for d in docs:
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            ref = d["spec"]["scaleTargetRef"]
            assert ref.get("kind", "Deployment") == "Deployment"
            out.setdefault(ref["name"], []).append(f"{d['kind']}/{d['metadata']['name']}")
    params = controller_params(docs)
    if params["mode"].value == "act" and params["k8s_deployment"]:
        out.setdefault(params["k8s_deployment"].split("/", 1)[1], []).append("rlctl control --mode act")
    return out


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_build_has_one_writer_per_deployment(name: str) -> None:
    found = writers(build(name))
    assert found and all(len(w) == 1 for w in found.values()), found
    assert len(found["gosvc"]) == 1


@pytest.mark.parametrize("name", ["advise-keda", "advise-hpa"])
def test_the_advise_overlays_run_the_controller_read_only(name: str) -> None:
    import kubernetes_validate

    docs = build(name)
    params = controller_params(docs)
    assert params["mode"].value == "advise" and params["k8s_deployment"] == "$(POD_NAMESPACE)/gosvc"
    role = one(docs, "Role", "rlctl-controller")
    (scale,) = [r for r in role["rules"] if r["resources"] == ["deployments/scale"]]
    assert scale["verbs"] == ["get"] and scale["resourceNames"] == ["gosvc"]
    (events,) = [r for r in role["rules"] if r["resources"] == ["events"]]
    assert events["apiGroups"] == [""] and sorted(events["verbs"]) == ["create", "patch"]
    version = kubernetes_validate.latest_version()
    checked = 0
    for doc in docs:
        if doc["apiVersion"].split("/")[0].endswith(("ray.io", "chaos-mesh.org", "keda.sh")):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 15
    assert all(d["metadata"].get("namespace") == "rlctl" for d in docs if d["kind"] != "Namespace")


def test_the_scaled_object_follows_the_controllers_advice() -> None:
    docs = build("advise-keda")
    params = controller_params(docs)
    so = one(docs, "ScaledObject", "gosvc")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC and {"scaleTargetRef", "triggers"} <= set(spec)
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gosvc"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (params["min_replicas"], params["max_replicas"])
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": params["max_replicas"]}
    (trigger,) = spec["triggers"]
    assert set(trigger) <= TRIGGER_KEYS and trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    metric = ControllerMetrics().desired_replicas._name
    assert meta["query"] == f'max({metric}{{service="{params["service"]}"}})'
    assert meta["threshold"] == "1" and meta["ignoreNullValues"] == "false"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    import kubernetes_validate

    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": 2, "behavior": behavior}}  # fmt: skip
    kubernetes_validate.validate(hpa, kubernetes_validate.latest_version(), strict=True)


def test_the_hpa_scales_on_the_metric_the_controller_publishes_and_the_adapter_serves() -> None:
    docs = build("advise-hpa")
    params = controller_params(docs)
    hpa = one(docs, "HorizontalPodAutoscaler", "gosvc")
    (metric,) = hpa["spec"]["metrics"]
    name = ControllerMetrics().desired_replicas._name
    assert metric["external"]["metric"] == {"name": name, "selector": {"matchLabels": {"service": params["service"]}}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (params["min_replicas"], params["max_replicas"])
    values = yaml.safe_load((K8S / "advise-hpa" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = values["rules"]["external"]
    assert rule["seriesQuery"].startswith(f"{name}{{") and rule["name"]["as"] == name
    assert "by (service)" in rule["metricsQuery"]
