"""Kubernetes plumbing shared by the chaos backend and the actuators.

- :func:`kube_api_client`: a ``kubernetes`` :class:`ApiClient` from a kubeconfig (or the
  in-cluster service account), with errors worded as the fix.
- :class:`DeploymentScaler`: read and set a Deployment's replicas through the ``scale``
  subresource (``AppsV1Api.read_namespaced_deployment_scale`` /
  ``patch_namespaced_deployment_scale``). Patching the subresource, not the Deployment,
  needs only ``get``/``patch`` on ``deployments/scale`` and does not fight other writers of
  the Deployment spec. The online controller uses it as its replicas actuator.

The ``kubernetes`` package is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from rlctl.errors import ActuatorError, ConfigError

log = logging.getLogger(__name__)

#: The patch body type: a merge patch of ``{"spec": {"replicas": n}}``. kubernetes>=33
#: defaults PATCH bodies to ``application/json-patch+json``, which needs a list of operations.
MERGE_PATCH = "application/merge-patch+json"


def kube_api_client(kubeconfig: str | Path | None = None, context: str | None = None) -> Any:
    """An ApiClient for ``kubeconfig`` (else ``$KUBECONFIG``, ``~/.kube/config``, else in-cluster).

    Raises :class:`ConfigError` naming what was tried when no configuration is usable.
    """
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = Path(kubeconfig).expanduser() if kubeconfig else None
    if path is not None and not path.is_file():
        raise ConfigError(f"kubeconfig {path} does not exist; pass --kubeconfig PATH to an existing file")
    default = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    try:
        if path is not None or context is not None or default.is_file():
            return config.new_client_from_config(config_file=str(path or default), context=context)
        from kubernetes import client

        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except ConfigException as exc:
        raise ConfigError(
            f"no usable Kubernetes configuration ({exc}); tried {path or default} and the in-cluster service "
            "account: pass --kubeconfig PATH (and --context NAME) or set KUBECONFIG"
        ) from None


def api_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the HTTP reason."""
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
    except (TypeError, ValueError):
        data = {}
    message = data.get("message") if isinstance(data, dict) else None
    return str(message or getattr(exc, "reason", None) or exc)


class DeploymentScaler:
    """Replicas of one Deployment, through its ``scale`` subresource.

    :param api_client: a ``kubernetes.client.ApiClient`` (see :func:`kube_api_client`).
    :param namespace: the Deployment's namespace.
    :param name: the Deployment's name.
    :param request_timeout_s: per-request timeout, so a hung API server cannot stall a control loop.
    """

    def __init__(self, api_client: Any, namespace: str, name: str, *, request_timeout_s: float = 10.0) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.name = name
        self.request_timeout_s = request_timeout_s
        self._apps = client.AppsV1Api(api_client)

    def __repr__(self) -> str:
        return f"DeploymentScaler({self.namespace}/{self.name})"

    def get(self) -> int:
        """The desired replicas (``spec.replicas``) of the Deployment."""
        scale = self._call(
            "get",
            self._apps.read_namespaced_deployment_scale,
            self.name,
            self.namespace,
            _request_timeout=self.request_timeout_s,
        )
        return int(scale.spec.replicas or 0)

    def ready(self) -> int:
        """The replicas the Deployment currently runs (``status.replicas``)."""
        scale = self._call(
            "get",
            self._apps.read_namespaced_deployment_scale,
            self.name,
            self.namespace,
            _request_timeout=self.request_timeout_s,
        )
        return int(scale.status.replicas or 0)

    def set(self, replicas: int) -> int:
        """Set the desired replicas; returns what the API server recorded."""
        if replicas < 0:
            raise ActuatorError(f"{self}: replicas must be >= 0, not {replicas}")
        scale = self._call(
            "patch",
            self._apps.patch_namespaced_deployment_scale,
            self.name,
            self.namespace,
            {"spec": {"replicas": int(replicas)}},
            _content_type=MERGE_PATCH,
            _request_timeout=self.request_timeout_s,
        )
        log.info("scaled deployment %s/%s to %d replicas", self.namespace, self.name, scale.spec.replicas)
        return int(scale.spec.replicas or 0)

    def _call(self, verb: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise ActuatorError(self._explain(verb, exc)) from None
        except HTTPError as exc:
            raise ActuatorError(
                f"{self}: cannot reach the Kubernetes API server ({exc}); check the kubeconfig"
            ) from None

    def _explain(self, verb: str, exc: Any) -> str:
        where = f"deployment {self.name} in namespace {self.namespace}"
        if exc.status == 403:
            return (
                f"forbidden to {verb} deployments/scale ({where}): RBAC lacks verb {verb!r} on resource "
                f"'deployments/scale' in group 'apps'; grant it with a Role and RoleBinding in {self.namespace} "
                f"(server said: {api_message(exc)})"
            )
        if exc.status == 404:
            return f"{where} not found: check the name and namespace (server said: {api_message(exc)})"
        if exc.status == 409:
            return f"conflict scaling {where}, another writer changed it; retry (server said: {api_message(exc)})"
        return f"{verb} scale of {where} failed: HTTP {exc.status} {exc.reason}: {api_message(exc)}"
