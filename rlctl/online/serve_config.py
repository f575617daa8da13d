"""The Serve config file for ``serve deploy`` (and a KubeRay RayService's ``serveConfigV2``).

Kept apart from :mod:`rlctl.online.serve` so writing a config does not import Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlctl.errors import ConfigError

APP_NAME = "rlctl-policy"
DEPLOYMENT_NAME = "PolicyDeployment"
IMPORT_PATH = "rlctl.online.serve:build_app"
ECHO_IMPORT_PATH = "rlctl.online.serve:build_echo"


def serve_config(
    policy_path: str | Path,
    *,
    host: str = "0.0.0.0",
    port: int = 8000,
    num_replicas: int | None = 1,
    autoscaling: dict[str, Any] | None = None,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.0005,
    num_cpus: float = 0.5,
    runtime_env: dict[str, Any] | None = None,
    with_echo: bool = False,
) -> dict[str, Any]:
    """A standard Serve config (``ServeDeploySchema``) for the policy application.

    ``policy_path`` is the artifact folder as the Ray workers see it (inside the image, in a
    cluster). The policy goes in the deployment's ``user_config`` only, not in the
    application's ``args``: a change of ``args`` rebuilds the application and restarts its
    replicas, while changing only ``user_config.policy`` and deploying again hot-swaps the
    policy in ``reconfigure`` on the running replicas. Pass ``autoscaling`` (e.g.
    ``{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 32}``) instead of a
    fixed ``num_replicas``. ``with_echo`` adds the trivial echo application at ``/echo``
    (for benchmarks).
    """
    if (num_replicas is None) == (autoscaling is None):
        raise ConfigError("serve config: give exactly one of num_replicas and autoscaling")
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": 256,
        "user_config": {
            "policy": str(policy_path),
            "max_batch_size": max_batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s,
        },
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 10.0,
        "ray_actor_options": {"num_cpus": num_cpus},
    }
    if autoscaling is not None:
        deployment["autoscaling_config"] = dict(autoscaling)
    else:
        deployment["num_replicas"] = num_replicas
    env = dict(runtime_env or {"env_vars": {"OMP_NUM_THREADS": "1"}})
    applications = [
        {
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "runtime_env": env,
            "deployments": [deployment],
        }
    ]
    if with_echo:
        applications.append({"name": "echo", "route_prefix": "/echo", "import_path": ECHO_IMPORT_PATH,
                             "runtime_env": env, "deployments": [{"name": "Echo", "num_replicas": 1}]})  # fmt: skip
    return {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}, "applications": applications}


def write_serve_config(path: str | Path, policy_path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`serve_config` as YAML to ``path``."""
    import yaml

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(serve_config(policy_path, **kwargs), sort_keys=False))
    return out
