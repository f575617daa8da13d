"""The Kubernetes backend: inject a scenario's faults as Chaos Mesh objects, on time.

For each :class:`~chaos.spec.FaultWindow` (repeats and sequence steps expanded) the backend

1. creates one plain chaos object (:func:`chaos.mesh.window_manifests`), its
   ``spec.duration`` the window's length, so Chaos Mesh recovers even if rlctl dies;
2. polls it until its status condition ``AllInjected`` is ``True`` (else, after
   ``inject_timeout_s``, deletes it and raises);
3. holds it for the window's length;
4. deletes it and polls until the API server answers 404 (Chaos Mesh's finalizer keeps the
   object until the fault is recovered).

Whatever happens (an error, Ctrl-C), every object still present is deleted on the way out.

Blast radius: the backend only touches the namespaces in its allow-list, never
``kube-system`` (or the other ``kube-*`` namespaces), and refuses a fault whose selector names
no namespace. ``dry_run=True`` logs what it would do and sends no request at all (a dry
cleanup lists, read-only, what it would delete).

API errors become :class:`~rlctl.errors.ChaosError` worded as the fix: 403 names the RBAC
verb and resource that is missing, 404 asks whether Chaos Mesh (its CRD) is installed, 409
points at ``rlctl chaos cleanup --run-id``. :meth:`ChaosMeshBackend.cleanup` deletes
everything labelled ``app.kubernetes.io/managed-by=rlctl`` (optionally of one run id).

Schedules and Workflows (``--mesh-objects native``, :mod:`chaos.backends.k8s.native`) spawn
objects that carry Chaos Mesh's labels, not rlctl's. :meth:`ChaosMeshBackend.remove_parent`
removes one: it first labels what the parent spawned with the parent's rlctl labels (the
journal: from then on ``rlctl chaos cleanup --run-id`` finds them even once the parent is
gone), deletes the parent, then lists its spawn again (anything created meanwhile) and deletes
it all. Cleanup goes parents first, so nothing spawns while it deletes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos import mesh
from chaos.schema import validate_manifest
from chaos.spec import FaultWindow, Scenario
from rlctl.errors import ChaosError
from rlctl.k8s_scale import MERGE_PATCH, api_message, kube_api_client

log = logging.getLogger(__name__)

#: Never injected into, whatever the allow-list says.
PROTECTED_NAMESPACES: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})

#: Cleanup deletes the kinds that spawn others first.
_CLEANUP_ORDER = (
    "Schedule", "Workflow", "WorkflowNode", "NetworkChaos", "StressChaos", "PodChaos", "IOChaos", "TimeChaos",
)  # fmt: skip
#: Kinds that spawn others: removed by :meth:`ChaosMeshBackend.remove_parent`.
PARENT_KINDS = ("Schedule", "Workflow")


@dataclass
class Injection:
    """What happened to one fault window's chaos object (times in seconds from the run start)."""

    kind: str
    name: str
    namespace: str
    fault: str
    planned_start_s: float
    planned_end_s: float
    created_s: float | None = None
    injected_s: float | None = None
    deleted_s: float | None = None
    gone_s: float | None = None
    parent: str | None = None
    """``Kind namespace/name`` of the Schedule or Workflow that spawned it (``--mesh-objects native``)."""
    recovered_s: float | None = None
    """When Chaos Mesh reported ``AllRecovered=True`` (a run that ended by its ``spec.duration``)."""
    error: str | None = None


def _owned_by(ref: dict[str, Any], kind: str, name: str) -> bool:
    return ref.get("kind") == kind and ref.get("name") == name


def _selector_namespaces(spec: dict[str, Any]) -> list[list[str] | None]:
    """The ``selector.namespaces`` of a chaos spec and of its ``target``, None where absent."""
    out: list[list[str] | None] = []
    for holder in (spec, spec.get("target") or {}):
        if "selector" in holder:
            out.append(holder["selector"].get("namespaces"))
    return out


