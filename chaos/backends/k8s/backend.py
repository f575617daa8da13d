"""The k8s backend of ``rlctl chaos run``: Chaos Mesh injects, the live loop controls.

Fault injection is delegated to :class:`chaos.backends.k8s.inject.ChaosMeshBackend`, which creates each fault
window's chaos object on time, waits for ``AllInjected``, holds it and deletes it; it runs in
a thread next to the live loop of :mod:`chaos.backends.live`. The loop sends the scenario's load to the
service (``--url``, reachable from here: an ingress, a NodePort or ``kubectl port-forward``),
scrapes ``--metrics-url`` (repeatable: one per pod, or the service's) and scales the
Deployment (``--deployment [NAMESPACE/]NAME``) through its ``scale`` subresource. Runtime
knobs are recorded but not pushed to pods here (that is the online controller's actuator).

Stopping (end of run, an error, SIGINT/SIGTERM) makes the injector's next wait raise, so its
own ``finally`` deletes every chaos object still present; objects also carry
``spec.duration``, so Chaos Mesh recovers even if rlctl dies.

With ``mesh_objects="native"`` (``--mesh-objects native``) repeated faults run as Schedules and
sequences as Workflows (:mod:`chaos.backends.k8s.native`); the record's ``extra["chaos_mesh"]``
then lists each one with what it spawned, its nodes and its last status, and
``extra["chaos_mesh_summary"]`` and ``notes`` carry a one-line summary of each
(:func:`chaos.backends.k8s.native.summary_lines`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos.backends.k8s.inject import ChaosMeshBackend
from chaos.backends.k8s.native import NativeRun, check_mesh_objects, plan_native, summary_lines
from chaos.backends.live import LiveConfig, LiveRun, execute
from chaos.record import RunRecord, fault_label
from chaos.spec import Scenario
from policies.base import Controller
from rlctl.contract import Knobs, TelemetrySample
from rlctl.errors import ActuatorError, ChaosError, ConfigError
from rlctl.harness.journal import Journal, revert_journal
from rlctl.harness.process import find_gosvc
from rlctl.k8s_scale import DeploymentScaler, kube_api_client
from rlctl.telemetry.scrape import Scraper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class K8sConfig(LiveConfig):
    """How the k8s backend runs a scenario (the loop's settings are :class:`~chaos.backends.live.LiveConfig`'s)."""

    namespaces: tuple[str, ...] = ()
    """The allow-list: the only namespaces chaos objects are created in or select pods from."""
    kubeconfig: str | None = None
    context: str | None = None
    url: str | None = None
    """Base URL of the service, reachable from this host (``/work`` is appended)."""
    metrics_urls: tuple[str, ...] = ()
    """``/metrics`` URLs to scrape each interval (one per pod, or the service's)."""
    deployment: str | None = None
    """``[NAMESPACE/]NAME`` of the Deployment to scale (default namespace: the first allowed)."""
    dry_run: bool = False
    """Plan only: no chaos object is created, nothing is scaled."""
    poll_interval_s: float = 1.0
    mesh_objects: str = "windows"
    """``windows``: one plain chaos object per fault window; ``native``: Schedules and Workflows."""
    api_client: Any = None
    """A ``kubernetes.client.ApiClient`` (default: built from ``kubeconfig`` and ``context``)."""


class _Stop(BaseException):
    """Raised inside the injector's waits to make it revert and return."""


class K8sRunBackend:
    """Chaos Mesh faults and a live controller against a service in Kubernetes."""

    name = "k8s"

    def __init__(self, config: K8sConfig) -> None:
        check_mesh_objects(config.mesh_objects)
        self.config = config

    def mesh(self) -> Any:
        cfg = self.config
        return ChaosMeshBackend(
            cfg.namespaces,
            api_client=cfg.api_client,
            kubeconfig=cfg.kubeconfig,
            context=cfg.context,
            dry_run=cfg.dry_run,
            poll_interval_s=cfg.poll_interval_s,
        )

    def deployment(self) -> tuple[str, str] | None:
        dep = self.config.deployment
        if not dep:
            return None
        ns, _, name = dep.rpartition("/")
        return (ns or (self.config.namespaces[0] if self.config.namespaces else "default")), name

    def check(self, scenario: Scenario) -> None:
        self.mesh().plan(scenario, run_id="check")
        if self.config.mesh_objects == "native":  # the Schedules and Workflows too, before anything starts
            plan_native(self.mesh(), scenario, run_id="check")
        if not self.config.dry_run and not self.config.url:
            raise ConfigError(
                "--backend k8s needs --url: the service's base URL reachable from here (an ingress, a NodePort, "
                "or `kubectl port-forward svc/gosvc 8080`), to send the scenario's load and measure latency"
            )

    def plan(self, scenario: Scenario) -> list[str]:
        planned = self.mesh().plan(scenario, run_id="plan")
        native = plan_native(self.mesh(), scenario, run_id="plan") if self.config.mesh_objects == "native" else None
        dep = self.deployment()
        out = [
            f"send load {scenario.load.kind} x{self.config.load_scale:g} to {self.config.url or '(--url)'}/work; "
            f"scrape {', '.join(self.config.metrics_urls) or 'nothing'}",
            f"scale deployment {dep[0]}/{dep[1]}" if dep else "no --deployment: replicas are not actuated",
        ]
        if native is not None:
            return out + [_native_line(o) for o in native]
        for i, (w, m) in enumerate(planned):
            meta = m["metadata"]
            out.append(
                f"{w.start_s:g}s-{w.end_s:g}s {fault_label(w, i)}: create {m['kind']} "
                f"{meta['namespace']}/{meta['name']}, delete at the end"
            )
        return out

    def run(self, scenario: Scenario, controller: Controller, *, run_id: str) -> RunRecord:
        self.check(scenario)
        gosvc = find_gosvc(self.config.gosvc)
        journal = Journal.open(run_id, self.config.state_dir)  # the local load generator's process
        return execute(_K8sRun(self, scenario, controller, journal, gosvc, run_id))


class _K8sRun(LiveRun):
    backend = "k8s"
    cfg: K8sConfig

    def __init__(
        self, owner: K8sRunBackend, scenario: Scenario, controller: Controller, journal: Journal, gosvc: str, rid: str
    ) -> None:
        super().__init__(owner.config, scenario, controller, journal, gosvc)
        self.owner = owner
        self.run_id = rid
        self.mesh = owner.mesh()
        self.scaler: Any = None
        self.ready_replicas: float | None = None
        self.scrapers: list[Any] = []
        self._stop = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._result: list[Any] = []
        self._error: BaseException | None = None
        self._native: NativeRun | None = None

    def start_plant(self) -> str:
        dep = self.owner.deployment()
        if dep is not None and not self.cfg.dry_run:
            api = self.cfg.api_client or kube_api_client(self.cfg.kubeconfig, self.cfg.context)
            self.scaler = DeploymentScaler(api, dep[0], dep[1])
            self.scaler.set(self.knobs.replicas)  # every controller starts from the same replicas
        self.scrapers = [Scraper(u, timeout_s=1.0, handler="/work") for u in self.cfg.metrics_urls]
        for s in self.scrapers:
            try:
                s.prime()
            except Exception as exc:
                log.warning("cannot scrape %s yet: %s", s.url, exc)
        assert self.cfg.url
        return self.cfg.url.rstrip("/")

    def _sleep(self, seconds: float) -> None:
        # Raise once, to break the injector's schedule; its revert must then wait normally.
        if self._stopped:
            time.sleep(seconds)
        elif self._stop.wait(max(0.0, seconds)):
            self._stopped = True
            raise _Stop()

    def _inject(self) -> None:
        try:
            if self.cfg.mesh_objects == "native":
                self._native = NativeRun(self.mesh, self.scenario, run_id=self.run_id, sleep=self._sleep)
                self._result = self._native.run()
            else:
                self._result = self.mesh.run(self.scenario, run_id=self.run_id, sleep=self._sleep)
        except _Stop:
            pass
        except BaseException as exc:
            self._error = exc

    def tick(self, now: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._inject, daemon=True, name="chaos-mesh")
            self._thread.start()
        if self._error is not None:
            raise ChaosError(f"fault injection failed: {self._error}")

    def live_replicas(self) -> float:
        return self.ready_replicas if self.ready_replicas is not None else float(self.knobs.replicas)

    def scrape(self) -> list[TelemetrySample]:
        out = []
        for s in self.scrapers:
            try:
                out.append(s.scrape())
            except Exception as exc:
                log.debug("scrape of %s failed: %s", s.url, exc)
        if self.scaler is not None:
            try:
                self.ready_replicas = float(self.scaler.ready())
            except ActuatorError as exc:
                log.warning("%s", exc)
        return out

    def actuate(self, new: Knobs, changed: list[str], now: float) -> None:
        if "replicas" in changed and self.scaler is not None:
            try:
                self.scaler.set(new.replicas)
            except ActuatorError as exc:
                self.notes.append(f"t={now:.0f}s: scaling to {new.replicas} failed: {exc}")
        if any(f != "replicas" for f in changed):
            note = "runtime knobs are recorded only: the k8s backend actuates replicas"
            if note not in self.notes:
                self.notes.append(note)

    def teardown_steps(self) -> list[Callable[[], None]]:
        return [self._stop_faults]

    def _stop_faults(self) -> None:
        if self._thread is None:
            return
        if self.interrupted:
            self._stop.set()
        self._thread.join(timeout=self.mesh.delete_timeout_s + 30)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=self.mesh.delete_timeout_s + 30)
        if self._error is not None and not self.interrupted:
            raise ChaosError(f"fault injection failed: {self._error}")

    def finish(self) -> None:
        revert_journal(self.journal)
        self.journal.close()

    def record(self) -> RunRecord:
        labels = {(w.start_s, w.kind.value): fault_label(w, i) for i, w in enumerate(self.scenario.windows())}
        self.injections = [
            {
                "fault": labels.get((r.planned_start_s, r.fault), r.fault),
                "kind": r.fault,
                "planned_start_s": r.planned_start_s,
                "planned_end_s": r.planned_end_s,
                "injected_s": r.injected_s,
                "reverted_s": r.deleted_s,
                "targets": [f"{r.kind} {r.namespace}/{r.name}"],
                "detail": _detail(r),
                "error": r.error,
            }
            for r in self._result
        ]
        if self._native is not None:
            objects = [o.to_dict() for o in self._native.objects]
            summary = summary_lines(objects)
            self.extra["chaos_mesh"] = objects
            self.extra["chaos_mesh_summary"] = summary  # printed on the console by `rlctl chaos run`
            self.notes.extend(summary)
        return super().record()


