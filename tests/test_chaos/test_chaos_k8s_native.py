"""``--mesh-objects native``: Schedules and Workflows against the fake API server and a fake Chaos Mesh controller.

The real ``kubernetes`` client talks HTTP to :class:`fakek8s.FakeKubeAPI`; :class:`fakemesh.FakeChaosMesh`
spawns a Schedule's runs and runs a Workflow's nodes as Chaos Mesh does (labels, owner
references, ``status``). Periods are a second or so: the client's requests take ~10 ms each on
a loaded 2-vCPU machine, and the assertions leave room for that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fakek8s import FakeKubeAPI
from fakemesh import FakeChaosMesh

from chaos import mesh
from chaos.backends.k8s.backend import K8sConfig, K8sRunBackend
from chaos.backends.k8s.inject import ChaosMeshBackend
from chaos.backends.k8s.native import NativeRun, summary_lines
from chaos.schema import validate_manifest
from chaos.spec import Scenario, scenario_from_dict
from rlctl.errors import ChaosError, ConfigError

SEL = {"namespace": "demo", "labels": {"app": "gosvc"}}


def scenario(
    faults: Sequence[dict[str, Any]] = (), sequences: Sequence[dict[str, Any]] = (), duration_s: float = 30
) -> Scenario:
    return scenario_from_dict({"name": "t", "duration_s": duration_s, "faults": list(faults),
                               "sequences": list(sequences)})  # fmt: skip


def repeat(start_s: float = 1.0, every_s: float = 1.0, count: int = 3, duration_s: float = 0.4) -> dict[str, Any]:
    return {"kind": "pod-kill", "start_s": start_s, "duration_s": duration_s, "selector": SEL,
            "repeat": {"every_s": every_s, "count": count}}  # fmt: skip


def sequence(start_s: float = 0.2) -> dict[str, Any]:
    return {"name": "seq", "start_s": start_s, "gap_s": 0.2, "steps": [
        {"kind": "network-delay", "start_s": 0, "duration_s": 0.5, "selector": SEL},
        {"kind": "cpu-stress", "start_s": 0, "duration_s": 0.5, "selector": SEL},
    ]}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(inject_delay_s=0.03, delete_delay_s=0.03) as api, FakeChaosMesh(api):
        yield api


@pytest.fixture
def client(fake: FakeKubeAPI) -> Iterator[Any]:
    api_client = fake.api_client()
    yield api_client
    api_client.close()


def backend(client: Any, **kw: Any) -> ChaosMeshBackend:
    opts = {"poll_interval_s": 0.02, "inject_timeout_s": 3.0, "delete_timeout_s": 3.0, **kw}
    return ChaosMeshBackend(["demo"], api_client=client, **opts)


def posts(fake: FakeKubeAPI) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in fake.calls("POST")]


# ------------------------------------------------------------------ the plan (pure)


def test_native_plan_times_and_validates_every_object() -> None:
    s = scenario([repeat(start_s=3, every_s=2, count=3), {"kind": "network-delay", "start_s": 1, "duration_s": 2,
                  "selector": SEL}], [sequence(start_s=5)])  # fmt: skip
    planned = mesh.native_manifests(s, run_id="r1")
    kinds = [(o.manifest["kind"], o.create_s) for o in planned]
    # The Schedule one period before its first run (Chaos Mesh's first run comes one period after creation).
    assert kinds == [("NetworkChaos", 1.0), ("Schedule", 1.0), ("Workflow", 5.0)]
    plain, schedule, workflow = planned
    assert schedule.every_s == 2.0 and [w.start_s for w in schedule.windows] == [3.0, 5.0, 7.0]
    assert schedule.manifest["spec"]["schedule"] == "@every 2s"
    assert plain.manifest["metadata"]["name"] == "t-f1-network-delay-0-r1"  # as --mesh-objects windows names it
    assert [w.kind.value for w in workflow.windows] == ["network-delay", "cpu-stress"]
    assert workflow.natural_end_s == pytest.approx(5 + 0.5 + 0.2 + 0.5)
    for o in planned:
        validate_manifest(o.manifest)  # the vendored Chaos Mesh CRDs, strict


def test_a_schedule_whose_first_run_is_early_is_created_at_zero() -> None:
    (o,) = mesh.native_manifests(scenario([repeat(start_s=0.5, every_s=2)]), run_id="r1")
    assert o.create_s == 0.0 and o.every_s == 2.0  # its runs come 1.5 s late; the report shows when


def test_mesh_objects_value_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"--mesh-objects 'cron': choose 'windows' .* or 'native'"):
        K8sRunBackend(K8sConfig(namespaces=("demo",), mesh_objects="cron"))


def test_dry_run_plan_names_the_schedule_and_the_workflow() -> None:
    cfg = K8sConfig(namespaces=("demo",), dry_run=True, mesh_objects="native")
    lines = K8sRunBackend(cfg).plan(scenario([repeat(start_s=3, every_s=2)], [sequence(start_s=5)]))
    assert "1s: create Schedule demo/t-f0-pod-kill-r1" not in lines  # run id "plan" in a dry run
    assert any(x.startswith("1s: create Schedule demo/t-f0-pod-kill-plan (@every 2s, first run at 3s)") for x in lines)
    assert any(x.startswith("5s: create Workflow demo/t-s0-seq-plan (2 steps, 5s-6.2s)") for x in lines)


# ------------------------------------------------------------------ a Schedule


def test_repeat_fault_runs_one_schedule_reports_its_runs_and_cleans_all(fake: FakeKubeAPI, client: Any) -> None:
    run = NativeRun(backend(client), scenario([repeat()]), run_id="r1")
    records = run.run()
    assert posts(fake) == ["schedules"]  # one Schedule, no plain chaos: Chaos Mesh spawned the runs
    created = fake.calls("POST")[0].body
    assert created["kind"] == "Schedule" and created["spec"]["schedule"] == "@every 1s"
    (report,) = run.objects
    assert report.kind == "Schedule" and report.planned_runs == 3 and report.error is None
    assert len(report.runs) == 3
    for r, planned in zip(report.runs, (1.0, 2.0, 3.0), strict=True):
        assert (
            r.kind == "PodChaos"
            and r.name.startswith("t-f0-pod-kill-r1-")
            and len(r.name) == len("t-f0-pod-kill-r1") + 6
        )
        assert r.seen_s is not None and planned - 0.05 <= r.seen_s <= planned + 0.6
        assert r.injected_s is not None and r.gone_s is not None and r.deleted_s is not None
    assert report.status["time"] and isinstance(report.status["active"], list)
    # The Schedule went after its third run, with propagationPolicy Orphan (the last run keeps going) ...
    schedule_delete = next(r for r in fake.calls("DELETE") if r.path.endswith("/schedules/t-f0-pod-kill-r1"))
    assert schedule_delete.query.get("propagationPolicy") == ["Orphan"]
    assert report.deleted_s is not None and report.runs[2].seen_s is not None
    assert report.deleted_s >= report.runs[2].seen_s
    # ... and every run was deleted by rlctl (the fake, like a test cluster without GC, deletes nothing itself).
    deleted = {r.path.rsplit("/", 1)[-1] for r in fake.calls("DELETE")}
    assert {r.name for r in report.runs} <= deleted
    assert fake.names() == []
    # One record per window, next to the Schedule's report.
    assert [(r.kind, r.planned_start_s, r.parent) for r in records] == [
        ("PodChaos", 1.0, "Schedule demo/t-f0-pod-kill-r1"), ("PodChaos", 2.0, "Schedule demo/t-f0-pod-kill-r1"),
        ("PodChaos", 3.0, "Schedule demo/t-f0-pod-kill-r1"),
    ]  # fmt: skip
    assert all(r.error is None for r in records)
    (line,) = summary_lines([report.to_dict()])
    assert line.startswith("Schedule demo/t-f0-pod-kill-r1: 3 of 3 runs spawned (t-f0-pod-kill-r1-")
    assert "runs deleted" in line and "ERROR" not in line


def test_a_schedule_that_spawns_nothing_is_reported(client: Any) -> None:
    with FakeKubeAPI(inject_delay_s=0.03, delete_delay_s=0.03) as api:  # Chaos Mesh's controller is not running
        api_client = api.api_client()
        run = NativeRun(
            backend(api_client), scenario([repeat(start_s=0.4, every_s=0.4, count=2, duration_s=0.2)]), run_id="r1"
        )
        records = run.run()
        api_client.close()
        assert api.names() == []
    (report,) = run.objects
    assert report.runs == [] and report.error is not None
    assert "spawned 0 of 2 runs by" in report.error and "is the controller up?" in report.error
    assert [r.error for r in records] == ["Schedule demo/t-f0-pod-kill-r1 spawned 0 of 2 planned runs"] * 2


# ------------------------------------------------------------------ a Workflow


def test_sequence_runs_one_workflow_and_reports_node_statuses(fake: FakeKubeAPI, client: Any) -> None:
    run = NativeRun(backend(client), scenario(sequences=[sequence()]), run_id="r1")
    records = run.run()
    assert posts(fake) == ["workflows"]
    (report,) = run.objects
    assert report.kind == "Workflow" and report.name == "t-s0-seq-r1" and report.error is None
    conditions = {c["type"]: c["status"] for c in report.status["conditions"]}
    assert conditions == {"Scheduled": "True", "Accomplished": "True"}
    assert report.status["entryNode"].startswith("entry-") and report.status["endTime"]
    nodes = {n.template: n for n in report.nodes}
    assert set(nodes) == {"entry", "step-0-network-delay", "gap-0", "step-1-cpu-stress"}
    assert nodes["entry"].type == "Serial"
    assert nodes["step-0-network-delay"].type == "NetworkChaos" and nodes["gap-0"].type == "Suspend"
    for n in nodes.values():
        assert n.finished_s is not None
        assert "True" in (n.conditions.get("Accomplished"), n.conditions.get("DeadlineExceed"))
    assert nodes["step-0-network-delay"].chaos is not None
    assert nodes["step-0-network-delay"].chaos.startswith("NetworkChaos/step-0-network-delay-")
    # Each chaos step is one record, in order, with the node that created it.
    assert [(r.kind, r.planned_start_s) for r in records] == [
        ("NetworkChaos", 0.2),
        ("StressChaos", pytest.approx(0.9)),
    ]
    first, second = records
    assert first.parent == second.parent == "Workflow demo/t-s0-seq-r1"
    assert first.created_s is not None and second.created_s is not None
    assert 0.15 <= first.created_s <= 0.8 and second.created_s >= first.created_s + 0.5
    assert first.injected_s is not None and first.gone_s is not None
    # The Workflow went first, then its nodes and whatever chaos was left.
    deletes = [r.path.split("/")[-2] for r in fake.calls("DELETE")]
    assert deletes[0] == "workflows" and deletes.count("workflownodes") == 4
    assert fake.names() == []
    (line,) = summary_lines([report.to_dict()])
    assert line.startswith("Workflow demo/t-s0-seq-r1: Accomplished=True, 4 nodes (entry-")


def test_a_workflow_cut_short_by_the_scenario_is_removed_at_its_end(fake: FakeKubeAPI, client: Any) -> None:
    long = {"name": "long", "start_s": 0.1, "steps": [{"kind": "network-delay", "start_s": 0, "duration_s": 20,
                                                        "selector": SEL}]}  # fmt: skip
    started = time.monotonic()
    run = NativeRun(backend(client), scenario(sequences=[long], duration_s=1.0), run_id="r1")
    (record,) = run.run()
    assert time.monotonic() - started < 8
    (report,) = run.objects
    assert report.error is None  # cut short on purpose: no error
    assert report.deleted_s is not None and 0.9 <= report.deleted_s <= 3.0
    assert record.planned_end_s == 1.0 and record.gone_s is not None
    assert fake.names() == []


# ------------------------------------------------------------------ failures


def test_exception_mid_run_removes_the_schedule_its_runs_and_the_workflow(fake: FakeKubeAPI, client: Any) -> None:
    chaos = backend(client)
    ticks = []

    def sleep(seconds: float) -> None:  # the run's own wait: stop once the Schedule has spawned a run
        ticks.append(seconds)
        if fake.names("podchaos") and fake.names("workflownodes"):
            raise KeyboardInterrupt
        time.sleep(seconds)

    s = scenario([repeat(start_s=0.5, every_s=0.5, count=10, duration_s=0.4)], [sequence(start_s=0.1)])
    run = NativeRun(chaos, s, run_id="r1", sleep=sleep)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert fake.names() == []
    assert chaos.cleanup("r1") == []  # nothing left for `rlctl chaos cleanup`
    schedule, workflow = sorted(run.objects, key=lambda o: o.kind)
    assert schedule.runs and schedule.deleted_s is not None and schedule.gone_s is not None
    assert workflow.deleted_s is not None


def test_schedule_rejected_by_the_api_server_is_clear_and_leaves_nothing(fake: FakeKubeAPI, client: Any) -> None:
    fake.fail("POST", r"/schedules$", 422, message='Schedule.chaos-mesh.org "t-f0-pod-kill-r1" is invalid: '
              "spec.schedule: Invalid value: \"@every 1s\": admission webhook denied it")  # fmt: skip
    run = NativeRun(backend(client), scenario([repeat()], [sequence(start_s=0.0)]), run_id="r1")
    with pytest.raises(ChaosError) as info:
        run.run()
    message = str(info.value)
    assert message.startswith("the API server rejected Schedule t-f0-pod-kill-r1 in namespace demo as invalid:")
    assert "spec.schedule: Invalid value" in message
    assert fake.names() == []  # the Workflow created alongside was removed too
    assert "workflows" in posts(fake)


def test_killed_rlctl_then_cleanup_removes_the_schedule_first_then_its_runs(fake: FakeKubeAPI, client: Any) -> None:
    chaos = backend(client)
    (planned,) = mesh.native_manifests(scenario([repeat(start_s=0.3, every_s=0.3, count=3, duration_s=0.2)]),
                                       run_id="r9")  # fmt: skip
    chaos.create(planned.manifest)  # as if rlctl died right after creating it: the Schedule keeps spawning
    deadline = time.monotonic() + 5
    while len(fake.names("podchaos")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runs = fake.names("podchaos")
    assert len(runs) >= 2
    removed = chaos.cleanup("r9")
    assert removed[0] == "Schedule/demo/t-f0-pod-kill-r9"
    assert set(removed[1:]) >= {f"PodChaos/demo/{n}" for n in runs}
    deletes = [r.path.rsplit("/", 1)[-1] for r in fake.calls("DELETE")]
    assert deletes[0] == "t-f0-pod-kill-r9"  # the Schedule before anything it spawned
    assert fake.names() == []


def test_an_interrupted_cleanup_leaves_runs_the_next_cleanup_finds(fake: FakeKubeAPI, client: Any) -> None:
    chaos = backend(client)
    (planned,) = mesh.native_manifests(scenario([repeat(start_s=0.3, every_s=0.3, count=3, duration_s=0.2)]),
                                       run_id="r9")  # fmt: skip
    chaos.create(planned.manifest)
    deadline = time.monotonic() + 5
    while not fake.names("podchaos") and time.monotonic() < deadline:
        time.sleep(0.05)
    fake.fail("DELETE", r"/podchaos/", 500, times=1)  # the cleanup dies after the Schedule is gone
    with pytest.raises(ChaosError, match="HTTP 500"):
        chaos.cleanup("r9")
    assert fake.names("schedules") == []
    left = fake.names("podchaos")
    assert left  # Chaos Mesh's label only says managed-by=<schedule>; rlctl labelled them before deleting it
    labels = [fake.objects[("demo", "podchaos", n)].obj["metadata"]["labels"] for n in left]
    assert all(x["rlctl.io/run-id"] == "r9" and x["app.kubernetes.io/managed-by"] == "rlctl" for x in labels)
    assert sorted(chaos.cleanup("r9")) == sorted(f"PodChaos/demo/{n}" for n in left)
    assert fake.names() == []


# ------------------------------------------------------------------ the CLI, end to end


@pytest.mark.real  # gosvc
@pytest.mark.slow
def test_chaos_run_native_reports_schedule_and_workflow_next_to_the_windows(tmp_path: Any) -> None:
    """``rlctl chaos run --backend k8s --mesh-objects native``: report JSON, report.md and the console."""
    import json
    import subprocess

    from chaos_local_support import GOSVC, require_binaries, write_scenario
    from conftest import invoke_rlctl

    require_binaries()
    sel = {"namespace": "rlctl-demo", "labels": {"app": "gosvc"}, "mode": "one"}
    path = write_scenario(
        tmp_path / "native.yaml", name="native", duration_s=8, slo_p99_ms=100, load={"kind": "constant", "qps": 20},
        faults=[{"name": "kill", "kind": "pod-kill", "start_s": 2, "duration_s": 1, "selector": sel,
                 "repeat": {"every_s": 2, "count": 2}}],
        sequences=[{"name": "degrade", "start_s": 1, "gap_s": 0.5, "steps": [
            {"kind": "network-delay", "start_s": 0, "duration_s": 1, "selector": sel, "params": {"latency_ms": 80}},
            {"kind": "cpu-stress", "start_s": 0, "duration_s": 1, "selector": sel}]}],
    )  # fmt: skip
    svc = subprocess.Popen([str(GOSVC), "serve", "--addr", "127.0.0.1:0", "--cpu-us", "50"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert svc.stdout is not None
        addr = json.loads(svc.stdout.readline())["addr"]
        with FakeKubeAPI(inject_delay_s=0.2, delete_delay_s=0.2) as api, FakeChaosMesh(api):
            kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
            proc = invoke_rlctl(
                "chaos", "run", str(path), "--backend", "k8s", "-n", "rlctl-demo", "--kubeconfig", str(kubeconfig),
                "--url", f"http://{addr}", "-c", "static", "--interval", "2", "--mesh-objects", "native",
                "--report", str(tmp_path / "report"), "--run-id", "native-1",
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert posts(api) == ["schedules", "workflows"]  # the Schedule one period before its first run
            assert api.names() == []
    finally:
        svc.terminate()
        svc.wait(timeout=10)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    result = report["results"]["static"]
    schedule, workflow = sorted(result["extra"]["chaos_mesh"], key=lambda o: o["kind"])
    assert schedule["name"] == "native-f0-kill-native-1" and len(schedule["runs"]) == 2 and schedule["error"] is None
    assert {n["type"] for n in workflow["nodes"]} == {"Serial", "NetworkChaos", "Suspend", "StressChaos"}
    assert {c["type"]: c["status"] for c in workflow["status"]["conditions"]}["Accomplished"] == "True"
    # The per-window records, each naming the object Chaos Mesh spawned and its parent.
    faults = [(i["fault"], i["detail"].split(" spawned by ")[1].split(",")[0]) for i in result["injections"]]
    assert [f for f, _ in faults] == ["network-delay#0", "kill", "cpu-stress#2", "kill"]
    assert {p for _, p in faults} == {"Schedule rlctl-demo/native-f0-kill-native-1",
                                      "Workflow rlctl-demo/native-s0-degrade-native-1"}  # fmt: skip
    assert all(i["injected_s"] is not None and i["error"] is None for i in result["injections"])
    assert "static: Schedule rlctl-demo/native-f0-kill-native-1: 2 of 2 runs spawned" in proc.stderr
    assert "static: Workflow rlctl-demo/native-s0-degrade-native-1: Accomplished=True" in proc.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "- Schedule rlctl-demo/native-f0-kill-native-1: 2 of 2 runs spawned" in markdown


def test_api_error_mid_run_removes_everything_and_names_the_object(fake: FakeKubeAPI, client: Any) -> None:
    fake.fail("GET", r"/workflows/t-s0-seq-r1$", 500, times=1, message="etcd timed out")
    run = NativeRun(backend(client), scenario([repeat(start_s=0.5, every_s=0.5)], [sequence()]), run_id="r1")
    with pytest.raises(
        ChaosError, match=r"get Workflow t-s0-seq-r1 in namespace demo failed: HTTP 500 .*etcd timed out"
    ):
        run.run()
    assert fake.names() == []
    assert {r.path.rsplit("/", 1)[-1] for r in fake.calls("DELETE")} >= {"t-s0-seq-r1", "t-f0-pod-kill-r1"}


def test_a_forbidden_label_patch_says_which_verb_to_grant(fake: FakeKubeAPI, client: Any) -> None:
    chaos = backend(client)
    (planned,) = mesh.native_manifests(scenario([repeat(start_s=0.3, every_s=0.3, duration_s=0.2)]), run_id="r9")
    chaos.create(planned.manifest)
    deadline = time.monotonic() + 5
    while not fake.names("podchaos") and time.monotonic() < deadline:
        time.sleep(0.05)
    fake.fail("PATCH", r"/podchaos/", 403)
    with pytest.raises(ChaosError, match=r"verb 'patch' on resource 'podchaos'.*--verb=create,get,list,delete,patch "):
        chaos.cleanup("r9")
    assert fake.names("schedules") == ["t-f0-pod-kill-r9"]  # nothing deleted before its spawn is labelled


def test_check_refuses_what_only_a_workflow_cannot_express() -> None:
    seq = sequence()
    seq["steps"][1]["repeat"] = {"every_s": 1, "count": 2}
    s = scenario(sequences=[seq])
    K8sRunBackend(K8sConfig(namespaces=("demo",), url="http://127.0.0.1:1")).check(s)  # windows: expanded, fine
    cfg = K8sConfig(namespaces=("demo",), url="http://127.0.0.1:1", mesh_objects="native")
    with pytest.raises(ChaosError, match=r"step #1 \(cpu-stress\): a step of a sequence cannot `repeat`"):
        K8sRunBackend(cfg).check(s)
