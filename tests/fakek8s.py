"""A small fake Kubernetes API server for tests: real HTTP on 127.0.0.1, no mocked clients.

It speaks just enough of the API for the Chaos Mesh backend and the scale actuator:

- namespaced custom objects: ``POST/GET(list)`` on ``/apis/{group}/{version}/namespaces/{ns}/{plural}``
  (``labelSelector`` with ``k=v``, ``k!=v`` and ``k``), ``GET/DELETE`` on ``.../{plural}/{name}``;
  the kind in the body must match the plural, a duplicate name is a 409 and an unknown
  plural (CRD not installed) a 404;
- ``status.conditions`` like Chaos Mesh's: ``AllInjected`` turns ``True`` ``inject_delay_s``
  after creation, or never when it is ``None``; a deleted object lingers ``delete_delay_s``
  with a ``deletionTimestamp`` (the finalizer) before it is gone;
- the Deployment ``scale`` subresource: ``GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``
  with merge/strategic-merge patches (a JSON object) or JSON patches (a list of operations);
- core/v1 Events: ``POST`` and ``GET`` (list, with ``fieldSelector`` on dotted fields such as
  ``involvedObject.name=gosvc,involvedObject.kind=Deployment``, as ``kubectl describe`` asks) on
  ``/api/v1/namespaces/{ns}/events``, ``GET`` and merge-``PATCH`` on ``.../events/{name}``; the
  scale subresource's metadata carries the Deployment's ``uid`` (as a real API server's does);
- ``PATCH`` of a custom object with a JSON merge patch (rlctl labels what Chaos Mesh spawned);
  an object whose status a controller keeps (``_Stored.controlled``, see ``tests/fakemesh.py``,
  the fake Chaos Mesh controller) is served with that status instead of the conditions above;
- discovery.k8s.io/v1 EndpointSlices: ``GET`` (list, ``labelSelector``) on
  ``/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`` and its watch (``?watch=true``
  from a ``resourceVersion``: one JSON event per line, ``ADDED``/``MODIFIED``/``DELETED``, until
  ``timeoutSeconds``); tests change slices with :meth:`FakeKubeAPI.put_endpoint_slice` and
  :meth:`FakeKubeAPI.delete_endpoint_slice` (build one with :func:`endpoint_slice`);
- fault injection: :meth:`FakeKubeAPI.fail` answers a status (403, 404, 409, ...) for a
  method and path pattern, a number of times or for good.

Every request is recorded in :attr:`FakeKubeAPI.requests`. Point the real client at it with
:meth:`FakeKubeAPI.api_client` (``Configuration(host=...)`` + ``ApiClient``) or with the
kubeconfig :meth:`FakeKubeAPI.write_kubeconfig` writes.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHAOS_PLURALS = {
    "networkchaos": "NetworkChaos",
    "stresschaos": "StressChaos",
    "podchaos": "PodChaos",
    "iochaos": "IOChaos",
    "timechaos": "TimeChaos",
    "schedules": "Schedule",
    "workflows": "Workflow",
    "workflownodes": "WorkflowNode",
}

_CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
_SCALE = re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)/scale$")
_SLICES = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/endpointslices$")
_EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events(?:/(?P<name>[^/]+))?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    content_type: str | None
    status: int = 0


@dataclass
class FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int | None
    message: str
    details_kind: str | None = None


@dataclass
class _Stored:
    obj: dict[str, Any]
    created: float
    deleted: float | None = None
    controlled: bool = False  # the status is a controller's (tests/fakemesh.py), served as stored


@dataclass
class FakeKubeAPI:
    """The fake API server. Use as a context manager, or call :meth:`start` / :meth:`stop`.

    :param inject_delay_s: seconds after creation until ``AllInjected`` is ``True``; ``None``: never.
    :param delete_delay_s: seconds a deleted object stays (with a ``deletionTimestamp``) before it is gone.
    :param plurals: custom resource plurals that are "installed" (anything else: 404).
    :param namespaces: namespaces that exist; ``None``: every namespace exists.
    """

    inject_delay_s: float | None = 0.0
    delete_delay_s: float = 0.0
    plurals: dict[str, str] = field(default_factory=lambda: dict(CHAOS_PLURALS))
    namespaces: set[str] | None = None
    requests: list[Request] = field(default_factory=list)
    objects: dict[tuple[str, str, str], _Stored] = field(default_factory=dict)
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rules: list[FailRule] = field(default_factory=list)
    endpoint_slices: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._slice_log: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, namespace, type, slice)
        self._slice_changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._rv = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                if self.command == "GET" and api._watches(self.path):  # events as lines, until it times out
                    api._stream_watch(self)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = api.handle(self.command, self.path, raw, self.headers.get("Content-Type"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> Any:
        """A real ``kubernetes.client.ApiClient`` talking to this server."""
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        configuration.retries = False  # a refused connection should fail at once in tests
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """A kubeconfig file whose current context points at this server."""
        import yaml

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------------ knobs

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        times: int | None = None,
        message: str | None = None,
        details_kind: str | None = None,
    ) -> None:
        """Answer ``status`` to ``method`` requests whose path matches ``pattern`` (``times``: None = always)."""
        with self._lock:
            self.rules.append(
                FailRule(
                    method.upper(), re.compile(pattern), status, times, message or f"injected {status}", details_kind
                )
            )

    def add_deployment(self, namespace: str, name: str, replicas: int) -> None:
        with self._lock:
            self.deployments[(namespace, name)] = {"replicas": replicas, "uid": f"uid-deployment-{namespace}-{name}"}

    def put_object(self, namespace: str, plural: str, obj: dict[str, Any]) -> None:
        """Store an object as if created earlier (e.g. left over by a previous run)."""
        with self._lock:
            body = copy.deepcopy(obj)
            body.setdefault("metadata", {})["namespace"] = namespace
            self.objects[(namespace, plural, body["metadata"]["name"])] = _Stored(body, time.monotonic())

    def put_endpoint_slice(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an EndpointSlice (watchers see ``ADDED`` or ``MODIFIED``); returns it as stored."""
        with self._lock:
            body = copy.deepcopy(obj)
            meta = body.setdefault("metadata", {})
            key = (namespace, meta["name"])
            kind = "MODIFIED" if key in self.endpoint_slices else "ADDED"
            self._rv += 1
            meta.update({"namespace": namespace, "resourceVersion": str(self._rv)})
            meta.setdefault("uid", f"uid-{self._rv}")
            meta.setdefault("creationTimestamp", _now())
            self.endpoint_slices[key] = body
            self._slice_log.append((self._rv, namespace, kind, copy.deepcopy(body)))
            self._slice_changed.notify_all()
            return copy.deepcopy(body)

    def delete_endpoint_slice(self, namespace: str, name: str) -> None:
        """Remove an EndpointSlice (watchers see ``DELETED``)."""
        with self._lock:
            body = self.endpoint_slices.pop((namespace, name))
            self._rv += 1
            body["metadata"]["resourceVersion"] = str(self._rv)
            self._slice_log.append((self._rv, namespace, "DELETED", body))
            self._slice_changed.notify_all()

    def names(self, plural: str | None = None) -> list[str]:
        """Names of the objects present (not being deleted), optionally of one plural."""
        with self._lock:
            self._expire()
            return sorted(k[2] for k, v in self.objects.items() if plural in (None, k[1]) and v.deleted is None)

    def calls(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if method in (None, r.method)]

    # ------------------------------------------------------------------ controllers (tests/fakemesh.py)

    @property
    def lock(self) -> threading.RLock:
        """The lock every request holds; a fake controller takes it to change objects."""
        return self._lock  # type: ignore[no-any-return]

    def spawn_object(self, namespace: str, plural: str, obj: dict[str, Any]) -> _Stored:
        """Create an object as a controller inside the cluster would (uid, resourceVersion, timestamp)."""
        with self._lock:
            body = copy.deepcopy(obj)
            meta = body.setdefault("metadata", {})
            self._rv += 1
            meta.update({"namespace": namespace, "uid": f"uid-{self._rv}", "resourceVersion": str(self._rv),
                         "creationTimestamp": _now()})  # fmt: skip
            stored = _Stored(body, time.monotonic(), controlled=True)
            self.objects[(namespace, plural, meta["name"])] = stored
            return stored

    def _controlled_view(self, stored: _Stored, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("status", {})
        if stored.deleted is not None:
            obj["metadata"]["deletionTimestamp"] = _now()
        return obj

    def _patch_custom(self, key: tuple[str, str, str], body: Any) -> tuple[int, Any]:
        if key not in self.objects:
            return 404, _status(404, "NotFound", f'{key[1]}.chaos-mesh.org "{key[2]}" not found')
        if not isinstance(body, dict):
            return 415, _status(415, "UnsupportedMediaType", "only JSON merge patches are supported here")
        stored = self.objects[key]
        stored.obj = _merge(stored.obj, body)
        self._rv += 1
        stored.obj["metadata"]["resourceVersion"] = str(self._rv)
        return 200, self._view(stored)

    # ------------------------------------------------------------------ the API

    def handle(self, method: str, target: str, raw: bytes, content_type: str | None) -> tuple[int, Any]:
        """Answer one request (and record it with its status)."""
        url = urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(method, url.path, parse_qs(url.query), body, content_type)
        with self._lock:
            self.requests.append(request)
            status, answer = self._answer(request)
            request.status = status
            return status, answer

    def _answer(self, request: Request) -> tuple[int, Any]:
        method, path, query, body = request.method, request.path, request.query, request.body
        if isinstance(body, str):
            return 400, _status(400, "BadRequest", "request body is not JSON")
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.pattern.search(path) and rule.remaining != 0:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.status, _status(rule.status, _REASONS.get(rule.status, "Error"), rule.message,
                                                details_kind=rule.details_kind)  # fmt: skip
            self._expire()
            match = _SLICES.match(path)
            if match:
                return self._list_slices(method, match["ns"], query)
            match = _SCALE.match(path)
            if match:
                return self._scale(method, match["ns"], match["name"], body)
            match = _EVENTS.match(path)
            if match:
                return self._events(method, match["ns"], match["name"], query, body)
            match = _CUSTOM.match(path)
            if match and match["group"] != "apps":
                return self._custom(method, match["ns"], match["plural"], match["name"], query, body)
            return 404, _status(404, "NotFound", "the server could not find the requested resource")

    def _expire(self) -> None:
        now = time.monotonic()
        gone = [k for k, v in self.objects.items() if v.deleted is not None and now - v.deleted >= self.delete_delay_s]
        for key in gone:
            del self.objects[key]

    def _view(self, stored: _Stored) -> dict[str, Any]:
        obj = copy.deepcopy(stored.obj)
        if stored.controlled:
            return self._controlled_view(stored, obj)
        injected = self.inject_delay_s is not None and time.monotonic() - stored.created >= self.inject_delay_s
        flag = "True" if injected else "False"
        obj["status"] = {
            "conditions": [
                {"type": "Selected", "status": "True"},
                {"type": "AllInjected", "status": flag},
                {"type": "AllRecovered", "status": "False"},
                {"type": "Paused", "status": "False"},
            ]
        }
        if stored.deleted is not None:
            obj["metadata"]["deletionTimestamp"] = _now()
        return obj

    def _custom(
        self, method: str, ns: str, plural: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if plural not in self.plurals:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if self.namespaces is not None and ns not in self.namespaces:
            return 404, _status(404, "NotFound", f'namespaces "{ns}" not found', details_kind="namespaces", name=ns)
        kind = self.plurals[plural]
        if name is None and method == "GET":
            selector = query.get("labelSelector", [""])[0]
            items = [
                self._view(v)
                for (n, p, _), v in sorted(self.objects.items())
                if n == ns and p == plural and _matches(selector, v.obj.get("metadata", {}).get("labels") or {})
            ]
            return 200, {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": f"{kind}List", "items": items,
                         "metadata": {"resourceVersion": str(self._rv)}}  # fmt: skip
        if name is None and method == "POST":
            if not isinstance(body, dict) or body.get("kind") != kind:
                got = body.get("kind") if isinstance(body, dict) else None
                return 400, _status(400, "BadRequest", f"the body's kind {got!r} does not match {plural} ({kind})")
            meta = body.setdefault("metadata", {})
            obj_name = meta.get("name")
            if not obj_name:
                return 422, _status(422, "Invalid", "metadata.name: Required value")
            if meta.get("namespace", ns) != ns:
                return 400, _status(400, "BadRequest", "the namespace of the object does not match the URL")
            if (ns, plural, obj_name) in self.objects:
                return 409, _status(409, "AlreadyExists", f'{plural}.chaos-mesh.org "{obj_name}" already exists')
            self._rv += 1
            meta.update({"namespace": ns, "uid": f"uid-{self._rv}", "resourceVersion": str(self._rv)})
            meta["creationTimestamp"] = _now()
            stored = _Stored(body, time.monotonic())
            self.objects[(ns, plural, obj_name)] = stored
            return 201, self._view(stored)
        key = (ns, plural, name or "")
        if method == "GET":
            if key not in self.objects:
                return 404, _status(404, "NotFound", f'{plural}.chaos-mesh.org "{name}" not found')
            return 200, self._view(self.objects[key])
        if method == "PATCH":
            return self._patch_custom(key, body)
        if method == "DELETE":
            if key not in self.objects:
                return 404, _status(404, "NotFound", f'{plural}.chaos-mesh.org "{name}" not found')
            stored = self.objects[key]
            if stored.deleted is None:
                stored.deleted = time.monotonic()
            self._expire()
            return 200, _status(200, "", "", status="Success")
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _list_slices(self, method: str, ns: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if method != "GET":
            return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here (the fake lists and watches)")
        selector = query.get("labelSelector", [""])[0]
        items = [copy.deepcopy(v) for (n, _), v in sorted(self.endpoint_slices.items())
                 if n == ns and _matches(selector, v.get("metadata", {}).get("labels") or {})]  # fmt: skip
        return 200, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "items": items,
                     "metadata": {"resourceVersion": str(self._rv)}}  # fmt: skip

    def _watches(self, target: str) -> bool:
        url = urlsplit(target)
        return bool(_SLICES.match(url.path)) and parse_qs(url.query).get("watch", [""])[0] in ("true", "1")

    def _stream_watch(self, handler: BaseHTTPRequestHandler) -> None:
        """A watch of EndpointSlices: every change after ``resourceVersion``, one JSON line each."""
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        match = _SLICES.match(url.path)
        ns = match["ns"] if match else ""
        request = Request("GET", url.path, query, None, None, 200)
        with self._lock:
            self.requests.append(request)
            rule = next((r for r in self.rules if r.method == "GET" and r.pattern.search(url.path)
                         and r.remaining != 0), None)  # fmt: skip
            if rule is not None and rule.remaining is not None:
                rule.remaining -= 1
        if rule is not None:
            request.status = rule.status
            data = json.dumps(_status(rule.status, _REASONS.get(rule.status, "Error"), rule.message)).encode()
            handler.send_response(rule.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        selector = query.get("labelSelector", [""])[0]
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", ["30"])[0])
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")  # as the API server: the client reads chunk by chunk
        handler.send_header("Connection", "close")
        handler.end_headers()
        try:
            while time.monotonic() < deadline and self._server is not None:
                with self._lock:
                    events = [e for e in self._slice_log if e[0] > since and e[1] == ns]
                    if not events:
                        self._slice_changed.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
                        continue
                since = events[-1][0]
                for _rv, _ns, kind, obj in events:
                    if _matches(selector, obj.get("metadata", {}).get("labels") or {}):
                        line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                        handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _scale(self, method: str, ns: str, name: str, body: Any) -> tuple[int, Any]:
        key = (ns, name)
        if key not in self.deployments:
            return 404, _status(404, "NotFound", f'deployments.apps "{name}" not found')
        dep = self.deployments[key]
        if method == "PATCH":
            replicas = _patched_replicas(body, dep["replicas"])
            if not isinstance(replicas, int) or replicas < 0:
                return 422, _status(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}")
            dep["replicas"] = replicas
        elif method != "GET":
            return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")
        return 200, {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(self._rv), "uid": dep.get("uid", "")},
            "spec": {"replicas": dep["replicas"]},
            "status": {"replicas": dep["replicas"], "selector": f"app={name}"},
        }

    def writes(self) -> list[Request]:
        """Requests that could change state (anything but GET), in order."""
        with self._lock:
            return [r for r in self.requests if r.method != "GET"]

    def list_events(self, field_selector: str = "") -> list[dict[str, Any]]:
        """Events matching ``field_selector`` (``a.b=x,c=y``), oldest first, as a list request would answer."""
        with self._lock:
            return [copy.deepcopy(e) for (_, _), e in sorted(self.events.items()) if _fields_match(field_selector, e)]

    def _events(
        self, method: str, ns: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if name is None and method == "GET":
            selector = query.get("fieldSelector", [""])[0]
            items = [copy.deepcopy(e) for (n, _), e in sorted(self.events.items())
                     if n == ns and _fields_match(selector, e)]  # fmt: skip
            return 200, {"apiVersion": "v1", "kind": "EventList", "items": items,
                         "metadata": {"resourceVersion": str(self._rv)}}  # fmt: skip
        if name is None and method == "POST":
            if not isinstance(body, dict) or body.get("kind", "Event") != "Event":
                return 400, _status(400, "BadRequest", "the body is not an Event")
            meta = body.setdefault("metadata", {})
            if not meta.get("name"):
                return 422, _status(422, "Invalid", "metadata.name: Required value")
            if meta.get("namespace", ns) != ns or (body.get("involvedObject") or {}).get("namespace", ns) != ns:
                return 422, _status(422, "Invalid", "involvedObject.namespace: does not match the event's namespace")
            if (ns, meta["name"]) in self.events:
                return 409, _status(409, "AlreadyExists", f'events "{meta["name"]}" already exists')
            self._rv += 1
            meta.update({"namespace": ns, "uid": f"uid-{self._rv}", "resourceVersion": str(self._rv),
                         "creationTimestamp": _now()})  # fmt: skip
            body.setdefault("apiVersion", "v1")
            body.setdefault("kind", "Event")
            self.events[(ns, meta["name"])] = body
            return 201, copy.deepcopy(body)
        key = (ns, name or "")
        if key not in self.events:
            return 404, _status(404, "NotFound", f'events "{name}" not found')
        if method == "GET":
            return 200, copy.deepcopy(self.events[key])
        if method == "PATCH":
            if not isinstance(body, dict):
                return 415, _status(415, "UnsupportedMediaType", "only merge patches (a JSON object) are supported")
            self._rv += 1
            merged = _merge(self.events[key], body)
            merged["metadata"]["resourceVersion"] = str(self._rv)
            self.events[key] = merged
            return 200, copy.deepcopy(merged)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")


def _fields_match(selector: str, obj: dict[str, Any]) -> bool:
    """A field selector (``a.b=x``, ``a.b==x``, ``a.b!=x``, comma-separated) against ``obj``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        node: Any = obj
        for part in path.strip().split("."):
            node = node.get(part) if isinstance(node, dict) else None
        got = "" if node is None else str(node)
        if (got == value.strip()) == negate:
            return False
    return True


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists",
            422: "Invalid", 500: "InternalError"}  # fmt: skip


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(
    code: int, reason: str, message: str, *, details_kind: str | None = None, name: str | None = None,
    status: str = "Failure",
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status,
                           "message": message, "reason": reason, "code": code}  # fmt: skip
    if details_kind:
        out["details"] = {"name": name or "", "kind": details_kind}
    return out


def endpoint_slice(
    service: str,
    endpoints: list[tuple[str, bool | None, str]],
    *,
    port: int,
    port_name: str = "admin",
    name: str | None = None,
) -> dict[str, Any]:
    """An EndpointSlice of ``service``: ``endpoints`` as ``(address, ready, pod name)`` (ready ``None``: unset)."""
    items = []
    for address, ready, pod in endpoints:
        conditions = {} if ready is None else {"ready": ready, "serving": ready, "terminating": False}
        items.append({"addresses": [address], "conditions": conditions,
                      "targetRef": {"kind": "Pod", "name": pod, "uid": f"uid-pod-{pod}"}})  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service}-{port_name}", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": items,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term not in labels:
            return False
    return True


def _patched_replicas(body: Any, current: int) -> Any:
    if isinstance(body, list):  # JSON patch
        for op in body:
            if op.get("path") == "/spec/replicas" and op.get("op") in ("replace", "add"):
                current = op.get("value")
        return current
    if isinstance(body, dict):  # merge or strategic merge patch
        return (body.get("spec") or {}).get("replicas", current)
    return None