def _detail(r: Any) -> str:
    """The injection's detail in the report: the kind, its parent (native) and when it was gone."""
    out = f"Chaos Mesh {r.kind}"
    if r.parent:
        out += f" spawned by {r.parent}"
    if r.recovered_s is not None:
        out += f", recovered at {r.recovered_s:.1f}s"
    if r.gone_s is not None:
        out += f", gone at {r.gone_s:.1f}s"
    return out


def _native_line(o: Any) -> str:
    """A dry run's line for one native object (:class:`chaos.mesh.NativeObject`)."""
    m, meta = o.manifest, o.manifest["metadata"]
    what = f"{m['kind']} {meta['namespace']}/{meta['name']}"
    first, last = o.windows[0], o.windows[-1]
    if m["kind"] == "Schedule":
        return (f"{o.create_s:g}s: create {what} ({m['spec']['schedule']}, first run at {o.create_s + o.every_s:g}s), "
                f"delete it after {len(o.windows)} runs; delete each run when its window ends")  # fmt: skip
    if m["kind"] == "Workflow":
        return (f"{o.create_s:g}s: create {what} ({len(o.windows)} steps, {first.start_s:g}s-{last.end_s:g}s), "
                "remove it and its nodes once Accomplished")  # fmt: skip
    return f"{first.start_s:g}s-{first.end_s:g}s: create {what}, delete at the end"
