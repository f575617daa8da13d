"""The Kubernetes manifests in deploy/k8s: they build, validate, stay generated and stay least-privilege.

Built-in kinds are checked with ``kubernetes-validate`` in strict mode (unknown fields are
errors) against the newest Kubernetes it ships; the RayService against the KubeRay CRD shipped
in ``rlctl/schemas``; the Chaos Mesh examples are re-rendered with ``rlctl chaos render``.
"""

from __future__ import annotations

import base64
import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.schema import openapi_to_draft4
from rlctl import deploy

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
BUILDS = {"base": ("base", "rlctl"), "example": ("overlays/example", "rlctl-demo")}
CHAOS_KINDS = {"NetworkChaos", "StressChaos", "PodChaos", "IOChaos", "TimeChaos", "Schedule", "Workflow"}
CHAOS_RESOURCES = {"networkchaos", "stresschaos", "podchaos", "iochaos", "timechaos", "schedules", "workflows"}


@pytest.fixture
def kubectl_present() -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed for `kubectl kustomize`: install it (apt-get install kubectl) and rerun")


needs_kubectl = pytest.mark.usefixtures("kubectl_present")


@functools.cache
def build(name: str) -> tuple[dict[str, Any], ...]:
    path, _ = BUILDS[name]
    proc = subprocess.run(
        ["kubectl", "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates(docs: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every Deployment and of the RayService's head and workers."""
    out = [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for rs in by_kind(docs, "RayService"):
        cluster = rs["spec"]["rayClusterConfig"]
        out.append(("RayService head", cluster["headGroupSpec"]["template"]))
        out += [(f"RayService {g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    return out


@functools.cache
def rayservice_validator() -> Any:
    import jsonschema

    crd = yaml.safe_load(deploy.RAYSERVICE_CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft4Validator(openapi_to_draft4(v1["schema"]["openAPIV3Schema"], strict=True))


def token_secret(deployment: dict[str, Any], token_file: str) -> str:
    """The Secret whose key ``token_file`` is, through the container's mounts."""
    spec = deployment["spec"]["template"]["spec"]
    folder, key = token_file.rsplit("/", 1)
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert mount.get("readOnly") is True and key == "token"
    # A 0440 file is readable by the pod's user only through fsGroup's group ownership.
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o004 or spec["securityContext"].get("fsGroup") == spec["securityContext"]["runAsGroup"]
    return str(volume["secret"]["secretName"])


def container_args(deployment: dict[str, Any]) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [*container.get("command", []), *container.get("args", [])]


# ------------------------------------------------------------------------- build + schema


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_kustomize_builds_every_part_into_one_namespace(name: str) -> None:
    docs = build(name)
    _, namespace = BUILDS[name]
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "ServiceAccount", "Role", "RoleBinding",
        "NetworkPolicy", "RayService",
    } <= kinds  # fmt: skip
    assert {d["metadata"]["name"] for d in by_kind(docs, "Deployment")} >= {"gosvc", "gosvc-hpa", "rlctl-controller"}
    assert [d["metadata"]["name"] for d in by_kind(docs, "StatefulSet")] == ["redis"]
    assert [d["metadata"]["name"] for d in by_kind(docs, "Namespace")] == [namespace]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_builtin_objects_validate_strictly_against_the_newest_kubernetes(name: str) -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    checked = 0
    for doc in build(name):
        if doc["apiVersion"].split("/")[0].endswith(("ray.io", "chaos-mesh.org")):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc.message} at {exc.path}")
        checked += 1
    assert checked >= 15


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    import kubernetes_validate

    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}
    kubernetes_validate.validate(svc, kubernetes_validate.latest_version(), strict=True)
    svc["spec"]["selectr"] = {"app": "x"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.slow  # the KubeRay CRD is a large schema
@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_rayservice_validates_against_the_kuberay_crd(name: str) -> None:
    (rs,) = by_kind(build(name), "RayService")
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in rayservice_validator().iter_errors(rs)]
    assert errors == []


@pytest.mark.slow  # the KubeRay CRD is a large schema
def test_the_kuberay_check_rejects_an_unknown_field() -> None:
    rs = copy.deepcopy(deploy.rayservice())
    assert list(rayservice_validator().iter_errors(rs)) == []
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParms"] = {}
    assert [e.message for e in rayservice_validator().iter_errors(rs)]


# ------------------------------------------------------------------------- generated files


def test_committed_rayservice_is_the_generated_one() -> None:
    committed = (K8S / "base" / "rayservice.yaml").read_text()
    assert committed == deploy.render_rayservice_yaml(), "stale: run `python deploy/k8s/generate.py`"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic v1-style fields
def test_rayservice_serves_the_projects_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    (rs,) = yaml.safe_load_all((K8S / "base" / "rayservice.yaml").read_text())
    config = yaml.safe_load(rs["spec"]["serveConfigV2"])
    assert config == deploy.policy_serve_config()
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    (deployment,) = app["deployments"]
    assert deployment["autoscaling_config"] == deploy.AUTOSCALING
    assert deployment["user_config"]["policy"] == deploy.POLICY_PATH
    assert rs["spec"]["rayClusterConfig"]["rayVersion"] == deploy.RAY_VERSION
    # The import path names a real builder in the project.
    import importlib.util

    module, attr = app["import_path"].split(":")
    assert importlib.util.find_spec(module) is not None
    assert f"def {attr}(" in Path(importlib.util.find_spec(module).origin or "").read_text()


@needs_kubectl
def test_the_controller_reaches_the_policy_through_the_serve_service() -> None:
    docs = build("base")
    args = container_args(one(docs, "Deployment", "rlctl-controller"))
    (rs,) = by_kind(docs, "RayService")
    port = deploy.policy_serve_config()["http_options"]["port"]
    assert args[args.index("--policy-url") + 1] == f"http://{rs['metadata']['name']}-serve-svc:{port}"


@pytest.mark.slow  # renders every example in a fresh interpreter
def test_chaos_examples_are_what_rlctl_chaos_render_prints_now() -> None:
    proc = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    examples = sorted((K8S / "chaos-examples").glob("*.yaml"))
    assert [p.stem for p in examples] == sorted(deploy.CHAOS_EXAMPLES)


@needs_kubectl
def test_chaos_examples_target_the_example_overlay() -> None:
    from chaos.schema import validate_manifest

    _, namespace = BUILDS["example"]
    gosvc = one(build("example"), "Deployment", "gosvc")
    pod_labels = gosvc["spec"]["template"]["metadata"]["labels"]
    for path in sorted((K8S / "chaos-examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] in CHAOS_KINDS
            validate_manifest(doc)
            assert doc["metadata"]["namespace"] == namespace, path.name
    assert pod_labels["app"] == "gosvc"  # what every shipped scenario selects


# ------------------------------------------------------------------------- least privilege


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    return []


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_rbac_has_no_wildcards_and_only_the_needed_verbs(name: str) -> None:
    docs = build(name)
    (role,) = by_kind(docs, "Role")
    for rule in role["rules"]:
        for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            assert not [s for s in rule.get(key, []) if "*" in s], f"wildcard in {key}: {rule}"
    assert not [s for s in _strings(role["rules"]) if "*" in s]
    granted = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {
        ("apps", "deployments/scale"): {"get", "patch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        ("", "events"): {"create", "patch"},
        **{("chaos-mesh.org", r): {"create", "get", "list", "patch", "delete"} for r in CHAOS_RESOURCES},
        ("chaos-mesh.org", "workflownodes"): {"get", "list", "patch", "delete"},
    }
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rlctl-controller"}
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": binding["metadata"]["namespace"]}
    ]
    controller = one(docs, "Deployment", "rlctl-controller")
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    # Only the controller's pods may talk to the API server.
    for where, template in pod_templates(docs):
        if where != "Deployment/rlctl-controller" and not where.startswith("RayService"):
            assert template["spec"].get("automountServiceAccountToken") is False, where


@needs_kubectl
def test_the_scale_rule_names_the_controlled_deployment() -> None:
    docs = build("base")
    (role,) = by_kind(docs, "Role")
    (scale,) = [r for r in role["rules"] if r["resources"] == ["deployments/scale"]]
    args = container_args(one(docs, "Deployment", "rlctl-controller"))
    target = args[args.index("--k8s-deployment") + 1]
    assert target == "$(POD_NAMESPACE)/gosvc" and scale["resourceNames"] == ["gosvc"]
    assert by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] != "gosvc"


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_admin_api_is_token_protected_and_reachable_only_from_the_controller(name: str) -> None:
    docs = build(name)
    gosvc = one(docs, "Deployment", "gosvc")
    args = container_args(gosvc)
    assert "--admin-addr=0.0.0.0:9091" in args and "--admin-allow-remote" in args
    token_file = next(a.split("=", 1)[1] for a in args if a.startswith("--admin-token-file="))
    secret = token_secret(gosvc, token_file)
    controller = one(docs, "Deployment", "rlctl-controller")
    ctl_args = container_args(controller)
    # The controller reads the same Secret's key, mounted the same way.
    assert token_secret(controller, ctl_args[ctl_args.index("--admin-token-file") + 1]) == secret
    if name == "example":  # the overlay generates the Secret; the base expects one created by hand
        token = base64.b64decode(one(docs, "Secret", secret)["data"]["token"]).strip()
        assert len(token) >= 16, f"gosvc refuses admin tokens under 16 bytes; the demo token is {len(token)}"
    policy = one(docs, "NetworkPolicy", "gosvc-admin-from-controller")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= gosvc["spec"]["selector"]["matchLabels"].items()
    controller_labels = controller["spec"]["template"]["metadata"]["labels"]
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == 9091 for p in rule["ports"]):
            (peer,) = rule["from"]
            assert peer["podSelector"]["matchLabels"].items() <= controller_labels.items()
            assert [p["port"] for p in rule["ports"]] == [9091]


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_pod_meets_the_restricted_pod_security_standard(name: str) -> None:
    docs = build(name)
    (ns,) = by_kind(docs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for where, template in pod_templates(docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"
            assert "memory" in c["resources"]["limits"], where


@needs_kubectl
def test_the_hpa_comparison_runs_beside_the_controller_not_against_it() -> None:
    docs = build("base")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    target = one(docs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
    assert target["metadata"]["name"] == "gosvc-hpa"
    assert target["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert "--admin-allow-remote" not in container_args(target)
    from policies.baselines import HPAConfig

    default = HPAConfig()
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["target"]["averageUtilization"] == round(default.target_cpu * 100)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == default.downscale_window_s
    assert hpa["spec"]["maxReplicas"] == default.max_replicas


@needs_kubectl
def test_redis_takes_only_its_clients_and_the_controller_finds_it() -> None:
    docs = build("base")
    policy = one(docs, "NetworkPolicy", "redis-clients-only")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    client = peer["podSelector"]["matchLabels"].items()
    controller = one(docs, "Deployment", "rlctl-controller")
    assert client <= controller["spec"]["template"]["metadata"]["labels"].items()
    for where, template in pod_templates(docs):
        if where.startswith("RayService"):
            assert client <= template["metadata"]["labels"].items(), where
    args = container_args(controller)
    service = one(docs, "Service", "redis")
    assert (
        args[args.index("--redis") + 1]
        == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )


@needs_kubectl
def test_the_controller_command_parses_with_the_installed_cli() -> None:
    import typer.main

    from rlctl.cli import app

    command = getattr(typer.main.get_command(app), "commands", {}).get("control")
    assert command is not None, "`rlctl control` must be registered (rlctl/commands/control.py)"
    args = container_args(one(build("base"), "Deployment", "rlctl-controller"))
    assert args[:2] == ["rlctl", "control"]
    with command.make_context("control", args[2:]) as ctx:
        params = ctx.params
    assert params["knob_endpoint_slices"] == "$(POD_NAMESPACE)/gosvc-admin" and params["admin"] is None
    assert params["k8s_deployment"] == "$(POD_NAMESPACE)/gosvc"
    assert params["metrics_port"] == 9109 and params["consumer"]


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_the_knobs_go_to_every_ready_replica_of_the_headless_admin_service(name: str) -> None:
    docs = build(name)
    args = container_args(one(docs, "Deployment", "rlctl-controller"))
    namespace, service_name = args[args.index("--knob-endpoint-slices") + 1].split("/", 1)
    assert namespace == "$(POD_NAMESPACE)" and "--admin" not in args
    service = one(docs, "Service", service_name)
    assert service["spec"]["clusterIP"] == "None"  # headless: its EndpointSlices list every pod
    port = args[args.index("--knob-port") + 1] if "--knob-port" in args else "admin"
    (admin,) = [p for p in service["spec"]["ports"] if p["name"] == port]
    template = one(docs, "Deployment", "gosvc")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert ports[admin["targetPort"]] == 9091
