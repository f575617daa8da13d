"""``--mesh-objects native``: run Schedules and Workflows as Chaos Mesh users do, and report them.

:func:`chaos.mesh.native_manifests` gives the objects: a Schedule per repeated fault, a
Workflow per sequence, plain objects for the other faults. :class:`NativeRun` drives them on
the scenario's clock through :class:`~chaos.backends.k8s.inject.ChaosMeshBackend`:

================  ========================================================================
object            what rlctl does
================  ========================================================================
plain chaos       as ``--mesh-objects windows``: create, wait for ``AllInjected``, hold, delete
Schedule          create it ``every_s`` before the first window; poll it (``status.time``,
                  ``status.active``) and its runs (``managed-by=<schedule>``); delete each run
                  once its window's length has passed since it appeared; after the planned
                  number of runs (or half a period past the last one) delete the Schedule
                  with ``propagationPolicy: Orphan``, so the last run keeps going
Workflow          create it at the sequence's start; poll ``status`` and its ``WorkflowNode``
                  objects and chaos (``chaos-mesh.org/workflow=<workflow>``) until the
                  Workflow is ``Accomplished`` (or its last window ends, when the scenario cuts
                  it short, or ``inject_timeout_s`` after its natural end); then remove it
================  ========================================================================

Each object is driven by its own thread, so one object's slow deletion (Chaos Mesh's finalizer
waits for recovery) does not delay another's polling. Times are seconds from the run start,
observed by polling every ``poll_interval_s``, or more often when windows are short: at least
:data:`POLLS_PER_WINDOW` times per window, so a run's ``AllInjected`` phase is not missed
between two polls (never more often than every :data:`MIN_POLL_S`). Each run of a
Schedule and each chaos step of a Workflow becomes an :class:`~chaos.backends.k8s.inject.Injection`
matched to the parent's windows in order; a window that got no run is reported with an error.
:attr:`NativeRun.objects` holds one :class:`MeshObject` per Schedule and Workflow: its runs and
nodes with their conditions and the last status Chaos Mesh wrote.

Whatever happens (an error, Ctrl-C), every parent still present is removed with
:meth:`~chaos.backends.k8s.inject.ChaosMeshBackend.remove_parent` (what it spawned is labelled
with the run's labels first, then the parent and its spawn are deleted), so ``rlctl chaos
cleanup --backend k8s --run-id ID`` finds whatever an interrupted run leaves.

Unlike a plain object, a Schedule does not expire: if rlctl is killed it keeps spawning runs
until ``rlctl chaos cleanup`` deletes it. That is why ``windows`` stays the default.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos import mesh
from chaos.backends.k8s.inject import ChaosMeshBackend, Injection
from chaos.schema import validate_manifest
from chaos.spec import Scenario
from rlctl.errors import ChaosError, ConfigError

log = logging.getLogger(__name__)

#: Values of ``--mesh-objects``.
MESH_OBJECTS = ("windows", "native")
#: The watch polls at least this many times per fault window (the shortest one) ...
POLLS_PER_WINDOW = 10
#: ... but never more often than this (seconds).
MIN_POLL_S = 0.05


def check_mesh_objects(value: str, where: str = "--mesh-objects") -> str:
    if value not in MESH_OBJECTS:
        raise ConfigError(
            f"{where} {value!r}: choose 'windows' (one plain chaos object per fault window, rlctl times them) or "
            "'native' (a Schedule per repeated fault, a Workflow per sequence, Chaos Mesh times them)"
        )
    return value


@dataclass
class MeshRun:
    """One chaos object a Schedule or Workflow spawned, as rlctl saw it (seconds from the run start)."""

    kind: str
    name: str
    node: str | None = None
    created: str | None = None
    seen_s: float | None = None
    injected_s: float | None = None
    recovered_s: float | None = None
    deleted_s: float | None = None
    gone_s: float | None = None


@dataclass
class MeshNode:
    """One ``WorkflowNode``: its template, type and conditions (``type -> status``) when last seen."""

    name: str
    template: str
    type: str
    conditions: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    chaos: str | None = None
    seen_s: float | None = None
    finished_s: float | None = None


@dataclass
class MeshObject:
    """A Schedule or Workflow rlctl ran: what it spawned, its nodes, its last status."""

    kind: str
    name: str
    namespace: str
    planned_runs: int
    planned_windows: list[tuple[float, float]]
    create_at_s: float
    created_s: float | None = None
    deleted_s: float | None = None
    gone_s: float | None = None
    runs: list[MeshRun] = field(default_factory=list)
    nodes: list[MeshNode] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["planned_windows"] = [list(w) for w in self.planned_windows]
        return out


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _true(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in _conditions(obj))


def plan_native(chaos: ChaosMeshBackend, scenario: Scenario, *, run_id: str) -> list[mesh.NativeObject]:
    """Every native object, checked: renderable, inside the allow-list, schema-valid."""
    chaos.plan(scenario, run_id=run_id)  # the per-fault namespace checks and messages of windows mode
    planned = mesh.native_manifests(scenario, run_id=run_id)
    for obj in planned:
        chaos.check_manifest(obj.manifest)
        if chaos.validate:
            validate_manifest(obj.manifest)
    return planned


# --------------------------------------------------------------------------- the items


class _Item:
    """One planned object on the run's clock: ``step`` when ``due_s`` has come, ``revert`` on the way out."""

    due_s: float = 0.0
    done: bool = False

    def step(self, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def revert(self, now: Callable[[], float], sleep: Callable[[float], None]) -> None:  # pragma: no cover
        raise NotImplementedError

    def injections(self) -> list[Injection]:  # pragma: no cover - overridden
        raise NotImplementedError


class _Plain(_Item):
    def __init__(self, run: NativeRun, planned: mesh.NativeObject) -> None:
        self.run, self.manifest = run, planned.manifest
        (self.window,) = planned.windows
        meta = self.manifest["metadata"]
        self.record = Injection(self.manifest["kind"], meta["name"], meta["namespace"], self.window.kind.value,
                                self.window.start_s, self.window.end_s)  # fmt: skip
        self.due_s = self.window.start_s
        self.live = False

    def step(self, now: float) -> None:
        chaos = self.run.chaos
        if not self.live:
            self.record.created_s = now
            chaos.create(self.manifest)
            self.live = True
            chaos.wait_injected(self.manifest, sleep=self.run.pause)
            self.record.injected_s = self.run.now()
            self.due_s = self.record.injected_s + (self.window.end_s - self.window.start_s)
            return
        self.revert(self.run.now, self.run.pause)

    def revert(self, now: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if self.live:
            self.record.deleted_s = now()
            self.run.chaos.delete(self.manifest, sleep=sleep)
            self.record.gone_s = now()
            self.live = False
        self.done = True

    def injections(self) -> list[Injection]:
        return [self.record]


class _Parent(_Item):
    """What Schedules and Workflows share: create, poll what they spawned, remove."""

    def __init__(self, run: NativeRun, planned: mesh.NativeObject) -> None:
        self.run, self.planned, self.manifest = run, planned, planned.manifest
        meta = self.manifest["metadata"]
        self.report = MeshObject(
            self.manifest["kind"], meta["name"], meta["namespace"], len(planned.windows),
            [(w.start_s, w.end_s) for w in planned.windows], planned.create_s,
        )  # fmt: skip
        self.due_s = planned.create_s
        self.live = False  # the parent exists (as far as rlctl knows)
        self.runs: dict[str, MeshRun] = {}

    @property
    def ident(self) -> str:
        return f"{self.report.kind} {self.report.namespace}/{self.report.name}"

    def create(self, now: float) -> None:
        self.report.created_s = now
        self.run.chaos.create(self.manifest)
        self.live = True

    def observe_runs(self, now: float) -> list[dict[str, Any]]:
        """List what the parent spawned; note first sightings, injection, recovery, disappearance."""
        spawn = self.run.chaos.spawned(self.manifest)
        present = set()
        for obj in spawn:
            if obj["kind"] == mesh.WORKFLOW_NODE:
                continue
            meta = obj["metadata"]
            present.add(meta["name"])
            run = self.runs.get(meta["name"])
            if run is None:
                node = (meta.get("labels") or {}).get(mesh.CONTROLLED_BY_LABEL)
                run = self.runs[meta["name"]] = MeshRun(obj["kind"], meta["name"], node, meta.get("creationTimestamp"),
                                                        seen_s=now)  # fmt: skip
                self.report.runs.append(run)
                log.info("%s spawned %s %s at %.1fs", self.ident, obj["kind"], meta["name"], now)
            if run.injected_s is None and _true(obj, "AllInjected"):
                run.injected_s = now
            if run.recovered_s is None and _true(obj, "AllRecovered"):
                run.recovered_s = now
            if run.deleted_s is None and meta.get("deletionTimestamp"):
                run.deleted_s = now
        for run in self.report.runs:
            if run.name not in present and run.gone_s is None:
                run.deleted_s = run.deleted_s if run.deleted_s is not None else now
                run.gone_s = now
        return spawn

    def delete_run(self, run: MeshRun, sleep: Callable[[float], None]) -> None:
        run.deleted_s = self.run.now()
        stub = {"kind": run.kind, "metadata": {"name": run.name, "namespace": self.report.namespace}}
        self.run.chaos.delete(stub, sleep=sleep)
        run.gone_s = self.run.now()

    def revert(self, now: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if self.live:
            started = now()
            self.report.deleted_s = started
            spawn = self.run.chaos.remove_parent(self.manifest, sleep=sleep)
            self.live = False
            self.report.gone_s = now()
            for obj in spawn:
                meta = obj["metadata"]
                if obj["kind"] == mesh.WORKFLOW_NODE:
                    continue
                run = self.runs.get(meta["name"])
                if run is None:  # spawned since the last poll: reported, never seen running
                    node = (meta.get("labels") or {}).get(mesh.CONTROLLED_BY_LABEL)
                    run = self.runs[meta["name"]] = MeshRun(obj["kind"], meta["name"], node,
                                                            meta.get("creationTimestamp"))  # fmt: skip
                    self.report.runs.append(run)
                if run.gone_s is None:
                    run.deleted_s, run.gone_s = started, self.report.gone_s
        for run in self.report.runs:
            if run.gone_s is None:
                self.delete_run(run, sleep)
        self.done = True

    def injections(self) -> list[Injection]:
        """One record per planned window, matched in order to the runs seen; a missing run is an error."""
        runs = sorted(self.report.runs, key=lambda r: (r.seen_s if r.seen_s is not None else float("inf"), r.name))
        out = []
        for i, window in enumerate(self.planned.windows):
            ns = self.report.namespace
            if i < len(runs):
                r = runs[i]
                rec = Injection(r.kind, r.name, ns, window.kind.value, window.start_s, window.end_s)
                rec.created_s, rec.injected_s, rec.deleted_s, rec.gone_s = r.seen_s, r.injected_s, r.deleted_s, r.gone_s
                rec.parent, rec.recovered_s = self.ident, r.recovered_s
            else:
                missing = f"{self.ident} spawned {len(runs)} of {len(self.planned.windows)} planned runs"
                rec = Injection(self.report.kind, self.report.name, ns, window.kind.value, window.start_s, window.end_s)
                rec.parent, rec.error = self.ident, missing
            out.append(rec)
        return out


class _Schedule(_Parent):
    def __init__(self, run: NativeRun, planned: mesh.NativeObject) -> None:
        super().__init__(run, planned)
        assert planned.every_s is not None
        self.every_s = planned.every_s
        self.stop_s = float("inf")  # set at creation: the runs count from then
        self.lengths = [w.end_s - w.start_s for w in planned.windows]

    def step(self, now: float) -> None:
        if self.report.created_s is None:
            self.create(now)
            self.stop_s = self.run.now() + (self.report.planned_runs + 0.5) * self.every_s
            self.due_s = now + self.run.poll_s
            return
        if self.live:
            obj = self.run.chaos.get("Schedule", self.report.namespace, self.report.name)
            if obj is None:
                raise ChaosError(f"{self.ident} disappeared while it ran: deleted by someone else?")
            self.report.status = dict(obj.get("status") or {})
        self.observe_runs(now)
        ordered = sorted(self.report.runs, key=lambda r: (r.seen_s or 0.0, r.name))
        for i, r in enumerate(ordered):
            length = self.lengths[i] if i < len(self.lengths) else 0.0  # a run beyond the plan goes at once
            if r.gone_s is None and r.seen_s is not None and self.run.now() >= r.seen_s + length:
                self.delete_run(r, self.run.pause)
        if self.live and (len(ordered) >= self.report.planned_runs or now >= self.stop_s):
            self.report.deleted_s = self.run.now()
            labels = self.manifest["metadata"]["labels"]
            self.run.chaos.adopt(self.run.chaos.spawned(self.manifest), labels)
            # Orphan: the API server's garbage collector would otherwise take the last run with it.
            self.run.chaos.delete(self.manifest, sleep=self.run.pause, propagation="Orphan")
            self.live = False
            self.report.gone_s = self.run.now()
            self.run.chaos.adopt(self.observe_runs(self.report.gone_s), labels)  # anything spawned meanwhile
            if len(self.report.runs) < self.report.planned_runs:
                self.report.error = (
                    f"{self.ident} spawned {len(self.report.runs)} of {self.report.planned_runs} runs by "
                    f"{self.stop_s:.1f}s (Chaos Mesh's cron rounds @every up to whole seconds; is the controller up?)"
                )
        if not self.live and all(r.gone_s is not None for r in self.report.runs):
            self.done = True
        self.due_s = self.run.now() + self.run.poll_s


class _Workflow(_Parent):
    def __init__(self, run: NativeRun, planned: mesh.NativeObject, grace_s: float) -> None:
        super().__init__(run, planned)
        last_end = planned.windows[-1].end_s
        self.truncated = last_end < planned.natural_end_s - 1e-9  # the scenario ends before the sequence
        # From its creation: when to remove it, at the latest.
        self.stop_after_s = (last_end if self.truncated else planned.natural_end_s + grace_s) - planned.create_s
        self.stop_s = float("inf")
        self.nodes: dict[str, MeshNode] = {}

    def step(self, now: float) -> None:
        if self.report.created_s is None:
            self.create(now)
            self.stop_s = self.run.now() + self.stop_after_s
            self.due_s = now + self.run.poll_s
            return
        obj = self.run.chaos.get("Workflow", self.report.namespace, self.report.name)
        if obj is None:
            raise ChaosError(f"{self.ident} disappeared while it ran: deleted by someone else?")
        self.report.status = dict(obj.get("status") or {})
        spawn = self.observe_runs(now)
        for node in (o for o in spawn if o["kind"] == mesh.WORKFLOW_NODE):
            self._observe_node(node, now)
        accomplished = _true(obj, "Accomplished")
        if accomplished or now >= self.stop_s:
            if not accomplished and not self.truncated:
                self.report.error = (
                    f"{self.ident} was not Accomplished by {now:.1f}s (its steps should have ended at "
                    f"{self.planned.natural_end_s:.1f}s); removed"
                )
            self.revert(self.run.now, self.run.pause)
            return
        self.due_s = self.run.now() + self.run.poll_s

    def _observe_node(self, obj: dict[str, Any], now: float) -> None:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        node = self.nodes.get(meta["name"])
        if node is None:
            node = self.nodes[meta["name"]] = MeshNode(meta["name"], spec.get("templateName", "?"),
                                                       spec.get("type", "?"), seen_s=now)  # fmt: skip
            self.report.nodes.append(node)
        node.conditions = {c["type"]: c["status"] for c in _conditions(obj)}
        node.reasons = {c["type"]: c.get("reason", "") for c in _conditions(obj) if c.get("reason")}
        ref = status.get("chaosResource")
        if ref:
            node.chaos = f"{ref.get('kind')}/{ref.get('name')}"
        finished = node.conditions.get("Accomplished") == "True" or node.conditions.get("DeadlineExceed") == "True"
        if finished and node.finished_s is None:
            node.finished_s = now


# --------------------------------------------------------------------------- the run


class NativeRun:
    """Drive a scenario's native objects on time; :attr:`objects` reports the Schedules and Workflows."""

    def __init__(
        self,
        chaos: ChaosMeshBackend,
        scenario: Scenario,
        *,
        run_id: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.chaos, self.scenario, self.run_id = chaos, scenario, run_id
        self.clock, self.sleep = clock, sleep
        self.items: list[_Item] = []
        self.poll_s = chaos.poll_interval_s
        self._t0 = 0.0
        self._halt = threading.Event()
        self._errors: list[BaseException] = []
        self._problems: list[str] = []

    def now(self) -> float:
        return self.clock() - self._t0

    @property
    def objects(self) -> list[MeshObject]:
        return [it.report for it in self.items if isinstance(it, _Parent)]

    def _poll_s(self, planned: list[mesh.NativeObject]) -> float:
        shortest = min((w.end_s - w.start_s for p in planned for w in p.windows), default=float("inf"))
        return min(self.chaos.poll_interval_s, max(MIN_POLL_S, shortest / POLLS_PER_WINDOW))

    def _build(self, planned: mesh.NativeObject) -> _Item:
        kind = planned.manifest["kind"]
        if kind == "Schedule":
            return _Schedule(self, planned)
        if kind == "Workflow":
            return _Workflow(self, planned, self.chaos.inject_timeout_s)
        return _Plain(self, planned)

    def pause(self, seconds: float) -> None:
        """An item thread's wait: raises :class:`_Halt` once the run is stopping."""
        if self._halt.wait(max(0.0, seconds)):
            raise _Halt()

    def run(self) -> list[Injection]:
        """Create, watch and remove every object; returns one record per fault window, in time order.

        The calling thread only waits (with ``sleep``, which may raise to stop the run); an
        error in any object's thread, or the caller's interruption, stops every thread, and each
        removes its own object on the way out.
        """
        planned = plan_native(self.chaos, self.scenario, run_id=self.run_id)
        self.poll_s = self._poll_s(planned)
        if self.poll_s < self.chaos.poll_interval_s:  # the chaos calls' own waits poll as often
            self.chaos = copy.copy(self.chaos)
            self.chaos.poll_interval_s = self.poll_s
        self.items = [self._build(p) for p in planned]
        if self.chaos.dry_run:
            for p in planned:
                meta = p.manifest["metadata"]
                log.info("dry run: would create %s %s/%s at %gs", p.manifest["kind"], meta["namespace"],
                         meta["name"], p.create_s)  # fmt: skip
            return []
        _ = self.chaos.custom_api  # the client's first use imports a lot: not on the scenario's clock
        self._t0 = self.clock()
        threads = [threading.Thread(target=self._drive, args=(it,), daemon=True, name=f"chaos-mesh-{i}")
                   for i, it in enumerate(self.items)]  # fmt: skip
        for t in threads:
            t.start()
        failure: BaseException | None = None
        try:
            while any(t.is_alive() for t in threads) and not self._errors:
                self.sleep(min(self.poll_s, 0.05))
            if self._errors:
                raise self._errors[0]
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._halt.set()
            for t in threads:
                t.join(timeout=self.chaos.delete_timeout_s * 3 + 30)
            self._report_revert(failure)
        records = [r for it in self.items for r in it.injections()]
        return sorted(records, key=lambda r: (r.planned_start_s, r.name))

    def _drive(self, item: _Item) -> None:
        try:
            while not item.done and not self._halt.is_set():
                wait = item.due_s - self.now()
                if wait > 0:
                    self.pause(wait)
                    continue
                item.step(self.now())
        except _Halt:
            pass
        except BaseException as exc:  # handed to the calling thread, which stops the others
            self._errors.append(exc)
            self._halt.set()
        finally:
            if not item.done:
                try:
                    item.revert(self.now, time.sleep)
                except ChaosError as exc:
                    self._problems.append(str(exc))

    def _report_revert(self, failure: BaseException | None) -> None:
        if not self._problems:
            return
        message = "could not remove every Chaos Mesh object: " + "; ".join(self._problems)
        if failure is None:
            raise ChaosError(message)
        log.error("%s", message)


class _Halt(Exception):
    """Raised in an object's thread when the run stops."""


# --------------------------------------------------------------------------- reporting


def summary_lines(objects: list[dict[str, Any]]) -> list[str]:
    """One line per Schedule or Workflow (as :meth:`MeshObject.to_dict` gives them), for consoles and notes."""
    out = []
    for o in objects:
        ident = f"{o['kind']} {o['namespace']}/{o['name']}"
        gone = f"deleted at {o['deleted_s']:.1f}s" if o.get("deleted_s") is not None else "not deleted"
        if o["kind"] == "Schedule":
            runs = ", ".join(_run_text(r) for r in o["runs"])
            last = (o.get("status") or {}).get("time")
            line = (f"{ident}: {len(o['runs'])} of {o['planned_runs']} runs spawned ({runs or 'none'}); "
                    f"status.time {last or '-'}; {gone}, runs deleted")  # fmt: skip
        else:
            conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
            nodes = "; ".join(
                f"{n['name']} {n['type']} "
                + ",".join(f"{k}={v}" for k, v in n["conditions"].items() if k in ("Accomplished", "DeadlineExceed"))
                for n in o["nodes"]
            )
            accomplished = conds.get("Accomplished", "-")
            line = (f"{ident}: Accomplished={accomplished}, {len(o['nodes'])} nodes ({nodes or 'none'}); "
                    f"{len(o['runs'])} chaos objects; {gone}")  # fmt: skip
        if o.get("error"):
            line += f"; ERROR: {o['error']}"
        out.append(line)
    return out


def _run_text(run: dict[str, Any]) -> str:
    injected = f", injected {run['injected_s']:.1f}s" if run.get("injected_s") is not None else ""
    seen = f"seen {run['seen_s']:.1f}s" if run.get("seen_s") is not None else "not seen"
    return f"{run['name']} ({seen}{injected})"
