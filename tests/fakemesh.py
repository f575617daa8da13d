"""A small fake Chaos Mesh controller for :class:`fakek8s.FakeKubeAPI`: Schedules spawn, Workflows run.

It reconciles every ``tick_s`` in a thread, under the fake API server's lock, and follows what
Chaos Mesh's own controllers do (chaos-mesh/chaos-mesh, ``controllers/schedule/cron``,
``controllers/schedule/active``, ``pkg/workflow/controllers``):

- **Schedule** (``@every <Go duration>`` only): the first run is one period after
  ``creationTimestamp``, the next one period after ``status.time`` (the last schedule time).
  A run is an object of ``spec.type`` named ``<schedule>-<5 random characters>`` with the
  embedded spec, the label ``managed-by: <schedule>`` (its only label) and a controller owner
  reference to the Schedule. ``concurrencyPolicy: Forbid`` skips a run while the previous one
  has not finished (its ``spec.duration`` has not passed). ``status.active`` lists every
  object labelled ``managed-by: <schedule>``, sorted by name. A Schedule being deleted
  spawns nothing.
- **Workflow**: an entry node ``<entry template>-<random>``; every ``WorkflowNode`` carries
  ``chaos-mesh.org/workflow: <workflow>`` and ``chaos-mesh.org/controlled-by: <parent>`` and an
  owner reference to its parent. A ``Serial`` node starts its children one after the other; a
  chaos node creates ``<node>-<random>`` (same two labels, owned by the node), sets
  ``status.chaosResource`` and ``ChaosInjected``; at its ``spec.deadline`` a chaos or
  ``Suspend`` node gets ``DeadlineExceed=True`` (``NodeDeadlineExceed``) and its chaos is
  deleted. A Serial node whose children all finished is ``Accomplished``; past its own deadline
  it is ``DeadlineExceed`` and so are its running children (``ParentNodeDeadlineExceed``).
  The Workflow's ``status`` has ``entryNode``, ``startTime``, conditions ``Scheduled`` and
  ``Accomplished`` (True once the entry node finished) and ``endTime``.
- Spawned chaos reports ``AllInjected=True`` ``inject_delay_s`` (the API server's) after
  creation and, once its ``spec.duration`` has passed, ``AllInjected=False``,
  ``AllRecovered=True``.

Not modelled: cron expressions other than ``@every``, ``historyLimit`` garbage collection,
pausing, owner-reference garbage collection (the API server's; deleting a parent here leaves
its spawn in place, so a test sees whether rlctl removes it).
"""

from __future__ import annotations

import datetime
import re
import secrets
import string
import threading
import time
from typing import Any

from fakek8s import FakeKubeAPI, _Stored

GROUP_VERSION = "chaos-mesh.org/v1alpha1"
SPAWN_LABEL = "managed-by"
WORKFLOW_LABEL = "chaos-mesh.org/workflow"
CONTROLLED_BY = "chaos-mesh.org/controlled-by"
CHAOS_PLURALS = {"NetworkChaos": "networkchaos", "StressChaos": "stresschaos", "PodChaos": "podchaos",
                 "IOChaos": "iochaos", "TimeChaos": "timechaos"}  # fmt: skip
EMBED_KEY = {"NetworkChaos": "networkChaos", "StressChaos": "stressChaos", "PodChaos": "podChaos",
             "IOChaos": "ioChaos", "TimeChaos": "timeChaos"}  # fmt: skip
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")


