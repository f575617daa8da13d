"""The Chaos Mesh backend and the scale actuator, with the real kubernetes client over HTTP to a fake API server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakek8s import FakeKubeAPI

from chaos.backends.k8s.inject import ChaosMeshBackend
from chaos.spec import Scenario, scenario_from_dict
from rlctl.errors import ActuatorError, ChaosError
from rlctl.k8s_scale import MERGE_PATCH, DeploymentScaler

HOLD = 0.1
NETWORK = "/apis/chaos-mesh.org/v1alpha1/namespaces/demo/networkchaos"


def scenario(*faults: dict[str, Any], sequences: tuple[dict[str, Any], ...] = ()) -> Scenario:
    return scenario_from_dict({"name": "t", "duration_s": 10, "faults": list(faults), "sequences": list(sequences)})


def delay(start_s: float = 0.0, duration_s: float = HOLD, ns: str | None = "demo", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "network-delay",
        "start_s": start_s,
        "duration_s": duration_s,
        "selector": {"namespace": ns},
        **extra,
    }


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(inject_delay_s=0.03, delete_delay_s=0.03) as api:
        yield api


@pytest.fixture
def client(fake: FakeKubeAPI) -> Iterator[Any]:
    api_client = fake.api_client()
    yield api_client
    api_client.close()


def backend(client: Any, namespaces: tuple[str, ...] = ("demo",), **kw: Any) -> ChaosMeshBackend:
    opts = {"poll_interval_s": 0.01, "inject_timeout_s": 2.0, "delete_timeout_s": 2.0, **kw}
    return ChaosMeshBackend(namespaces, api_client=client, **opts)


def traffic(fake: FakeKubeAPI) -> list[tuple[str, str, int]]:
    """(method, path tail, status) of each request, consecutive duplicates (polls) folded."""
    out: list[tuple[str, str, int]] = []
    for r in fake.calls():
        item = (r.method, r.path.rsplit("/", 1)[-1], r.status)
        if not out or out[-1] != item:
            out.append(item)
    return out


# ------------------------------------------------------------------ lifecycle


def test_full_lifecycle_create_injected_hold_delete_gone(fake: FakeKubeAPI, client: Any) -> None:
    records = backend(client).run(scenario(delay()), run_id="r1")
    name = "t-f0-network-delay-0-r1"
    assert traffic(fake) == [
        ("POST", "networkchaos", 201),
        ("GET", name, 200),  # polled until AllInjected=True
        ("DELETE", name, 200),
        ("GET", name, 200),  # still finalizing
        ("GET", name, 404),  # gone
    ]
    created = fake.calls("POST")[0].body
    assert created["kind"] == "NetworkChaos"
    assert created["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rlctl"
    assert created["metadata"]["labels"]["rlctl.io/run-id"] == "r1"
    assert created["spec"]["duration"] == "100ms"
    assert created["spec"]["selector"]["namespaces"] == ["demo"]
    (rec,) = records
    assert rec.name == name and rec.namespace == "demo" and rec.fault == "network-delay"
    assert rec.injected_s is not None and rec.deleted_s is not None and rec.gone_s is not None
    assert rec.injected_s >= 0.03  # waited for AllInjected
    assert rec.deleted_s - rec.injected_s >= HOLD  # held for the duration
    assert rec.gone_s >= rec.deleted_s
    assert fake.names() == []


def test_windows_follow_the_schedule_and_repeats(fake: FakeKubeAPI, client: Any) -> None:
    s = scenario(
        delay(start_s=0.0),
        {
            "kind": "pod-kill",
            "start_s": 0.05,
            "duration_s": 0.05,
            "selector": {"namespace": "demo"},
            "repeat": {"every_s": 0.2, "count": 2},
        },
    )
    records = backend(client).run(s, run_id="r1")
    assert [r.name for r in records] == ["t-f0-network-delay-0-r1", "t-f1-pod-kill-0-r1", "t-f1-pod-kill-1-r1"]
    for r in records:
        assert r.created_s is not None and r.created_s >= r.planned_start_s - 1e-3
    assert len(fake.calls("POST")) == 3 and len(fake.calls("DELETE")) == 3
    assert fake.names() == []


def test_sequence_steps_are_injected_one_after_another(fake: FakeKubeAPI, client: Any) -> None:
    seq = {"name": "seq", "steps": [delay(duration_s=0.05), {**delay(duration_s=0.05), "kind": "cpu-stress"}]}
    records = backend(client).run(scenario(sequences=(seq,)), run_id="r1")
    first, second = records
    assert (first.kind, second.kind) == ("NetworkChaos", "StressChaos")
    assert second.created_s is not None and second.created_s >= 0.05
    assert [c.path.rsplit("/", 1)[-1] for c in fake.calls("POST")] == ["networkchaos", "stresschaos"]


def test_interrupt_during_hold_deletes_the_object(fake: FakeKubeAPI, client: Any) -> None:
    def sleep(seconds: float) -> None:
        if seconds > 0.05:  # the hold, not a poll
            raise KeyboardInterrupt
        time.sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        backend(client).run(scenario(delay(duration_s=5.0)), run_id="r1", sleep=sleep)
    assert len(fake.calls("DELETE")) == 1
    assert fake.names() == []


# ------------------------------------------------------------------ API errors


def test_403_names_the_missing_rbac_verb_and_resource(fake: FakeKubeAPI, client: Any) -> None:
    fake.fail("POST", r"/networkchaos$", 403, message='networkchaos.chaos-mesh.org is forbidden: User "ci"')
    with pytest.raises(ChaosError) as info:
        backend(client).run(scenario(delay()), run_id="r1")
    message = str(info.value)
    assert "forbidden: RBAC does not allow verb 'create' on resource 'networkchaos'" in message
    assert "API group 'chaos-mesh.org' in namespace demo" in message
    assert "--verb=create,get,list,delete --resource=networkchaos.chaos-mesh.org" in message
    assert 'User "ci"' in message
    assert fake.calls("DELETE") == []  # nothing was created, nothing to revert


def test_404_asks_whether_chaos_mesh_is_installed(client: Any) -> None:
    with FakeKubeAPI(plurals={"podchaos": "PodChaos"}) as fake:
        api_client = fake.api_client()
        with pytest.raises(ChaosError) as info:
            backend(api_client).run(scenario(delay()), run_id="r1")
        api_client.close()
    message = str(info.value)
    assert "no resource networkchaos.chaos-mesh.org/v1alpha1 (404 on create" in message
    assert "is Chaos Mesh installed?" in message
    assert "kubectl get crd networkchaos.chaos-mesh.org" in message


def test_404_for_a_missing_namespace_says_so() -> None:
    with FakeKubeAPI(namespaces={"other"}) as fake:
        api_client = fake.api_client()
        with pytest.raises(ChaosError, match="namespace demo does not exist"):
            backend(api_client).run(scenario(delay()), run_id="r1")
        api_client.close()


def test_409_points_at_cleanup_and_leaves_the_other_object_alone(fake: FakeKubeAPI, client: Any) -> None:
    leftover = {"kind": "NetworkChaos", "metadata": {"name": "t-f0-network-delay-0-r1", "labels": {}}, "spec": {}}
    fake.put_object("demo", "networkchaos", leftover)
    with pytest.raises(ChaosError) as info:
        backend(client).run(scenario(delay()), run_id="r1")
    message = str(info.value)
    assert "NetworkChaos t-f0-network-delay-0-r1 in namespace demo already exists" in message
    assert "a previous run with run id r1" in message
    assert "`rlctl chaos cleanup --backend k8s --run-id r1 --namespace demo`" in message
    assert fake.calls("DELETE") == []
    assert fake.names() == ["t-f0-network-delay-0-r1"]


def test_never_injected_times_out_and_deletes_the_object(client: Any) -> None:
    with FakeKubeAPI(inject_delay_s=None) as fake:
        api_client = fake.api_client()
        started = time.monotonic()
        with pytest.raises(ChaosError) as info:
            backend(api_client, inject_timeout_s=0.2).run(scenario(delay()), run_id="r1")
        api_client.close()
        assert time.monotonic() - started < 2.0
        message = str(info.value)
        assert "NetworkChaos t-f0-network-delay-0-r1 in namespace demo did not report AllInjected=True" in message
        assert "within 0.2s (status: Selected=True, AllInjected=False" in message
        assert "it was deleted" in message
        assert len(fake.calls("DELETE")) >= 1
        assert fake.names() == []


def test_a_stuck_finalizer_is_reported(client: Any) -> None:
    with FakeKubeAPI(delete_delay_s=30) as fake:
        api_client = fake.api_client()
        with pytest.raises(ChaosError, match=r"still there 0\.2s after deletion: its finalizer waits"):
            backend(api_client, delete_timeout_s=0.2).run(scenario(delay(duration_s=0.01)), run_id="r1")
        api_client.close()


def test_unreachable_api_server_is_a_clear_error() -> None:
    fake = FakeKubeAPI().start()
    api_client = fake.api_client()
    fake.stop()
    with pytest.raises(ChaosError, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:\d+"):
        backend(api_client).run(scenario(delay()), run_id="r1")
    api_client.close()


# ------------------------------------------------------------------ blast radius


@pytest.mark.parametrize("namespaces", [("kube-system",), ("demo", "kube-system"), ("kube-public",)])
def test_system_namespaces_are_never_allowed(client: Any, namespaces: tuple[str, ...]) -> None:
    with pytest.raises(ChaosError, match="system namespaces are never allowed"):
        backend(client, namespaces)


def test_an_empty_allow_list_is_refused(client: Any) -> None:
    with pytest.raises(ChaosError, match="needs an allow-list of namespaces: pass --namespace"):
        backend(client, ())


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (delay(ns="prod"), r"targets namespace 'prod', which is not in the allow-list \(demo\); pass --namespace prod"),
        (delay(ns="kube-system"), r"targets kube-system: system namespaces are never allowed"),
        (delay(ns=None), r"fault #0 \(network-delay\) selector has no namespace.*add `selector: \{namespace: <ns>\}`"),
        (
            delay(target={"namespace": "prod", "labels": {"app": "loadgen"}}),
            r"NetworkChaos t-f0-network-delay-0-r1 selector targets namespace 'prod'",
        ),
    ],
    ids=["not-listed", "kube-system", "no-namespace", "target-outside"],
)
def test_allow_list_refusals_make_no_request(fake: FakeKubeAPI, client: Any, fault: dict, expected: str) -> None:
    with pytest.raises(ChaosError, match=expected):
        backend(client).run(scenario(fault), run_id="r1")
    assert fake.requests == []


def test_sequence_step_outside_the_allow_list_is_refused(fake: FakeKubeAPI, client: Any) -> None:
    seq = {"name": "seq", "steps": [delay(), delay(ns="prod")]}
    with pytest.raises(ChaosError, match=r"sequence 'seq' step #1 selector targets namespace 'prod'"):
        backend(client).run(scenario(sequences=(seq,)), run_id="r1")
    assert fake.requests == []


def test_simulator_only_faults_are_refused(fake: FakeKubeAPI, client: Any) -> None:
    s = scenario(delay(), {"kind": "fan-failure", "start_s": 0, "duration_s": 1})
    with pytest.raises(ChaosError, match=r"fault #1 \(fan-failure\) is simulator-only.*`--backend sim`"):
        backend(client).run(s, run_id="r1")
    assert fake.requests == []


def test_dry_run_makes_no_request(fake: FakeKubeAPI, client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="chaos.backends.k8s.inject")
    started = time.monotonic()
    records = backend(client, dry_run=True).run(scenario(delay(), delay(start_s=5, duration_s=3)), run_id="r1")
    assert time.monotonic() - started < 1.0  # nothing waits
    assert fake.requests == []
    assert [r.name for r in records] == ["t-f0-network-delay-0-r1", "t-f1-network-delay-0-r1"]
    assert "dry run: would create NetworkChaos demo/t-f0-network-delay-0-r1" in caplog.text
    assert "dry run: would delete NetworkChaos demo/t-f1-network-delay-0-r1" in caplog.text


def test_dry_run_needs_no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    chaos = ChaosMeshBackend(["demo"], dry_run=True)
    assert len(chaos.run(scenario(delay()), run_id="r1")) == 1


# ------------------------------------------------------------------ cleanup


def _obj(kind: str, name: str, run_id: str | None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "rlctl", "rlctl.io/run-id": run_id} if run_id else {"app": "other"}
    return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def leftovers(fake: FakeKubeAPI) -> FakeKubeAPI:
    fake.put_object("demo", "networkchaos", _obj("NetworkChaos", "a-r1", "r1"))
    fake.put_object("demo", "podchaos", _obj("PodChaos", "b-r1", "r1"))
    fake.put_object("demo", "schedules", _obj("Schedule", "c-r1", "r1"))
    fake.put_object("demo", "networkchaos", _obj("NetworkChaos", "d-r2", "r2"))
    fake.put_object("demo", "networkchaos", _obj("NetworkChaos", "someone-elses", None))
    fake.put_object("prod", "networkchaos", _obj("NetworkChaos", "e-r1", "r1"))
    return fake


def test_cleanup_by_run_id(leftovers: FakeKubeAPI, client: Any) -> None:
    removed = backend(client).cleanup("r1")
    assert removed == ["Schedule/demo/c-r1", "NetworkChaos/demo/a-r1", "PodChaos/demo/b-r1"]
    assert leftovers.names() == ["d-r2", "e-r1", "someone-elses"]
    lists = [r.query["labelSelector"] for r in leftovers.calls("GET") if "labelSelector" in r.query]
    rlctl = [q for q in lists if q != ["managed-by=c-r1"]]  # the Schedule's runs: Chaos Mesh's label
    assert ["managed-by=c-r1"] in lists
    assert rlctl and all(q == ["app.kubernetes.io/managed-by=rlctl,rlctl.io/run-id=r1"] for q in rlctl)
    assert not any("/namespaces/prod/" in r.path for r in leftovers.requests)


def test_cleanup_all_runs(leftovers: FakeKubeAPI, client: Any) -> None:
    removed = backend(client).cleanup()
    assert sorted(removed) == ["NetworkChaos/demo/a-r1", "NetworkChaos/demo/d-r2", "PodChaos/demo/b-r1",
                               "Schedule/demo/c-r1"]  # fmt: skip
    assert leftovers.names() == ["e-r1", "someone-elses"]


def test_cleanup_dry_run_only_lists(leftovers: FakeKubeAPI, client: Any) -> None:
    removed = backend(client, dry_run=True).cleanup("r1")
    assert len(removed) == 3
    assert {r.method for r in leftovers.requests} == {"GET"}
    assert "a-r1" in leftovers.names()


def test_cleanup_skips_kinds_whose_crd_is_missing() -> None:
    with FakeKubeAPI(plurals={"podchaos": "PodChaos"}) as fake:
        fake.put_object("demo", "podchaos", _obj("PodChaos", "b-r1", "r1"))
        api_client = fake.api_client()
        assert backend(api_client).cleanup("r1") == ["PodChaos/demo/b-r1"]
        api_client.close()


def test_cleanup_403_on_list_names_the_verb(fake: FakeKubeAPI, client: Any) -> None:
    fake.fail("GET", r"/schedules$", 403)
    with pytest.raises(ChaosError, match=r"verb 'list' on resource 'schedules'"):
        backend(client).cleanup("r1")


def test_cleanup_refuses_a_bad_run_id(fake: FakeKubeAPI, client: Any) -> None:
    with pytest.raises(Exception, match="run id 'R 1'"):
        backend(client).cleanup("R 1")
    assert fake.requests == []


def test_run_then_cleanup_after_a_crash_leaves_nothing(fake: FakeKubeAPI, client: Any) -> None:
    chaos = backend(client)
    (_, manifest), *_ = chaos.plan(scenario(delay()), run_id="r9")
    chaos.create(manifest)  # as if rlctl died right after creating it
    assert fake.names() == ["t-f0-network-delay-0-r9"]
    assert chaos.cleanup("r9") == ["NetworkChaos/demo/t-f0-network-delay-0-r9"]
    assert fake.names() == []


# ------------------------------------------------------------------ the scale subresource


def test_deployment_scale_get_and_patch(fake: FakeKubeAPI, client: Any) -> None:
    fake.add_deployment("demo", "gosvc", 2)
    scaler = DeploymentScaler(client, "demo", "gosvc")
    assert scaler.get() == 2
    assert scaler.set(5) == 5
    assert fake.deployments[("demo", "gosvc")]["replicas"] == 5
    assert scaler.get() == 5 and scaler.ready() == 5
    patch = fake.calls("PATCH")[0]
    assert patch.path == "/apis/apps/v1/namespaces/demo/deployments/gosvc/scale"
    assert patch.content_type == MERGE_PATCH
    assert patch.body == {"spec": {"replicas": 5}}


def test_deployment_scale_errors(fake: FakeKubeAPI, client: Any) -> None:
    with pytest.raises(ActuatorError, match="deployment missing in namespace demo not found"):
        DeploymentScaler(client, "demo", "missing").get()
    fake.add_deployment("demo", "gosvc", 2)
    fake.fail("PATCH", r"/scale$", 403)
    with pytest.raises(ActuatorError, match=r"RBAC lacks verb 'patch' on resource 'deployments/scale'"):
        DeploymentScaler(client, "demo", "gosvc").set(3)
    with pytest.raises(ActuatorError, match="replicas must be >= 0"):
        DeploymentScaler(client, "demo", "gosvc").set(-1)
    assert fake.deployments[("demo", "gosvc")]["replicas"] == 2