class ChaosMeshBackend:
    """Chaos Mesh through the Kubernetes API, bounded by a namespace allow-list.

    :param namespaces: the allow-list: the only namespaces objects are created in or select pods from.
    :param api_client: a ``kubernetes.client.ApiClient``; built from ``kubeconfig``/``context``
        (see :func:`rlctl.k8s_scale.kube_api_client`) on first use when omitted.
    :param dry_run: log every create and delete instead of sending it; a run makes no request.
    :param poll_interval_s: how often to poll for ``AllInjected`` and for deletion.
    :param inject_timeout_s: how long a fault may take to report ``AllInjected=True``.
    :param delete_timeout_s: how long a deleted object may take to disappear (recovery).
    :param request_timeout_s: per-request timeout.
    :param validate: check every manifest against the Chaos Mesh CRD schema before creating it.
    """

    def __init__(
        self,
        namespaces: Iterable[str],
        *,
        api_client: Any | None = None,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        dry_run: bool = False,
        poll_interval_s: float = 1.0,
        inject_timeout_s: float = 120.0,
        delete_timeout_s: float = 120.0,
        request_timeout_s: float = 30.0,
        validate: bool = True,
    ) -> None:
        allowed = frozenset(namespaces)
        if not allowed:
            raise ChaosError("the k8s backend needs an allow-list of namespaces: pass --namespace NS (repeatable)")
        protected = sorted(allowed & PROTECTED_NAMESPACES)
        if protected:
            raise ChaosError(
                f"refusing to touch {', '.join(protected)}: system namespaces are never allowed, to inject "
                "faults into or to clean up; remove them from --namespace"
            )
        self.allowed_namespaces = allowed
        self.dry_run = dry_run
        self.poll_interval_s = poll_interval_s
        self.inject_timeout_s = inject_timeout_s
        self.delete_timeout_s = delete_timeout_s
        self.request_timeout_s = request_timeout_s
        self.validate = validate
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self._context = context
        self._custom: Any = None

    # ------------------------------------------------------------------ the client

    @property
    def custom_api(self) -> Any:
        """The ``CustomObjectsApi``, created on first use (so a dry run needs no kubeconfig)."""
        if self._custom is None:
            from kubernetes import client  # local: the kubernetes client is the serve extra, heavy

            if self._api_client is None:
                self._api_client = kube_api_client(self._kubeconfig, self._context)
            self._custom = client.CustomObjectsApi(self._api_client)
        return self._custom

    def _call(self, verb: str, manifest: dict[str, Any], fn: Any, *args: Any, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        meta = manifest["metadata"]
        try:
            return fn(*args, _request_timeout=self.request_timeout_s, **kw)
        except ApiException as exc:
            run_id = (meta.get("labels") or {}).get(mesh.RUN_ID_LABEL)
            raise ChaosError(
                self._explain(exc, verb, manifest["kind"], meta["namespace"], meta["name"], run_id)
            ) from None
        except HTTPError as exc:
            host = getattr(getattr(self._api_client, "configuration", None), "host", "?")
            raise ChaosError(
                f"cannot reach the Kubernetes API server at {host} ({exc}); check --kubeconfig and --context"
            ) from None

    def _explain(
        self, exc: Any, verb: str, kind: str, namespace: str, name: str | None, run_id: str | None = None
    ) -> str:
        plural = mesh.RESOURCE_PLURALS[kind]
        what = f"{kind} {name} in namespace {namespace}" if name else f"{kind} objects in namespace {namespace}"
        said = api_message(exc)
        if exc.status == 401:
            return f"the API server rejected the credentials (401) for {what}: refresh the kubeconfig or token"
        if exc.status == 403:
            # patch: --mesh-objects native labels what a Schedule or Workflow spawned before deleting it.
            verbs = "create,get,list,delete" + (f",{verb}" if verb not in ("create", "get", "list", "delete") else "")
            return (
                f"forbidden: RBAC does not allow verb {verb!r} on resource '{plural}' in API group "
                f"'{mesh.GROUP}' in namespace {namespace} ({what}); grant it, e.g. `kubectl create role rlctl-chaos "
                f"-n {namespace} --verb={verbs} --resource={plural}.{mesh.GROUP}` and a RoleBinding "
                f"(server said: {said})"
            )
        if exc.status == 404:
            if '"kind":"namespaces"' in (exc.body or "").replace(" ", ""):
                return f"namespace {namespace} does not exist ({what}); create it or fix selector.namespace"
            return (
                f"the API server has no resource {plural}.{mesh.GROUP}/{mesh.VERSION} (404 on {verb} {what}): is "
                f"Chaos Mesh installed? Check with `kubectl get crd {plural}.{mesh.GROUP}`; install it with "
                "`helm install chaos-mesh chaos-mesh/chaos-mesh -n chaos-mesh --create-namespace` "
                f"(server said: {said})"
            )
        if exc.status == 409:
            return (
                f"{what} already exists: a previous run with run id {run_id or '<run id>'} left it behind? Remove "
                f"it with `rlctl chaos cleanup --backend k8s --run-id {run_id or '<run id>'} --namespace {namespace}`"
                f" or use a new run id (server said: {said})"
            )
        if exc.status == 422:
            return f"the API server rejected {what} as invalid: {said}"
        return f"{verb} {what} failed: HTTP {exc.status} {exc.reason}: {said}"

    # ------------------------------------------------------------------ blast radius

    def check_namespace(self, namespace: str | None, where: str) -> str:
        """``namespace`` if the allow-list permits it, else a ChaosError with the fix."""
        allowed = ", ".join(sorted(self.allowed_namespaces))
        if not namespace:
            raise ChaosError(
                f"{where} has no namespace: the k8s backend only injects into namespaces named in the scenario; "
                f"add `selector: {{namespace: <ns>}}` (allowed: {allowed})"
            )
        if namespace in PROTECTED_NAMESPACES:
            raise ChaosError(f"{where} targets {namespace}: system namespaces are never allowed; pick another")
        if namespace not in self.allowed_namespaces:
            raise ChaosError(
                f"{where} targets namespace {namespace!r}, which is not in the allow-list ({allowed}); "
                f"pass --namespace {namespace} if that is intended"
            )
        return namespace

    def check_manifest(self, manifest: dict[str, Any]) -> None:
        """Refuse a manifest that lives in or selects pods from a namespace outside the allow-list."""
        where = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
        self.check_namespace(manifest.get("metadata", {}).get("namespace"), where)
        spec = manifest.get("spec", {})
        specs = [spec]
        if manifest.get("kind") == "Schedule":
            specs = [v for k, v in spec.items() if k in mesh.EMBED_KEY.values()]
        elif manifest.get("kind") == "Workflow":
            specs = [t[k] for t in spec.get("templates", []) for k in mesh.EMBED_KEY.values() if k in t]
        for one in specs:
            for namespaces in _selector_namespaces(one):
                if not namespaces:
                    self.check_namespace(None, f"{where} selector")
                for ns in namespaces or []:
                    self.check_namespace(ns, f"{where} selector")

    def plan(self, scenario: Scenario, *, run_id: str) -> list[tuple[FaultWindow, dict[str, Any]]]:
        """Every window's manifest, checked: renderable, schema-valid, inside the allow-list."""
        mesh.check_renderable(scenario)
        for i, fault in enumerate(scenario.faults):
            self.check_namespace(fault.selector.namespace, f"fault #{i} ({fault.kind.value}) selector")
        for seq in scenario.sequences:
            for k, step in enumerate(seq.steps):
                self.check_namespace(step.selector.namespace, f"sequence {seq.name!r} step #{k} selector")
        planned = mesh.window_manifests(scenario, run_id=run_id)
        for _, manifest in planned:
            self.check_manifest(manifest)
            if self.validate:
                validate_manifest(manifest)
        return planned

    # ------------------------------------------------------------------ one object

    def create(self, manifest: dict[str, Any]) -> None:
        kind, name, ns = manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        self.check_manifest(manifest)
        if self.dry_run:
            log.info("dry run: would create %s %s/%s", kind, ns, name)
            log.debug("dry run: manifest\n%s", mesh.to_yaml([manifest]))
            return
        log.info("creating %s %s/%s", kind, ns, name)
        self._call(
            "create",
            manifest,
            self.custom_api.create_namespaced_custom_object,
            mesh.GROUP,
            mesh.VERSION,
            ns,
            mesh.PLURALS[kind],
            manifest,
        )

    # ------------------------------------------------------------------ what Chaos Mesh spawned

    def list_kind(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` matching ``selector``; none if the CRD is missing (404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            listing = self.custom_api.list_namespaced_custom_object(
                mesh.GROUP,
                mesh.VERSION,
                namespace,
                mesh.RESOURCE_PLURALS[kind],
                label_selector=selector,
                _request_timeout=self.request_timeout_s,
            )
        except ApiException as exc:
            if exc.status == 404:
                log.debug("no %s CRD (or namespace %s): skipped", kind, namespace)
                return []
            raise ChaosError(self._explain(exc, "list", kind, namespace, None)) from None
        items = listing.get("items", [])
        for item in items:
            item.setdefault("kind", kind)
        return items  # type: ignore[no-any-return]

    def spawned(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        """What a Schedule or Workflow created, found by the labels Chaos Mesh puts on it.

        A Schedule's chaos (its ``spec.type``) labelled ``managed-by=<name>`` and owned by it; a
        Workflow's nodes and their chaos labelled ``chaos-mesh.org/workflow=<name>``.
        Nodes come first, then chaos, each in order of creation.
        """
        kind, meta = parent["kind"], parent["metadata"]
        name, ns = meta["name"], meta["namespace"]
        spec = parent.get("spec") or {}
        if kind == "Schedule":
            kinds = [spec["type"]] if spec.get("type") in mesh.EMBED_KEY else list(mesh.EMBED_KEY)
            selector = f"{mesh.SCHEDULE_SPAWN_LABEL}={name}"
            # Owned by it, or orphaned (an Orphan deletion of the Schedule strips the reference).
            found = [
                obj
                for k in kinds
                for obj in self.list_kind(k, ns, selector)
                if all(_owned_by(ref, "Schedule", name) for ref in obj["metadata"].get("ownerReferences") or [])
            ]
        elif kind == "Workflow":
            used = [t.get("templateType") for t in spec.get("templates") or []]
            kinds = [mesh.WORKFLOW_NODE, *(k for k in mesh.EMBED_KEY if k in used or not used)]
            found = [obj for k in kinds for obj in self.list_kind(k, ns, f"{mesh.WORKFLOW_LABEL}={name}")]
        else:
            return []
        order = {k: i for i, k in enumerate(_CLEANUP_ORDER)}
        return sorted(
            found,
            key=lambda o: (order.get(o["kind"], 99), o["metadata"].get("creationTimestamp") or "",
                           o["metadata"]["name"]),
        )  # fmt: skip

    def adopt(self, objects: list[dict[str, Any]], labels: dict[str, str]) -> None:
        """Add rlctl's ``labels`` to spawned objects (a merge patch), so cleanup by run id finds them."""
        if self.dry_run:
            return
        for obj in objects:
            have = obj["metadata"].get("labels") or {}
            if all(have.get(k) == v for k, v in labels.items()):
                continue
            self._patch_labels(obj, labels)

    def _patch_labels(self, obj: dict[str, Any], labels: dict[str, str]) -> None:
        from kubernetes.client.exceptions import ApiException

        kind, name, ns = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
        try:
            self.custom_api.patch_namespaced_custom_object(
                mesh.GROUP,
                mesh.VERSION,
                ns,
                mesh.RESOURCE_PLURALS[kind],
                name,
                {"metadata": {"labels": labels}},
                _content_type=MERGE_PATCH,
                _request_timeout=self.request_timeout_s,
            )
        except ApiException as exc:
            if exc.status != 404:  # gone already: nothing left to find
                raise ChaosError(self._explain(exc, "patch", kind, ns, name)) from None

    def remove_parent(
        self,
        parent: dict[str, Any],
        *,
        sleep: Callable[[float], None] = time.sleep,
        propagation: str | None = None,
    ) -> list[dict[str, Any]]:
        """Remove a Schedule or Workflow, then everything it spawned; returns the spawned objects found.

        Before the parent goes, its spawn is labelled with the parent's rlctl labels (see the
        module docstring): an interrupted removal leaves nothing ``cleanup`` cannot find.
        """
        labels = {k: v for k, v in (parent["metadata"].get("labels") or {}).items()
                  if k in (mesh.MANAGED_BY_LABEL, mesh.RUN_ID_LABEL, mesh.SCENARIO_LABEL)}  # fmt: skip
        before = self.spawned(parent)
        self.adopt(before, labels)
        self.delete(parent, sleep=sleep, propagation=propagation)
        after = self.spawned(parent)
        self.adopt(after, labels)
        seen: dict[str, dict[str, Any]] = {}
        for obj in [*before, *after]:
            seen.setdefault(self._ident(obj), obj)
        for obj in seen.values():
            self.delete(obj, sleep=sleep)
        return list(seen.values())

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if the API server answers 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom_api.get_namespaced_custom_object(  # type: ignore[no-any-return]
                mesh.GROUP,
                mesh.VERSION,
                namespace,
                mesh.RESOURCE_PLURALS[kind],
                name,
                _request_timeout=self.request_timeout_s,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ChaosError(self._explain(exc, "get", kind, namespace, name)) from None

    def wait_injected(self, manifest: dict[str, Any], *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Poll until ``status.conditions`` has ``AllInjected=True``; on timeout delete it and raise."""
        kind, name, ns = manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        if self.dry_run:
            log.info("dry run: would wait for %s %s/%s to report AllInjected", kind, ns, name)
            return
        deadline = time.monotonic() + self.inject_timeout_s
        conditions: list[Any] = []
        while True:
            obj = self.get(kind, ns, name)
            if obj is None:
                raise ChaosError(f"{kind} {name} in namespace {ns} disappeared before it was injected")
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "AllInjected" and c.get("status") == "True" for c in conditions):
                return
            if time.monotonic() >= deadline:
                break
            sleep(self.poll_interval_s)
        try:
            self.delete(manifest, sleep=sleep)
            fate = "it was deleted"
        except ChaosError as exc:
            fate = f"deleting it failed too: {exc}"
        state = ", ".join(f"{c.get('type')}={c.get('status')}" for c in conditions) or "no conditions"
        raise ChaosError(
            f"{kind} {name} in namespace {ns} did not report AllInjected=True within {self.inject_timeout_s:g}s "
            f"(status: {state}); {fate}. Check that the selector matches running pods and the Chaos Mesh "
            "controller's logs (kubectl -n chaos-mesh logs deploy/chaos-controller-manager)"
        )

    def delete(
        self,
        manifest: dict[str, Any],
        *,
        sleep: Callable[[float], None] = time.sleep,
        propagation: str | None = None,
    ) -> None:
        """Delete the object and poll until it is gone (404); a missing object is fine.

        ``propagation`` is the ``propagationPolicy`` (``Orphan`` keeps what the object owns).
        """
        from kubernetes.client.exceptions import ApiException

        kind, name, ns = manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        if self.dry_run:
            log.info("dry run: would delete %s %s/%s", kind, ns, name)
            return
        log.info("deleting %s %s/%s", kind, ns, name)
        extra = {"propagation_policy": propagation} if propagation else {}
        try:
            self.custom_api.delete_namespaced_custom_object(
                mesh.GROUP,
                mesh.VERSION,
                ns,
                mesh.RESOURCE_PLURALS[kind],
                name,
                _request_timeout=self.request_timeout_s,
                **extra,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise ChaosError(self._explain(exc, "delete", kind, ns, name)) from None
        deadline = time.monotonic() + self.delete_timeout_s
        while self.get(kind, ns, name) is not None:
            if time.monotonic() >= deadline:
                raise ChaosError(
                    f"{kind} {name} in namespace {ns} is still there {self.delete_timeout_s:g}s after deletion: its "
                    "finalizer waits for Chaos Mesh to recover the fault; check the chaos-daemon on the pod's node, "
                    f"or remove the finalizer by hand (kubectl -n {ns} patch {mesh.RESOURCE_PLURALS[kind]} {name} "
                    "--type=merge "
                    '-p \'{"metadata":{"finalizers":[]}}\')'
                )
            sleep(self.poll_interval_s)

    # ------------------------------------------------------------------ a scenario

    def run(
        self,
        scenario: Scenario,
        *,
        run_id: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[Injection]:
        """Inject every fault window of ``scenario`` on its schedule; returns what happened.

        Windows may overlap: the loop handles the earliest due event next (a removal before a
        start at the same time). Holds are measured from ``AllInjected``, so a slow injection
        delays its own removal, not the other faults. In a dry run nothing waits.
        """
        planned = self.plan(scenario, run_id=run_id)
        pending = [(w, m, self._record(w, m)) for w, m in planned]
        active: list[tuple[float, dict[str, Any], Injection]] = []
        done: list[Injection] = []
        t0 = clock()
        wait = (lambda _s: None) if self.dry_run else sleep
        failure: BaseException | None = None
        try:
            while pending or active:
                next_start = t0 + pending[0][0].start_s if pending else float("inf")
                active.sort(key=lambda a: a[0])
                next_end = active[0][0] if active else float("inf")
                if next_end <= next_start:
                    end, manifest, record = active[0]
                    wait(max(0.0, end - clock()))
                    # Popped only once deleted: an interrupted hold still reverts it on the way out.
                    self._revert(manifest, record, t0, clock, sleep)
                    active.pop(0)
                    done.append(record)
                else:
                    window, manifest, record = pending.pop(0)
                    wait(max(0.0, next_start - clock()))
                    record.created_s = clock() - t0
                    self.create(manifest)
                    # Registered before waiting, so a failed wait still deletes it on the way out.
                    active.append((float("inf"), manifest, record))
                    self.wait_injected(manifest, sleep=sleep)
                    record.injected_s = clock() - t0
                    active[-1] = (clock() + (window.end_s - window.start_s), manifest, record)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._revert_all(active, done, t0, clock, sleep, failure)
        return sorted(done, key=lambda r: (r.planned_start_s, r.name))

    @staticmethod
    def _record(window: FaultWindow, manifest: dict[str, Any]) -> Injection:
        meta = manifest["metadata"]
        return Injection(
            manifest["kind"], meta["name"], meta["namespace"], window.kind.value, window.start_s, window.end_s
        )

    def _revert(
        self,
        manifest: dict[str, Any],
        record: Injection,
        t0: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        record.deleted_s = clock() - t0
        self.delete(manifest, sleep=sleep)
        record.gone_s = clock() - t0

    def _revert_all(
        self,
        active: list[tuple[float, dict[str, Any], Injection]],
        done: list[Injection],
        t0: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        failure: BaseException | None,
    ) -> None:
        problems = []
        for _, manifest, record in active:
            try:
                self._revert(manifest, record, t0, clock, sleep)
            except ChaosError as exc:
                problems.append(str(exc))
            done.append(record)
        active.clear()
        if not problems:
            return
        message = "could not revert every fault: " + "; ".join(problems)
        if failure is None:
            raise ChaosError(message)
        log.error("%s", message)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self, run_id: str | None = None, *, sleep: Callable[[float], None] = time.sleep) -> list[str]:
        """Delete every object labelled managed-by rlctl (and ``run_id``) in the allow-listed namespaces.

        Returns ``kind/namespace/name`` of each object found. A kind whose CRD is not
        installed is skipped. In a dry run the objects are listed (read-only) but not deleted.
        """
        selector = mesh.MANAGED_SELECTOR + (f",{mesh.RUN_ID_LABEL}={mesh.check_run_id(run_id)}" if run_id else "")
        found = self._list_managed(selector)
        # In _CLEANUP_ORDER: Schedules and Workflows go first, or they would spawn new chaos meanwhile;
        # each takes what it spawned with it (labelled by an earlier, interrupted cleanup or not).
        removed: list[str] = []
        for manifest in found:
            if self._ident(manifest) in removed:
                continue
            if manifest["kind"] in PARENT_KINDS:
                spawn = self.remove_parent(manifest, sleep=sleep)
                removed += [self._ident(manifest), *(self._ident(o) for o in spawn if self._ident(o) not in removed)]
            else:
                self.delete(manifest, sleep=sleep)
                removed.append(self._ident(manifest))
        return removed

    def _list_managed(self, selector: str) -> list[dict[str, Any]]:
        return [
            item
            for ns in sorted(self.allowed_namespaces)
            for kind in _CLEANUP_ORDER
            for item in self.list_kind(kind, ns, selector)
        ]

    @staticmethod
    def _ident(manifest: dict[str, Any]) -> str:
        meta = manifest["metadata"]
        return f"{manifest['kind']}/{meta['namespace']}/{meta['name']}"