def go_seconds(text: str) -> float:
    """A Go duration string (``1m30s``, ``250ms``) in seconds."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def _iso(t: float) -> str:
    """A monotonic instant as an RFC 3339 wall-clock time (milliseconds, like a metav1.MicroTime)."""
    wall = time.time() - (time.monotonic() - t)
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _owner(kind: str, stored: _Stored) -> dict[str, Any]:
    meta = stored.obj["metadata"]
    return {"apiVersion": GROUP_VERSION, "kind": kind, "name": meta["name"], "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def _set(conditions: list[dict[str, Any]], type_: str, status: str, reason: str = "") -> None:
    for c in conditions:
        if c["type"] == type_:
            c.update(status=status, reason=reason)
            return
    conditions.append({"type": type_, "status": status, "reason": reason})


def _is(conditions: list[dict[str, Any]], type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in conditions)


def _finished(node: _Stored) -> bool:
    conditions = node.obj.get("status", {}).get("conditions", [])
    return _is(conditions, "Accomplished") or _is(conditions, "DeadlineExceed")


class FakeChaosMesh:
    """The controller; use as a context manager around a started :class:`FakeKubeAPI`."""

    def __init__(self, api: FakeKubeAPI, *, tick_s: float = 0.01) -> None:
        self.api = api
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, float] = {}  # Schedule uid -> monotonic time of its last run (or creation)
        self._deadlines: dict[str, float] = {}  # WorkflowNode uid -> monotonic deadline
        self.spawned: list[tuple[str, str]] = []  # (kind, name) of every object it created, in order

    def __enter__(self) -> FakeChaosMesh:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-chaos-mesh")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self.api.lock:
                self.reconcile(time.monotonic())

    # ------------------------------------------------------------------ one pass

    def reconcile(self, now: float) -> None:
        for (ns, plural, _), stored in list(self.api.objects.items()):
            if stored.deleted is not None:
                continue
            if plural == "schedules":
                self._schedule(ns, stored, now)
            elif plural == "workflows":
                self._workflow(ns, stored, now)
        for (ns, plural, _), stored in list(self.api.objects.items()):
            if plural == "workflownodes" and stored.deleted is None:
                self._node(ns, stored, now)
        for (_, plural, _), stored in list(self.api.objects.items()):
            if plural in CHAOS_PLURALS.values() and stored.controlled:
                self._chaos_status(stored, now)

    def _spawn(self, ns: str, plural: str, obj: dict[str, Any]) -> _Stored:
        stored = self.api.spawn_object(ns, plural, obj)
        self.spawned.append((obj["kind"], obj["metadata"]["name"]))
        return stored

    def _children(self, ns: str, plural: str, label: str, value: str) -> list[_Stored]:
        return sorted(
            (v for (n, p, _), v in self.api.objects.items()
             if n == ns and p == plural and (v.obj["metadata"].get("labels") or {}).get(label) == value),
            key=lambda v: v.created,
        )  # fmt: skip

    # ------------------------------------------------------------------ Schedule

    def _schedule(self, ns: str, stored: _Stored, now: float) -> None:
        stored.controlled = True
        spec, meta = stored.obj["spec"], stored.obj["metadata"]
        status = stored.obj.setdefault("status", {})
        kind = spec["type"]
        plural = CHAOS_PLURALS[kind]
        every = go_seconds(spec["schedule"].removeprefix("@every ").strip())
        last = self._last.setdefault(meta["uid"], stored.created)
        runs = self._children(ns, plural, SPAWN_LABEL, meta["name"])
        due = now >= last + every
        if due and spec.get("concurrencyPolicy") == "Forbid":
            due = all(self._chaos_done(r, now) for r in runs if r.deleted is None)
        if due:
            body = {k: v for k, v in spec[EMBED_KEY[kind]].items()}
            obj = {"apiVersion": GROUP_VERSION, "kind": kind,
                   "metadata": {"name": f"{meta['name']}-{_suffix()}", "labels": {SPAWN_LABEL: meta["name"]},
                                "ownerReferences": [_owner("Schedule", stored)]},
                   "spec": body}  # fmt: skip
            runs.append(self._spawn(ns, plural, obj))
            self._last[meta["uid"]] = now
            status["time"] = _iso(now)
        active = sorted((r for r in runs if r.deleted is None), key=lambda r: r.obj["metadata"]["name"])
        status["active"] = [{"apiVersion": GROUP_VERSION, "kind": kind, "namespace": ns,
                             "name": r.obj["metadata"]["name"], "uid": r.obj["metadata"]["uid"],
                             "resourceVersion": r.obj["metadata"]["resourceVersion"]} for r in active]  # fmt: skip

    @staticmethod
    def _chaos_done(stored: _Stored, now: float) -> bool:
        duration = stored.obj.get("spec", {}).get("duration")
        return duration is not None and now >= stored.created + go_seconds(duration)

    def _chaos_status(self, stored: _Stored, now: float) -> None:
        if stored.deleted is not None:
            return
        delay = self.api.inject_delay_s
        injected = delay is not None and now - stored.created >= delay
        recovered = self._chaos_done(stored, now)
        stored.obj["status"] = {"conditions": [
            {"type": "Selected", "status": "True"},
            {"type": "AllInjected", "status": "True" if injected and not recovered else "False"},
            {"type": "AllRecovered", "status": "True" if recovered else "False"},
            {"type": "Paused", "status": "False"},
        ]}  # fmt: skip

    # ------------------------------------------------------------------ Workflow

    def _template(self, workflow: _Stored, name: str) -> dict[str, Any]:
        return next(t for t in workflow.obj["spec"]["templates"] if t["name"] == name)

    def _new_node(self, ns: str, workflow: _Stored, parent: _Stored, parent_kind: str, template: str,
                  now: float) -> _Stored:  # fmt: skip
        t = self._template(workflow, template)
        wf = workflow.obj["metadata"]["name"]
        spec: dict[str, Any] = {"templateName": template, "workflowName": wf, "type": t["templateType"],
                                "startTime": _iso(now)}  # fmt: skip
        if t.get("deadline"):
            spec["deadline"] = _iso(now + go_seconds(t["deadline"]))
        if t.get("children"):
            spec["children"] = list(t["children"])
        if t["templateType"] in EMBED_KEY:
            spec[EMBED_KEY[t["templateType"]]] = dict(t[EMBED_KEY[t["templateType"]]])
        obj = {"apiVersion": GROUP_VERSION, "kind": "WorkflowNode",
               "metadata": {"name": f"{template}-{_suffix()}",
                            "labels": {CONTROLLED_BY: parent.obj["metadata"]["name"], WORKFLOW_LABEL: wf},
                            "ownerReferences": [_owner(parent_kind, parent)]},
               "spec": spec, "status": {"conditions": []}}  # fmt: skip
        stored = self._spawn(ns, "workflownodes", obj)
        if t.get("deadline"):
            self._deadlines[stored.obj["metadata"]["uid"]] = now + go_seconds(t["deadline"])
        return stored

    def _workflow(self, ns: str, stored: _Stored, now: float) -> None:
        stored.controlled = True
        status = stored.obj.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        if "entryNode" not in status:
            entry = self._new_node(ns, stored, stored, "Workflow", stored.obj["spec"]["entry"], now)
            status.update(entryNode=entry.obj["metadata"]["name"], startTime=_iso(now))
            _set(conditions, "Scheduled", "True")
            _set(conditions, "Accomplished", "False")
            return
        node = self.api.objects.get((ns, "workflownodes", status["entryNode"]))
        if node is not None and _finished(node) and not _is(conditions, "Accomplished"):
            _set(conditions, "Accomplished", "True")
            status["endTime"] = _iso(now)

    def _node(self, ns: str, node: _Stored, now: float) -> None:
        spec, status = node.obj["spec"], node.obj.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        workflow = self.api.objects.get((ns, "workflows", spec["workflowName"]))
        if workflow is None or _finished(node):
            return
        kind = spec["type"]
        deadline = self._deadlines.get(node.obj["metadata"]["uid"])
        if kind == "Serial":
            children = self._children(ns, "workflownodes", CONTROLLED_BY, node.obj["metadata"]["name"])
            done = [c for c in children if _finished(c)]
            running = [c for c in children if not _finished(c)]
            if deadline is not None and now >= deadline:
                for c in running:
                    self._expire_node(ns, c, "ParentNodeDeadlineExceed")
                _set(conditions, "DeadlineExceed", "True", "NodeDeadlineExceed")
            elif not running and len(done) < len(spec.get("children", [])):
                self._new_node(ns, workflow, node, "WorkflowNode", spec["children"][len(done)], now)
            elif not running:
                _set(conditions, "Accomplished", "True", "NodeAccomplished")
            status["activeChildren"] = [{"name": c.obj["metadata"]["name"]} for c in running]
            status["finishedChildren"] = [{"name": c.obj["metadata"]["name"]} for c in done]
            return
        if kind in EMBED_KEY and "chaosResource" not in status:
            obj = {"apiVersion": GROUP_VERSION, "kind": kind,
                   "metadata": {"name": f"{node.obj['metadata']['name']}-{_suffix()}",
                                "labels": {CONTROLLED_BY: node.obj["metadata"]["name"],
                                           WORKFLOW_LABEL: spec["workflowName"]},
                                "ownerReferences": [_owner("WorkflowNode", node)]},
                   "spec": dict(spec[EMBED_KEY[kind]])}  # fmt: skip
            self._spawn(ns, CHAOS_PLURALS[kind], obj)
            status["chaosResource"] = {"apiGroup": "chaos-mesh.org", "kind": kind, "name": obj["metadata"]["name"]}
            _set(conditions, "ChaosInjected", "True", "ChaosCRCreated")
        if deadline is not None and now >= deadline:
            self._expire_node(ns, node, "NodeDeadlineExceed")

    def _expire_node(self, ns: str, node: _Stored, reason: str) -> None:
        status = node.obj.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        ref = status.get("chaosResource")
        if ref:
            chaos = self.api.objects.get((ns, CHAOS_PLURALS[ref["kind"]], ref["name"]))
            if chaos is not None and chaos.deleted is None:
                chaos.deleted = time.monotonic()
            _set(conditions, "ChaosInjected", "False", "ChaosCRDeleted")
        _set(conditions, "DeadlineExceed", "True", reason)
