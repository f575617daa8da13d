"""The policy server: a Ray Serve deployment with a FastAPI ingress.

``PolicyDeployment`` loads a verified artifact in ``__init__`` (or through
``reconfigure``), decides for many services per model call with ``@serve.batch``, reports
unhealthy from ``check_health`` when it has no policy, and hot-swaps policies when its
``user_config`` changes (``{"policy": PATH}``) without restarting the replica.

HTTP (through the Serve proxy)::

    POST /act       {"service": "checkout", "window": [[...27 numbers...], ...], "knobs": {...}}
                ->  {"service": ..., "action": [8 ints], "target_knobs": {...}, "policy": ...,
                     "schema_hash": ..., "feature_hash": ...}          (422 with the reason on bad input)
    POST /act/many  {"requests": [<as /act>, ...]} -> {"responses": [...]}: many services per request
    GET  /policy  the loaded policy's manifest and counters
    GET  /healthz ok when a policy is loaded

Handle API: ``serve.get_app_handle(name).act.remote({...same body...})`` and
``.act_many.remote([...])``. Single and multi-service requests share the same batches.

This module imports Ray and FastAPI at import time; import it only where serving happens.
``import_path`` for ``serve deploy`` is ``rlctl.online.serve:build_app`` (see :func:`serve_config`).
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from ray import serve
from ray.serve import Application

from rlctl.contract import SCHEMA_HASH, SCHEMA_VERSION
from rlctl.errors import ConfigError
from rlctl.online.policy import (
    ActManyRequest,
    ActManyResponse,
    ActRequest,
    ActResponse,
    PolicyModel,
    PolicyUnavailable,
)
from rlctl.online.procs import free_port
from rlctl.online.serve_config import DEPLOYMENT_NAME, serve_config

log = logging.getLogger(__name__)

#: Services decided per model call at most.
DEFAULT_MAX_BATCH_SIZE = 64
#: How long the first request of a batch waits for company. Requests that arrive while a
#: batch runs form the next one anyway, so a long wait only adds latency to lone requests.
DEFAULT_BATCH_WAIT_S = 0.0005


class PolicyServer:
    """The deployment's logic in plain Python (no Ray): load, hot-swap, health, decide.

    :param policy: artifact to load now (``default`` or a folder); ``None`` waits for
        :meth:`reconfigure`.
    """

    def __init__(self, policy: str | None = None) -> None:
        self.model: PolicyModel | None = None
        self.load_error: str | None = None
        self.batches = 0
        self.decisions = 0
        self.loaded_at = 0.0
        self.swaps = 0
        if policy is not None:
            self.load(policy)

    def load(self, policy: str) -> None:
        """Load and verify ``policy``; on failure the current model keeps serving and the error is raised."""
        try:
            model = PolicyModel(policy)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading policy %s failed, keeping %s: %s", policy,
                      self.model.name if self.model else "none", self.load_error)  # fmt: skip
            raise
        self.swaps += self.model is not None
        self.model, self.load_error, self.loaded_at = model, None, time.time()
        log.info("serving policy %s (%s)", model.name, model.artifact.path)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load ``user_config["policy"]`` when it differs from the policy being served."""
        policy = user_config.get("policy")
        if policy is not None and (self.model is None or str(policy) != self.model.policy_ref):
            self.load(str(policy))

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError(
                f"no policy loaded ({self.load_error or 'none configured'}); "
                "set user_config {'policy': PATH} on the deployment"
            )

    def decide(self, requests: list[ActRequest]) -> list[ActResponse]:
        model = self.model  # one model per batch, even if a hot swap lands meanwhile
        if model is None:
            raise HTTPException(status_code=503, detail="no policy loaded")
        knobs = np.stack([r.knobs.to_array() for r in requests])
        try:
            decisions = model.decide(
                [r.window_array() for r in requests],
                knobs,
                [r.carry for r in requests],
                [r.capacity_qps for r in requests],
            )
        except PolicyUnavailable as exc:  # a residual policy asked without capacity_qps: the request's fault
            raise HTTPException(status_code=422, detail=str(exc)) from None
        self.batches += 1
        self.decisions += len(requests)
        return [d.response(r.service) for d, r in zip(decisions, requests, strict=True)]

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "policy": m.name if m else None,
            "path": str(m.artifact.path) if m else None,
            "manifest": m.artifact.manifest if m else None,
            "schema_hash": SCHEMA_HASH,
            "schema_version": SCHEMA_VERSION,
            "batches": self.batches,
            "decisions": self.decisions,
            "swaps": self.swaps,
            "loaded_at": self.loaded_at,
            "load_error": self.load_error,
        }


api = FastAPI(title="rlctl policy server", description="Decides knob changes for Go services.")


@serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=256,
    health_check_period_s=2.0,
    health_check_timeout_s=10.0,
    ray_actor_options={"num_cpus": 0.5},
)
@serve.ingress(api)
class PolicyDeployment:
    """One replica of the policy server: a thin Serve wrapper around :class:`PolicyServer`.

    :param policy: artifact to load at start; ``None`` waits for ``reconfigure`` (the
        Serve config's ``user_config``), which is also how a policy is hot-swapped.
    :param max_batch_size: services per model call at most.
    :param batch_wait_timeout_s: wait of a batch's first request for more.
    """

    def __init__(
        self,
        policy: str | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S,
    ) -> None:
        self._act_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self._act_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.core = PolicyServer(policy)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``policy`` (hot swap; a policy that fails to load leaves the current one serving and
        fails the update), ``max_batch_size``, ``batch_wait_timeout_s``."""
        if "max_batch_size" in user_config:
            self._act_batch.set_max_batch_size(int(user_config["max_batch_size"]))  # type: ignore[attr-defined]
        if "batch_wait_timeout_s" in user_config:
            self._act_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))  # type: ignore[attr-defined]
        self.core.reconfigure(user_config)

    def check_health(self) -> None:
        self.core.check_health()

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _act_batch(self, requests: list[ActRequest]) -> list[ActResponse]:
        return self.core.decide(requests)

    async def act(self, request: ActRequest | dict[str, Any]) -> dict[str, Any]:
        """Handle API: one service's request (a dict is validated like the HTTP body)."""
        req = request if isinstance(request, ActRequest) else ActRequest.model_validate(request)
        result: ActResponse = await self._act_batch(req)
        return result.model_dump()

    async def act_many(self, requests: list[ActRequest | dict[str, Any]]) -> list[dict[str, Any]]:
        """Handle API: many services in one call; each joins the shared batches like a single request."""
        reqs = [r if isinstance(r, ActRequest) else ActRequest.model_validate(r) for r in requests]
        results: list[ActResponse] = await asyncio.gather(*(self._act_batch(r) for r in reqs))
        return [r.model_dump() for r in results]

    @api.post("/act", response_model=ActResponse)
    async def act_http(self, body: ActRequest) -> ActResponse:
        result: ActResponse = await self._act_batch(body)
        return result

    @api.post("/act/many", response_model=ActManyResponse)
    async def act_many_http(self, body: ActManyRequest) -> ActManyResponse:
        results: list[ActResponse] = await asyncio.gather(*(self._act_batch(r) for r in body.requests))
        return ActManyResponse(responses=results)

    @api.get("/policy")
    def info(self) -> dict[str, Any]:
        return {**self.core.info(), "replica": str(serve.get_replica_context().replica_id)}

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        try:
            self.core.check_health()
        except RuntimeError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        assert self.core.model is not None
        return {"status": "ok", "policy": self.core.model.name}

    def stats(self) -> dict[str, Any]:
        return self.info()


echo_api = FastAPI(title="echo")


