"""The policy server: its plain core, the Serve config, and Ray Serve for real (one local Ray per module).

The drill kills the Serve replica under a running control loop: the loop falls back to the HPA
rule on the next step, logs why, and resumes with the policy once Serve has replaced the replica.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from online_support import TOKEN, gosvc, redis_server, tiny_artifact, wait_until

from rlctl.contract import N_TELEMETRY, SCHEMA_HASH, Knobs
from rlctl.errors import ArtifactError
from rlctl.online.actuators import Actuators, AdminKnobsActuator
from rlctl.online.loop import ControlConfig, ControlLoop, StepResult, run_in_thread
from rlctl.online.policy import ActRequest, HttpPolicy, InProcessPolicy
from rlctl.online.serve_config import APP_NAME, serve_config, write_serve_config
from rlctl.online.store import TelemetryStore
from rlctl.telemetry.scrape import Scraper

pytestmark = pytest.mark.real  # Ray Serve, redis-server, gosvc


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve-art")
    return tiny_artifact(root / "first"), tiny_artifact(root / "second", seed=7)


def body(service: str = "svc", rows: int = 12, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    window = rng.uniform(0, 50, size=(rows, N_TELEMETRY))
    window[:, 0] = time.time() + np.arange(rows)
    return {"service": service, "window": window.tolist(), "knobs": Knobs().to_dict()}


def post(url: str, payload: Any, timeout: float = 30) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --------------------------------------------------------------------------- without Ray


def test_serve_config_is_a_valid_serve_deploy_schema(tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = serve_config("/models/ppo", num_replicas=2)
    ServeDeploySchema(**config)
    (app,) = config["applications"]
    assert (app["name"], app["route_prefix"], app["import_path"]) == (APP_NAME, "/", "rlctl.online.serve:build_app")
    (dep,) = app["deployments"]
    assert dep["user_config"]["policy"] == "/models/ppo" and dep["num_replicas"] == 2
    auto = serve_config("/m", num_replicas=None, autoscaling={"min_replicas": 1, "max_replicas": 4})
    ServeDeploySchema(**auto)
    assert "num_replicas" not in auto["applications"][0]["deployments"][0]
    path = write_serve_config(tmp_path / "serve.yaml", "/m")
    assert yaml.safe_load(path.read_text()) == serve_config("/m")


def test_cli_writes_the_serve_config(tmp_path: Path) -> None:
    from conftest import run_rlctl

    proc = run_rlctl("serve", "--policy", "/models/x", "--write-config", str(tmp_path / "c.yaml"), "--replicas", "3")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert config["applications"][0]["deployments"][0]["num_replicas"] == 3


def test_act_request_validation_names_the_problem() -> None:
    ok = ActRequest.model_validate(body(rows=3))
    assert ok.window_array().shape == (3, N_TELEMETRY)
    with pytest.raises(ValueError, match=r"window row 0 has 2 values, expected 27 in TELEMETRY_FIELDS order"):
        ActRequest.model_validate({**body(), "window": [[1, 2]]})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['p99'\]"):
        ActRequest.model_validate({**body(), "window": [{"p99": 1.0}]})
    dicts = ActRequest.model_validate({**body(), "window": [{"p99_ms": 3.0, "cpu_util": None}]}).window_array()
    assert dicts[0, 5] == 3.0 and np.isnan(dicts[0, 0])


def test_policy_server_core_health_and_failed_hot_swap(artifacts: tuple[Path, Path], tmp_path: Path) -> None:
    from rlctl.online.serve import PolicyServer

    core = PolicyServer()
    with pytest.raises(RuntimeError, match=r"no policy loaded \(none configured\)"):
        core.check_health()
    core.reconfigure({"policy": str(artifacts[0])})
    core.check_health()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        core.reconfigure({"policy": str(tmp_path / "missing")})
    assert core.model is not None and core.model.name == "ppo:first"  # the old policy keeps serving
    assert "no manifest.json" in (core.info()["load_error"] or "")
    (resp,) = core.decide([ActRequest.model_validate(body())])
    assert resp.schema_hash == SCHEMA_HASH and len(resp.action) == 8


# --------------------------------------------------------------------------- Ray Serve for real


@pytest.fixture(scope="module")
def local_serve(artifacts: tuple[Path, Path]) -> Iterator[Any]:
    from rlctl.online.procs import free_port
    from rlctl.online.serve import LocalServe

    with LocalServe(str(artifacts[0]), port=free_port(), num_cpus=2) as server:
        yield server


@pytest.fixture
def served(local_serve: Any) -> str:
    return str(local_serve.url)


@pytest.mark.slow
def test_http_act_matches_the_in_process_policy(served: str, artifacts: tuple[Path, Path]) -> None:
    payload = body(seed=3)
    status, answer = post(f"{served}/act", payload)
    assert status == 200, answer
    assert set(answer) == {"service", "action", "target_knobs", "policy", "schema_hash", "feature_hash", "carry"}
    local = InProcessPolicy(artifacts[0]).act("svc", np.array(payload["window"]), Knobs().to_array())
    assert answer["action"] == local.action and answer["feature_hash"] == local.feature_hash
    assert answer["carry"] == pytest.approx(local.carry)  # the decoder's accumulator, for the next request
    assert answer["target_knobs"] == Knobs.from_array(local.target_knobs).to_dict()
    assert (answer["policy"], answer["schema_hash"]) == ("ppo:first", SCHEMA_HASH)


@pytest.mark.slow
def test_http_rejects_bad_input_with_422_and_the_reason(served: str) -> None:
    status, answer = post(f"{served}/act", {**body(), "window": [[1.0] * 5]})
    assert status == 422
    assert "window row 0 has 5 values, expected 27" in answer["detail"][0]["msg"]
    status, answer = post(f"{served}/act", {**body(), "knobs": {"replicas": 2}})
    assert status == 422 and {d["loc"][-1] for d in answer["detail"]} >= {"gomaxprocs", "gogc"}
    status, answer = post(f"{served}/act", {**body(), "extra": 1})
    assert status == 422 and answer["detail"][0]["type"] == "extra_forbidden"


@pytest.mark.slow
def test_handle_api_and_multi_service_requests_batch_together(served: str) -> None:
    from ray import serve

    handle = serve.get_app_handle(APP_NAME)
    single = handle.act.remote(body("a")).result()
    many = handle.act_many.remote([body(f"s{i}", seed=i) for i in range(100)]).result()
    assert single["service"] == "a" and [m["service"] for m in many] == [f"s{i}" for i in range(100)]
    status, answer = post(f"{served}/act/many", {"requests": [body(f"h{i}", seed=i) for i in range(20)]})
    assert status == 200 and [r["service"] for r in answer["responses"]] == [f"h{i}" for i in range(20)]
    stats = handle.stats.remote().result()
    assert stats["decisions"] > stats["batches"]  # requests shared model calls


@pytest.mark.slow
def test_hot_swap_through_user_config_keeps_the_replica(
    local_serve: Any, served: str, artifacts: tuple[Path, Path]
) -> None:
    before = json.loads(urllib.request.urlopen(f"{served}/policy", timeout=10).read())
    local_serve.swap(str(artifacts[1]))
    after = json.loads(urllib.request.urlopen(f"{served}/policy", timeout=10).read())
    assert after["policy"] == "ppo:second" and after["replica"] == before["replica"]  # no restart
    assert after["swaps"] == before["swaps"] + 1
    assert post(f"{served}/act", body())[1]["policy"] == "ppo:second"
    local_serve.swap(str(artifacts[0]))
    assert post(f"{served}/act", body())[1]["policy"] == "ppo:first"


@pytest.mark.slow
def test_drill_serve_replica_killed(served: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import ray

    caplog.set_level(logging.WARNING, logger="rlctl.online.loop")
    results: list[StepResult] = []
    lock = threading.Lock()

    def record(r: StepResult) -> None:
        with lock:
            results.append(r)

    def after(t: float) -> list[StepResult]:
        with lock:
            return [r for r in results if r.time_s > t]

    with redis_server(tmp_path / "redis") as redis, gosvc(tmp_path, "--cpu-us", "20") as svc:
        # Scrape, admin and Redis timeouts well above a loaded host's delays: this drill is about the
        # policy server, and a slow live part would add holds and Redis fallbacks it does not expect.
        scraper = Scraper(svc.metrics_url, service="svc", timeout_s=2.0)
        scraper.prime()
        config = ControlConfig("svc", interval_s=0.5)
        loop = ControlLoop(config, Actuators(admin=AdminKnobsActuator(svc.admin_url, token=TOKEN, timeout_s=2.0)),
                           scrape=scraper.scrape, store=TelemetryStore(redis.url, timeout_s=1.0),
                           policy=HttpPolicy(served, timeout_s=config.effective_policy_timeout_s))  # fmt: skip
        thread = run_in_thread(loop, on_step=record)
        try:
            wait_until(lambda: sum(r.reason == "policy" for r in results) >= 3, 30)
            (replica,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if "SERVE_REPLICA" in a["name"] and "PolicyDeployment" in a["name"]]  # fmt: skip
            ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
            killed = time.time()
            first = wait_until(lambda: after(killed)[:1], 5)[0]
            assert (first.reason, first.cause) in {("fallback", "policy-error"), ("fallback", "policy-timeout")}, first
            assert first.controller == "hpa" and first.detail
            assert any("fallback (policy-" in m for m in caplog.messages)
            back = wait_until(lambda: [r for r in after(killed) if r.reason == "policy"], 90, interval_s=0.25)
            assert back[0].controller == "ppo:first"
        finally:
            loop.stop()
            thread.join(5)
        assert not thread.is_alive()
        fallbacks = [r for r in results if r.reason == "fallback"]
        assert fallbacks and all(r.cause in ("policy-error", "policy-timeout") for r in fallbacks)
        audit = TelemetryStore(redis.url).audit_records("svc")
        assert {a.reason for a in audit} == {"policy", "fallback"}


def test_cli_serve_refuses_a_missing_policy_before_starting_ray(tmp_path: Path) -> None:
    from conftest import run_rlctl

    proc = run_rlctl("serve", "--policy", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"ArtifactError: policy '{tmp_path / 'nope'}': no manifest.json in")
