"""Runtime knobs on every ready replica: endpoint sources and the fan-out that reconciles them.

A Deployment's replicas each run their own Go runtime, so a GOGC or GOMAXPROCS change the
controller makes must land on every one of them, and stay there as replicas come and go:

- an **endpoint source** says which replicas exist now and which are ready:
  :class:`EndpointSliceSource` reads the Service's EndpointSlices (``discovery.k8s.io/v1``,
  the ``ready`` condition of each endpoint; list, then watch), :func:`static_endpoints` a
  fixed list of URLs (``rlctl control --knob-endpoints URL,URL`` or a file; every one is
  taken as ready);
- :class:`KnobFanout` keeps the **target** (the runtime knobs the controller last set) and,
  per replica, the knobs it last applied there. :meth:`KnobFanout.put` changes the target and
  sends it to every ready replica at once (in parallel); :meth:`KnobFanout.reconcile`, called
  every interval, sends it to each ready replica whose last-applied knobs differ: one that
  missed a change, one that just became ready, one that was not ready for a while (its
  process may have restarted with its flags' knobs). Not-ready replicas are skipped.

Each send is retried on a refused connection, a timeout or a 5xx (bounded: ``attempts``
tries, ``backoff_s`` doubling between them, all within ``budget_s`` so a dead replica
cannot stall the control step); a 4xx (bad token, value out of range) is not retried. A
replica that missed is tried again at the next reconcile, and, while it keeps missing, at
every 2nd, 4th, ... 16th one (``max_skip``). What
happened on each replica is a :class:`ReplicaResult`; the control loop writes them into its
audit record (``actuation``, one ``admin@<replica>`` entry each).

``applied`` is what the controller knows it set, not what it read back: a replica process
restarted without going not-ready (no EndpointSlice change; a static URL) keeps its stale
entry until the next change of the target. In Kubernetes a restarted container fails its
readiness probe first, so it is re-sent the knobs when it is ready again.

The admin API's client and error messages are the harness's (:mod:`rlctl.harness.admin`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rlctl.errors import ActuatorError, ConfigError
from rlctl.harness.admin import AdminClient, knobs_url
from rlctl.k8s_scale import api_message

log = logging.getLogger(__name__)

#: The label every EndpointSlice of a Service carries (set by the EndpointSlice controller).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# The harness's client words an HTTP error as "<METHOD> <url>: HTTP <code>: ..."; a 4xx is the
# request's fault (token, value), so sending it again cannot help.
_CLIENT_ERROR = re.compile(r": HTTP 4\d\d: ")


@dataclass(frozen=True)
class Endpoint:
    """One replica's admin endpoint.

    :param name: the replica's stable name in the audit (the pod's name, else ``host:port``).
    :param url: its ``/admin/knobs`` URL.
    :param ready: whether it should get knobs now (the EndpointSlice's ``ready`` condition).
    :param uid: the pod's uid, when known: a pod recreated under the same name is a new replica.
    """

    name: str
    url: str
    ready: bool = True
    uid: str = ""


EndpointSource = Callable[[], Sequence[Endpoint]]


def endpoint_name(url: str) -> str:
    """``host:port`` of ``url``: the audit's name of a replica known only by its URL."""
    parts = urlsplit(url)
    return parts.netloc or url


def static_endpoints(urls: Sequence[str]) -> EndpointSource:
    """A fixed list of admin URLs (roots or ``/admin/knobs`` URLs), each taken as ready."""
    endpoints = [Endpoint(endpoint_name(u), knobs_url(u)) for u in urls]
    return lambda: list(endpoints)


def parse_endpoint_list(value: str, *, where: str = "--knob-endpoints") -> list[str]:
    """URLs from ``URL,URL,...`` or from a file holding one URL per line (``#`` comments).

    Raises :class:`ConfigError` naming the bad entry and ``where`` it came from.
    """
    path = Path(value)
    if "://" not in value and path.is_file():
        source = f"{where} file {path}"
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        entries = [e for line in lines for e in line.split(",")]
    elif "://" not in value:
        raise ConfigError(
            f"{where} {value!r}: neither a URL list nor an existing file; pass http://HOST:PORT[,http://HOST:PORT...] "
            "or a file with one admin URL per line"
        )
    else:
        source, entries = where, value.split(",")
    urls = [e.strip() for e in entries if e.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ConfigError(
                f"{source}: {url!r} is not an admin URL; write http://HOST:PORT (the replica's --admin-addr), "
                "optionally with /admin/knobs"
            )
    if not urls:
        raise ConfigError(f"{source} names no URL; list at least one replica's admin URL")
    if len(set(urls)) != len(urls):
        dup = sorted({u for u in urls if urls.count(u) > 1})
        raise ConfigError(f"{source}: {dup} listed more than once; list each replica once")
    return urls


# ----------------------------------------------------------------------------- EndpointSlices


class EndpointSliceSource:
    """The ready and not-ready endpoints of a Service, from its EndpointSlices (``discovery.k8s.io/v1``).

    Called as an :data:`EndpointSource`. Without :meth:`start` every call lists the slices
    (``list``); after :meth:`start` a daemon thread lists once and then watches (``watch``),
    keeping the endpoints current, and a call returns them without an API request (the
    pattern of a client-go informer). A broken watch re-lists; while the API server is away
    the last endpoints stay in use.

    :param api_client: a ``kubernetes.client.ApiClient`` (:func:`rlctl.k8s_scale.kube_api_client`).
    :param namespace: the Service's namespace.
    :param service: the Service's name (for gosvc: the headless ``gosvc-admin``).
    :param port: the admin port's name in the slice (``admin``) or its number.
    :param scheme: ``http`` or ``https``.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        service: str,
        *,
        port: str | int = "admin",
        scheme: str = "http",
        request_timeout_s: float = 5.0,
        watch_timeout_s: int = 60,
    ) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.service = service
        self.port = port
        self.scheme = scheme
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self._api = client.DiscoveryV1Api(api_client)
        self._slices: dict[str, Any] = {}
        self._resource_version = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()
        self.watch_error: str | None = None

    @classmethod
    def from_spec(
        cls, spec: str, *, api_client: Any, port: str | int = "admin", where: str = "--knob-endpoint-slices"
    ) -> EndpointSliceSource:
        """From ``NAMESPACE/SERVICE`` (as the CLI takes it)."""
        namespace, sep, service = spec.partition("/")
        if not sep or not namespace or not service or "/" in service:
            raise ConfigError(f"{where} {spec!r}: expected NAMESPACE/SERVICE, e.g. rlctl/gosvc-admin")
        return cls(api_client, namespace, service, port=port)

    def __repr__(self) -> str:
        return f"EndpointSliceSource({self.namespace}/{self.service}, port={self.port!r})"

    @property
    def selector(self) -> str:
        return f"{SERVICE_NAME_LABEL}={self.service}"

    def __call__(self) -> list[Endpoint]:
        if self._thread is not None and self._synced.is_set():
            with self._lock:
                slices = list(self._slices.values())
        else:
            slices = self.list_slices()
        return self.endpoints(slices)

    def list_slices(self) -> list[Any]:
        """The Service's EndpointSlices now (one ``list``); remembers the resourceVersion to watch from."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            answer = self._api.list_namespaced_endpoint_slice(
                self.namespace, label_selector=self.selector, _request_timeout=self.request_timeout_s
            )
        except ApiException as exc:
            raise ActuatorError(self._explain("list", exc)) from None
        except HTTPError as exc:
            raise ActuatorError(
                f"{self}: cannot reach the Kubernetes API server ({exc}); check the kubeconfig"
            ) from None
        self._resource_version = str(getattr(answer.metadata, "resource_version", "") or "")
        return list(answer.items or [])

    def _explain(self, verb: str, exc: Any) -> str:
        if exc.status == 403:
            return (
                f"forbidden to {verb} endpointslices in namespace {self.namespace}: RBAC lacks verb {verb!r} on "
                f"resource 'endpointslices' in group 'discovery.k8s.io'; grant list and watch with a Role and "
                f"RoleBinding (deploy/k8s/base/rbac.yaml) (server said: {api_message(exc)})"
            )
        where = f"service {self.namespace}/{self.service}"
        return f"{verb} endpointslices of {where} failed: HTTP {exc.status}: {api_message(exc)}"

    def endpoints(self, slices: Sequence[Any]) -> list[Endpoint]:
        """Every endpoint of ``slices`` with the admin port, sorted by name; ``ready`` as the slice says."""
        out: dict[str, Endpoint] = {}
        for s in slices:
            number = self._port_of(s)
            if number is None:
                continue
            for ep in s.endpoints or []:
                if not ep.addresses:
                    continue
                address = ep.addresses[0]  # the API: every address of an endpoint is the same replica
                host = f"[{address}]" if ":" in address else address
                ref = ep.target_ref
                name = (ref.name if ref is not None and ref.name else None) or f"{host}:{number}"
                conditions = ep.conditions
                # The API: a nil ready condition reads as ready; terminating endpoints are not ready.
                ready = conditions is None or conditions.ready is None or bool(conditions.ready)
                url = f"{self.scheme}://{host}:{number}/admin/knobs"
                out[name] = Endpoint(name, url, ready, (ref.uid or "") if ref is not None else "")
        return [out[k] for k in sorted(out)]

    def _port_of(self, s: Any) -> int | None:
        for p in s.ports or []:
            if (isinstance(self.port, int) and p.port == self.port) or (p.name == self.port and p.port):
                return int(p.port)
        if isinstance(self.port, int):  # a number works even when the slice does not list it
            return self.port
        name = getattr(s.metadata, "name", "?")
        log.warning("%s: slice %s has no port named %r; its endpoints are skipped", self, name, self.port)
        return None

    # ------------------------------------------------------------------ list + watch

    def start(self, timeout_s: float = 10.0) -> EndpointSliceSource:
        """List, then keep the endpoints current by watching, in a daemon thread; waits for the first list."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"rlctl-slices-{self.service}")
            self._thread.start()
        self._synced.wait(timeout_s)
        return self

    def stop(self, wait_s: float = 0.5) -> None:
        """Stop watching. The thread ends when its watch request does (a daemon: it never holds up an exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
            self._thread = None
        self._synced.clear()

    def _run(self) -> None:
        from kubernetes import watch

        backoff = 0.5
        while not self._stop.is_set():
            try:
                slices = self.list_slices()
                with self._lock:
                    self._slices = {s.metadata.name: s for s in slices}
                self._synced.set()
                self.watch_error = None
                backoff = 0.5
                w = watch.Watch()
                for event in w.stream(
                    self._api.list_namespaced_endpoint_slice, self.namespace, label_selector=self.selector,
                    resource_version=self._resource_version, timeout_seconds=self.watch_timeout_s,
                    _request_timeout=self.watch_timeout_s + self.request_timeout_s,
                ):  # fmt: skip
                    if self._stop.is_set():
                        w.stop()
                        break
                    obj = event["object"]
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._slices.pop(obj.metadata.name, None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._slices[obj.metadata.name] = obj
            except Exception as exc:  # the watch outlives the API server's restarts; the last endpoints stay
                self.watch_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: list/watch failed (%s); retrying in %.1f s", self, self.watch_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


# ----------------------------------------------------------------------------- the fan-out


@dataclass(frozen=True)
class ReplicaResult:
    """What one send of the target did on one replica."""

    endpoint: str
    outcome: str
    """``applied``, ``missed`` (every attempt failed) or ``skipped`` (not ready)."""
    attempts: int = 0
    seconds: float = 0.0
    detail: str = ""
    reported: dict[str, int] | None = None
    """The replica's knobs after the change, as it answered (applied only)."""
    rejected: bool = False
    """Missed because the replica refused the request itself (a 4xx: token, value), not for want of an answer."""

    def text(self) -> str:
        """The audit's one line: ``ok: ...``, ``missed: ...`` or ``skipped: ...``."""
        if self.outcome == "applied":
            return f"ok: {self.detail} ({_tries(self.attempts)}, {self.seconds:.3f} s)"
        if self.outcome == "missed":
            return f"missed: {self.detail} ({_tries(self.attempts)}, {self.seconds:.3f} s)"
        return f"skipped: {self.detail}"


def _tries(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


@dataclass
class _Applied:
    url: str
    uid: str
    knobs: dict[str, int] = field(default_factory=dict)


class KnobFanout:
    """The target runtime knobs, sent to every ready replica and kept there.

    :param endpoints: the replicas now (:class:`EndpointSliceSource`, :func:`static_endpoints`).
    :param token: the admin bearer token.
    :param timeout_s: per request.
    :param attempts: tries per replica and send (at least 1), for a refused connection, a
        timeout or a 5xx.
    :param backoff_s: the wait before the second try; it doubles before each further one.
    :param budget_s: the whole send (all replicas, all tries) ends within about this long:
        no try starts after it and none runs past it (default: ``attempts * timeout_s``).
    :param max_workers: replicas sent to at once.
    :param max_skip: a replica that keeps missing is retried less often: after its n-th miss
        in a row, the next ``2**(n-1) - 1`` reconciles pass it by, at most ``max_skip`` (a dead
        replica still listed as ready must not cost every control step its budget).
    """

    def __init__(
        self,
        endpoints: EndpointSource,
        *,
        token: str,
        timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_s: float = 0.1,
        budget_s: float | None = None,
        max_workers: int = 32,
        max_skip: int = 15,
    ) -> None:
        if attempts < 1:
            raise ConfigError(f"knob fan-out: attempts={attempts} must be at least 1")
        self.source = endpoints
        self.token = token
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.budget_s = budget_s if budget_s is not None else attempts * timeout_s
        self.max_workers = max_workers
        self.max_skip = max_skip
        self.target: dict[str, int] = {}
        self.applied: dict[str, _Applied] = {}
        self.misses: dict[str, int] = {}
        """Misses in a row, per replica still ready."""
        self._skip: dict[str, int] = {}
        self.last_results: dict[str, ReplicaResult] = {}

    def endpoints(self) -> list[Endpoint]:
        """The replicas now; forgets what was applied on replicas gone or not ready (they may restart)."""
        try:
            eps = list(self.source())
        except ActuatorError:
            raise
        except Exception as exc:  # a source is user-supplied code; its failure is an actuation error
            raise ActuatorError(f"listing the replicas failed: {type(exc).__name__}: {exc}") from None
        ready = {e.name: e for e in eps if e.ready}
        for name in list(self.applied):
            ep = ready.get(name)
            if ep is None or (ep.url, ep.uid) != (self.applied[name].url, self.applied[name].uid):
                del self.applied[name]
        for name in [n for n in self.misses if n not in ready]:
            del self.misses[name]
            self._skip.pop(name, None)
        return eps

    def get(self, tries: int = 3) -> dict[str, int]:
        """The runtime knobs (contract names) of the first ready replica that answers (of the first ``tries``)."""
        eps = [e for e in self.endpoints() if e.ready][:tries]  # a few hung replicas must not stall the step
        if not eps:
            raise ActuatorError("no ready replica: the service has no admin endpoint to read the knobs from")
        errors = []
        for ep in eps:
            try:
                return AdminClient(ep.url, token=self.token, timeout_s=self.timeout_s).get_knobs()
            except ActuatorError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ActuatorError(errors[0])
        raise ActuatorError(f"no ready replica answered ({len(eps)} tried): " + "; ".join(errors))

    def put(self, knobs: Mapping[str, Any]) -> dict[str, ReplicaResult]:
        """Make ``knobs`` part of the target and send the target to every ready replica.

        Returns the result per replica (not-ready ones ``skipped``); raises
        :class:`ActuatorError` only when there is no replica list at all.
        """
        previous = dict(self.target)
        self.target.update({k: int(v) for k, v in knobs.items()})
        try:
            eps = self.endpoints()
        except ActuatorError:
            self.target = previous
            raise
        due = [e for e in eps if e.ready]
        results = self._send(eps, due)
        if due and all(results[e.name].rejected for e in due):
            # Every replica refused the request itself (a bad value, a bad token): not the target.
            self.target = previous
        return results

    def reconcile(self) -> dict[str, ReplicaResult]:
        """Send the target to each ready replica whose last-applied knobs differ; results of those only."""
        if not self.target:
            self.last_results = {}
            return {}
        eps = self.endpoints()
        due = [e for e in eps if e.ready and self._differs(e) and not self._backing_off(e.name)]
        return self._send([], due) if due else {}

    def in_sync(self) -> list[str]:
        """Names of the replicas known to hold the target."""
        return sorted(n for n, a in self.applied.items() if a.knobs == self.target)

    def _backing_off(self, name: str) -> bool:
        left = self._skip.get(name, 0)
        if left > 0:
            self._skip[name] = left - 1
        return left > 0

    def _differs(self, ep: Endpoint) -> bool:
        got = self.applied.get(ep.name)
        return got is None or got.knobs != self.target

    def _send(self, listed: Sequence[Endpoint], due: Sequence[Endpoint]) -> dict[str, ReplicaResult]:
        results: dict[str, ReplicaResult] = {
            e.name: ReplicaResult(e.name, "skipped", detail="not ready") for e in listed if not e.ready
        }
        target = dict(self.target)
        deadline = time.monotonic() + self.budget_s
        if due:
            workers = max(1, min(self.max_workers, len(due)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlctl-knobs") as pool:
                sent = list(pool.map(lambda e: self._send_one(e, target, deadline), due))
            for ep, result in zip(due, sent, strict=True):
                results[ep.name] = result
                if result.outcome == "applied":
                    self.applied[ep.name] = _Applied(ep.url, ep.uid, dict(target))
                    self.misses.pop(ep.name, None)
                    self._skip.pop(ep.name, None)
                else:
                    n = self.misses[ep.name] = self.misses.get(ep.name, 0) + 1
                    self._skip[ep.name] = min(2 ** (n - 1) - 1, self.max_skip)
                    log.warning("knobs %s missed replica %s (%d in a row): %s", target, ep.name, n, result.detail)
        self.last_results = results
        return results

    def _send_one(self, ep: Endpoint, target: dict[str, int], deadline: float) -> ReplicaResult:
        t0 = time.monotonic()
        detail = ""
        wait = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            left = deadline - time.monotonic()
            if left <= 0.01:
                return ReplicaResult(ep.name, "missed", attempt - 1, time.monotonic() - t0,
                                     detail or "no time left in the send's budget")  # fmt: skip
            client = AdminClient(ep.url, token=self.token, timeout_s=min(self.timeout_s, left))
            try:
                reported = client.put_knobs(target)
                done = ", ".join(f"{k}={v}" for k, v in target.items())
                return ReplicaResult(ep.name, "applied", attempt, time.monotonic() - t0, done, reported)
            except ActuatorError as exc:
                detail = str(exc)
                if _CLIENT_ERROR.search(detail):
                    return ReplicaResult(ep.name, "missed", attempt, time.monotonic() - t0, detail, rejected=True)
            if attempt < self.attempts:
                time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
                wait *= 2
        return ReplicaResult(ep.name, "missed", self.attempts, time.monotonic() - t0, detail)


def summarize(results: Mapping[str, ReplicaResult]) -> str:
    """``3 of 3 ready replica(s) applied`` or which ones missed (for the audit's ``admin`` entry)."""
    applied = sorted(n for n, r in results.items() if r.outcome == "applied")
    missed = sorted(n for n, r in results.items() if r.outcome == "missed")
    skipped = sorted(n for n, r in results.items() if r.outcome == "skipped")
    text = f"{len(applied)} of {len(applied) + len(missed)} ready replica(s) applied"
    if missed:
        text += f"; missed: {', '.join(missed)}"
    if skipped:
        text += f"; not ready, skipped: {', '.join(skipped)}"
    return text