@serve.deployment(name="Echo", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(echo_api)
class EchoDeployment:
    """A trivial deployment on the same HTTP path (proxy, FastAPI, JSON): the latency floor."""

    @echo_api.post("/act")
    async def echo(self, request: Request) -> Any:
        return await request.json()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (``import_path: rlctl.online.serve:build_app``).

    ``args`` may hold ``policy`` (loaded in ``__init__``), ``max_batch_size`` and
    ``batch_wait_timeout_s``. A ``user_config`` with ``policy`` overrides ``policy`` later.
    """
    args = dict(args or {})
    unknown = set(args) - {"policy", "max_batch_size", "batch_wait_timeout_s"}
    if unknown:
        raise ConfigError(f"serve app args: unknown key(s) {sorted(unknown)}; known: policy, max_batch_size, "
                          "batch_wait_timeout_s")  # fmt: skip
    return PolicyDeployment.bind(  # type: ignore[attr-defined, no-any-return]
        args.get("policy"),
        int(args.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)),
        float(args.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S)),
    )


def policy_app(policy: str | Path, **options: Any) -> Application:
    """The policy application with ``user_config {"policy": policy}``, for ``serve.run``.

    ``serve.run`` gives every deployment a new code version, so running it again restarts
    the replicas; :class:`LocalServe` deploys from a Serve config instead, where a change of
    ``user_config`` alone is swapped in by ``reconfigure`` on the running replicas.
    """
    deployment = PolicyDeployment.options(user_config={"policy": str(policy)}, **options)  # type: ignore[attr-defined]
    return deployment.bind()  # type: ignore[no-any-return]


def build_echo(args: dict[str, Any] | None = None) -> Application:
    """The echo application (``import_path: rlctl.online.serve:build_echo``)."""
    return EchoDeployment.bind()  # type: ignore[attr-defined, no-any-return]


class LocalServe:
    """Ray and Serve on this host, the policy deployed from a Serve config (as ``serve deploy CONFIG`` does).

    Only Ray's public interfaces: :func:`ray.serve.start` starts Serve's HTTP proxy on
    ``host:port``, and the config goes to the Serve REST API of Ray's dashboard through
    Ray's ``serve deploy`` CLI, as KubeRay deploys a RayService's ``serveConfigV2``. A
    config deploy (unlike ``serve.run``) keeps the replicas when only ``user_config``
    changes, which :meth:`swap` relies on. The dashboard listens on loopback only.

    :param policy: ``default`` or an artifact folder.
    :param num_cpus: CPUs Ray may use (keep it small on a shared host).
    :param with_echo: also deploy the echo application at ``/echo`` (for the benchmark).
    """

    def __init__(
        self,
        policy: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        num_cpus: int = 2,
        with_echo: bool = False,
    ) -> None:
        self.policy = str(policy)
        self.host, self.port, self.num_cpus, self.with_echo = host, port, num_cpus, with_echo
        self._dashboard = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self, policy: str | None = None) -> dict[str, Any]:

        return serve_config(policy or self.policy, host=self.host, port=self.port, with_echo=self.with_echo)

    def start(self, timeout_s: float = 180.0) -> "LocalServe":
        import ray

        if ray.is_initialized():
            context = ray.init(ignore_reinit_error=True)
        else:
            context = ray.init(num_cpus=self.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                               dashboard_port=free_port(), log_to_driver=False, configure_logging=False)  # fmt: skip
        if not context.dashboard_url:
            raise ConfigError("LocalServe deploys through the Serve REST API of Ray's dashboard; this Ray has none")
        url = str(context.dashboard_url)
        self._dashboard = url if "://" in url else f"http://{url}"
        config = self.config()
        serve.start(proxy_location=config["proxy_location"], http_options=config["http_options"])
        self._deploy(config, timeout_s)
        return self

    def swap(self, policy: str | Path, timeout_s: float = 120.0) -> None:
        """Deploy the same config with another ``user_config.policy``: the replicas reconfigure in place."""
        self._deploy(self.config(str(policy)), timeout_s)
        self.policy = str(policy)

    def _deploy(self, config: dict[str, Any], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        _serve_deploy(config, self._dashboard, deadline)
        names = [app["name"] for app in config["applications"]]
        while time.monotonic() < deadline:
            statuses = serve.status().applications
            states = {n: statuses[n] for n in names if n in statuses}
            if len(states) == len(names) and all(s.status == "RUNNING" for s in states.values()):
                ready = [d for s in states.values() for d in s.deployments.values()]
                if all(d.status == "HEALTHY" for d in ready):
                    return
            failed = [f"{n}: {s.message}" for n, s in states.items() if s.status == "DEPLOY_FAILED"]
            if failed:
                raise ConfigError("serve deployment failed: " + "; ".join(failed))
            time.sleep(0.2)
        raise ConfigError(f"serve applications {names} not running after {timeout_s:g} s: {serve.status()}")

    def stop(self) -> None:
        import ray

        try:
            serve.shutdown()
        finally:
            ray.shutdown()

    def __enter__(self) -> "LocalServe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve_deploy(config: dict[str, Any], dashboard: str, deadline: float) -> None:
    """``serve deploy CONFIG --address DASHBOARD``: Ray's CLI for the Serve REST API (it handles Ray's auth).

    Retried until ``deadline`` while the dashboard does not answer yet (it may start after ``ray.init``).
    """
    import shutil
    import subprocess
    import sys
    import tempfile

    import yaml

    cli = Path(sys.executable).with_name("serve")
    command = str(cli) if cli.exists() else shutil.which("serve")
    if command is None:
        raise ConfigError("Ray's `serve` command is not installed next to this Python (pip install 'rlctl[serve]')")
    with tempfile.TemporaryDirectory(prefix="rlctl-serve-") as tmp:
        path = Path(tmp) / "serve-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        while True:
            try:
                done = subprocess.run([command, "deploy", str(path), "--address", dashboard], capture_output=True,
                                      text=True, timeout=max(deadline - time.monotonic(), 10.0))  # fmt: skip
            except subprocess.TimeoutExpired:
                raise ConfigError(f"serve deploy to {dashboard} did not finish in time") from None
            if done.returncode == 0:
                return
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            if "ConnectionError" not in done.stderr or time.monotonic() > deadline:
                raise ConfigError(f"serve deploy to {dashboard} failed: " + " | ".join(reason))
            log.info("serve deploy to %s failed (retrying): %s", dashboard, " | ".join(reason))
            time.sleep(1.0)
