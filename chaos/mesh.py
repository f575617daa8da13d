"""Render scenarios as Chaos Mesh custom resources (``chaos-mesh.org/v1alpha1``). Pure, no I/O.

========================  ==============================================================
scenario element          Chaos Mesh object
========================  ==============================================================
a fault                   its kind (NetworkChaos, StressChaos, PodChaos, IOChaos, TimeChaos)
a fault with ``repeat``   a ``Schedule`` (``@every <every_s>``, ``concurrencyPolicy: Forbid``,
                          ``historyLimit: count``) with the chaos under its type key
a ``sequences`` entry     a ``Workflow``: a ``Serial`` entry template, one template per step
                          (``templateType`` = kind, ``deadline`` = duration) and ``Suspend``
                          templates for the gaps
a simulator-only fault    refused (:class:`~rlctl.errors.ChaosError`)
========================  ==============================================================

Every object carries the labels ``app.kubernetes.io/managed-by: rlctl`` and
``rlctl.io/run-id: <run id>`` (so ``rlctl chaos cleanup`` finds it) and is named
deterministically ``<scenario>-<f|s><index>-<kind>-<run id>``, a DNS-1123 label of at most 63
characters (57 for a Schedule and 51 for a Workflow, which append a suffix to what they spawn).

What Chaos Mesh cannot express is kept as annotations: a Schedule starts at creation and
repeats until deleted, so its start offset and count are ``rlctl.io/start-offset`` and
``rlctl.io/repeat-count``.

The k8s backend runs a scenario in one of two ways (``rlctl chaos run --mesh-objects``):

- ``windows`` (the default, :func:`window_manifests`): one plain object per
  :class:`~chaos.spec.FaultWindow`, created and deleted on time by rlctl;
- ``native`` (:func:`native_manifests`): a Schedule per repeated fault and a Workflow per
  sequence, as users run Chaos Mesh, plain objects for the other faults.
  :mod:`chaos.backends.k8s.native` creates a Schedule ``every_s`` before the first run
  (Chaos Mesh's first run comes one period after creation) and deletes it after the last,
  creates a Workflow at the sequence's start, and reports what they spawned.

What Chaos Mesh spawns does not carry rlctl's labels: a Schedule's chaos objects carry
``managed-by: <schedule>`` (:data:`SCHEDULE_SPAWN_LABEL`) and an owner reference to it; a
Workflow's ``WorkflowNode`` objects and their chaos carry ``chaos-mesh.org/workflow: <workflow>``
(:data:`WORKFLOW_LABEL`) and ``chaos-mesh.org/controlled-by: <parent>``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chaos.spec import CHAOS_MESH_KIND, FaultSequence, FaultSpec, FaultWindow, Scenario, Selector
from rlctl.errors import ChaosError, ConfigError

API_VERSION = "chaos-mesh.org/v1alpha1"
GROUP = "chaos-mesh.org"
VERSION = "v1alpha1"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "rlctl"
RUN_ID_LABEL = "rlctl.io/run-id"
SCENARIO_LABEL = "rlctl.io/scenario"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

#: Kind -> resource plural, for the API paths.
PLURALS: dict[str, str] = {
    "NetworkChaos": "networkchaos",
    "StressChaos": "stresschaos",
    "PodChaos": "podchaos",
    "IOChaos": "iochaos",
    "TimeChaos": "timechaos",
    "Schedule": "schedules",
    "Workflow": "workflows",
}
#: Kinds Chaos Mesh creates itself (no CRD schema is vendored for them: rlctl never renders one).
WORKFLOW_NODE = "WorkflowNode"
#: Kind -> resource plural of every kind the k8s backend reads or deletes, spawned ones included.
RESOURCE_PLURALS: dict[str, str] = {**PLURALS, WORKFLOW_NODE: "workflownodes"}
#: Label Chaos Mesh's Schedule controller puts on each object it spawns: the Schedule's name.
SCHEDULE_SPAWN_LABEL = "managed-by"
#: Label Chaos Mesh puts on a Workflow's nodes and on the chaos they create: the Workflow's name.
WORKFLOW_LABEL = "chaos-mesh.org/workflow"
#: Label naming the direct parent (a Workflow or WorkflowNode) of a node or of a node's chaos.
CONTROLLED_BY_LABEL = "chaos-mesh.org/controlled-by"
#: Kind -> the key its spec sits under inside a Schedule or a Workflow template.
EMBED_KEY: dict[str, str] = {
    "NetworkChaos": "networkChaos",
    "StressChaos": "stressChaos",
    "PodChaos": "podChaos",
    "IOChaos": "ioChaos",
    "TimeChaos": "timeChaos",
}
#: Longest name per kind: a Schedule appends 6 characters to each chaos it creates, a
#: Workflow appends 6 to its nodes and their chaos.
NAME_LIMIT: dict[str, int] = {"Schedule": 57, "Workflow": 51}
_DEFAULT_NAME_LIMIT = 63
_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$")
_VALUE_MODES = ("fixed", "fixed-percent", "random-max-percent")


# --------------------------------------------------------------------------- formatting


def _num(x: float) -> str:
    """A number without exponent or trailing zeros: 50.0 -> '50', 0.25 -> '0.25'."""
    if float(x).is_integer():
        return str(int(x))
    return format(Decimal(repr(float(x))), "f")


def _frac(n: int, unit: int) -> str:
    whole, rest = divmod(n, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + str(rest).rjust(digits, "0").rstrip("0")


def go_duration(seconds: float) -> str:
    """Seconds as Go's ``time.Duration.String()``: 30 -> '30s', 90 -> '1m30s', 0.1 -> '100ms'."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("us", 10**3), ("ns", 1)):
            if ns >= size:
                return f"{sign}{_frac(ns, size)}{unit}"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{_frac(rest, 10**9)}s"


def slug(text: str) -> str:
    """``text`` as a DNS-1123 fragment: lowercase, a-z0-9 and '-', no leading or trailing '-'."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "x"


# --------------------------------------------------------------------------- names, labels


def new_run_id() -> str:
    """A fresh run id: UTC time plus 4 random hex digits, e.g. ``20250101t120000-3f2a``."""
    return time.strftime("%Y%m%dt%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can go into names and labels; otherwise a ConfigError with the rule."""
    if not _RUN_ID.match(run_id):
        raise ConfigError(
            f"run id {run_id!r} is not usable in Kubernetes names: use 1-24 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit (e.g. 'exp-42')"
        )
    return run_id


def object_name(scenario: str, tag: str, run_id: str, *, limit: int = _DEFAULT_NAME_LIMIT) -> str:
    """``<scenario>-<tag>-<run id>`` as a DNS-1123 label of at most ``limit`` characters.

    Too long a name keeps its run id and gets a hash of the whole in place of the tail of
    the scenario and tag, so it stays unique and deterministic.
    """
    base, suffix = f"{slug(scenario)}-{slug(tag)}", f"-{check_run_id(run_id)}"
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha1(f"{base}{suffix}".encode()).hexdigest()[:6]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def labels(run_id: str, scenario: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, RUN_ID_LABEL: run_id, SCENARIO_LABEL: slug(scenario)[:63].rstrip("-")}


def kind_of(fault: FaultSpec, where: str) -> str:
    """The Chaos Mesh kind of ``fault``; a ChaosError for simulator-only faults."""
    mapping = CHAOS_MESH_KIND[fault.kind]
    if mapping is None:
        raise ChaosError(
            f"{where} is simulator-only: {fault.kind.value!r} has no Chaos Mesh equivalent and runs only on "
            "`--backend sim`; remove it from the scenario to run on Kubernetes"
        )
    return mapping[0]


# --------------------------------------------------------------------------- specs


def _namespace(selector: Selector, default: str | None, where: str) -> str:
    namespace = selector.namespace or default
    if not namespace:
        raise ChaosError(
            f"{where} has no selector.namespace: set `selector: {{namespace: <ns>}}` in the scenario "
            "or pass --namespace"
        )
    return namespace


def _selector(selector: Selector, namespace: str, where: str) -> dict[str, Any]:
    """``mode``, ``value`` and ``selector`` of a Chaos Mesh PodSelector."""
    out: dict[str, Any] = {"mode": selector.mode}
    if selector.mode in _VALUE_MODES:
        if selector.value is None:
            raise ChaosError(f"{where}: selector mode {selector.mode!r} needs `value` (a count or a percentage)")
        out["value"] = selector.value
    elif selector.value is not None:
        out["value"] = selector.value
    pods: dict[str, Any] = {"namespaces": [namespace]}
    if selector.labels:
        pods["labelSelectors"] = dict(selector.labels)
    out["selector"] = pods
    return out


def _target(fault: FaultSpec, namespace: str, where: str) -> dict[str, Any] | None:
    if fault.target is None:
        return None
    target = _selector(fault.target, fault.target.namespace or namespace, f"{where} target")
    fraction = fault.params.get("fraction")
    if fraction is not None and fraction < 1:
        # The simulator's 'fraction of requests cut off' is, on a cluster, the share of peers cut off.
        target["mode"], target["value"] = "fixed-percent", _num(round(fraction * 100, 2))
    return target


def _action_spec(fault: FaultSpec, where: str) -> dict[str, Any]:
    """The kind-specific part of the chaos spec."""
    kind = fault.kind.value
    p = fault.param
    if kind == "network-delay":
        return {
            "action": "delay",
            "delay": {
                "latency": f"{_num(p('latency_ms'))}ms",
                "jitter": f"{_num(p('jitter_ms'))}ms",
                "correlation": _num(p("correlation")),
            },
        }
    if kind == "network-loss":
        return {"action": "loss", "loss": {"loss": _num(p("loss_percent")), "correlation": _num(p("correlation"))}}
    if kind == "network-partition":
        if fault.target is None:
            raise ChaosError(
                f"{where}: a network-partition on Kubernetes needs `target`, the pods to cut the selected pods "
                "off from (e.g. target: {labels: {app: loadgen}, mode: all}); Chaos Mesh misbehaves without one"
            )
        return {"action": "partition", "direction": p("direction")}
    if kind == "network-bandwidth":
        rate = p("rate_mbps")
        rate_str = f"{int(rate)}mbit" if float(rate).is_integer() else f"{round(rate * 1000)}kbit"
        return {
            "action": "bandwidth",
            "bandwidth": {"rate": rate_str, "limit": int(p("limit_bytes")), "buffer": int(p("buffer_bytes"))},
        }
    if kind == "cpu-stress":
        return {"stressors": {"cpu": {"workers": int(p("workers")), "load": round(p("load_percent"))}}}
    if kind == "memory-stress":
        return {"stressors": {"memory": {"workers": int(p("workers")), "size": f"{_num(p('size_mib'))}MiB"}}}
    if kind == "pod-kill":
        return {"action": "pod-kill", "gracePeriod": int(p("grace_period_s"))}
    if kind == "pod-failure":
        return {"action": "pod-failure"}
    if kind == "container-kill":
        return {"action": "container-kill", "containerNames": [str(p("container"))]}
    if kind == "io-latency":
        return {
            "action": "latency",
            "delay": f"{_num(p('delay_ms'))}ms",
            "percent": round(p("percent")),
            "path": str(p("path")),
            "volumePath": str(p("volume_path")),
        }
    if kind == "time-skew":
        return {"timeOffset": go_duration(p("offset_ms") / 1000.0)}
    raise ChaosError(f"{where}: no Chaos Mesh rendering for fault kind {kind!r}")  # pragma: no cover


def chaos_spec(
    fault: FaultSpec, *, namespace: str | None, where: str, duration_s: float | None
) -> tuple[str, str, dict[str, Any]]:
    """``(kind, namespace, spec)`` of ``fault``'s chaos; ``duration`` set when ``duration_s`` is given."""
    kind = kind_of(fault, where)
    ns = _namespace(fault.selector, namespace, where)
    spec = _action_spec(fault, where)
    spec.update(_selector(fault.selector, ns, where))
    target = _target(fault, ns, where)
    if target is not None:
        spec["target"] = target
    if duration_s is not None:
        spec["duration"] = go_duration(duration_s)
    return kind, ns, spec


def _meta(name: str, namespace: str, run_id: str, scenario: str, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(run_id, scenario)}
    if annotations:
        meta["annotations"] = {f"rlctl.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return meta


def _tag(fault: FaultSpec, prefix: str) -> str:
    return f"{prefix}-{slug(fault.name)}" if fault.name else f"{prefix}-{fault.kind.value}"


# --------------------------------------------------------------------------- manifests


def fault_manifest(
    fault: FaultSpec,
    *,
    scenario: str,
    tag: str,
    run_id: str,
    namespace: str | None = None,
    duration_s: float | None = None,
    where: str = "fault",
) -> dict[str, Any]:
    """One plain chaos object for ``fault`` lasting ``duration_s`` (default: the fault's own)."""
    duration = fault.duration_s if duration_s is None else duration_s
    kind, ns, spec = chaos_spec(fault, namespace=namespace, where=where, duration_s=duration)
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": _meta(object_name(scenario, tag, run_id), ns, run_id, scenario),
        "spec": spec,
    }


def schedule_manifest(
    fault: FaultSpec, *, scenario: str, tag: str, run_id: str, namespace: str | None = None, where: str = "fault"
) -> dict[str, Any]:
    """A ``Schedule`` creating ``fault`` every ``repeat.every_s`` seconds."""
    if fault.repeat is None:
        raise ChaosError(f"{where} has no `repeat`; render it with fault_manifest")
    kind, ns, spec = chaos_spec(fault, namespace=namespace, where=where, duration_s=fault.duration_s)
    if fault.duration_s >= fault.repeat.every_s:
        warnings.warn(
            f"{where}: duration_s={fault.duration_s:g} >= repeat.every_s={fault.repeat.every_s:g}; with "
            "concurrencyPolicy Forbid the Schedule skips every run that would overlap the previous one",
            stacklevel=2,
        )
    meta = _meta(
        object_name(scenario, tag, run_id, limit=NAME_LIMIT["Schedule"]),
        ns,
        run_id,
        scenario,
        start_offset=go_duration(fault.start_s),
        repeat_count=str(fault.repeat.count),
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Schedule",
        "metadata": meta,
        "spec": {
            "schedule": f"@every {go_duration(fault.repeat.every_s)}",
            "type": kind,
            "historyLimit": fault.repeat.count,
            "concurrencyPolicy": "Forbid",
            EMBED_KEY[kind]: spec,
        },
    }


def workflow_manifest(
    sequence: FaultSequence,
    *,
    scenario: str,
    tag: str,
    run_id: str,
    namespace: str | None = None,
    where: str = "sequence",
) -> dict[str, Any]:
    """A serial ``Workflow``: each step a template, pauses (step offsets, gaps) as ``Suspend``."""
    templates: list[dict[str, Any]] = []
    children: list[str] = []
    namespaces: list[str] = []
    total = 0.0

    def suspend(seconds: float, label: str) -> None:
        nonlocal total
        templates.append({"name": label, "templateType": "Suspend", "deadline": go_duration(seconds)})
        children.append(label)
        total += seconds

    for k, step in enumerate(sequence.steps):
        step_where = f"{where} step #{k} ({step.kind.value})"
        if step.repeat is not None:
            raise ChaosError(f"{step_where}: a step of a sequence cannot `repeat`; repeat the whole sequence instead")
        if step.start_s > 0:
            suspend(step.start_s, f"wait-{k}")
        kind, ns, spec = chaos_spec(step, namespace=namespace, where=step_where, duration_s=None)
        namespaces.append(ns)
        name = f"step-{k}-{step.kind.value}"
        templates.append(
            {"name": name, "templateType": kind, "deadline": go_duration(step.duration_s), EMBED_KEY[kind]: spec}
        )
        children.append(name)
        total += step.duration_s
        if sequence.gap_s > 0 and k < len(sequence.steps) - 1:
            suspend(sequence.gap_s, f"gap-{k}")
    entry = {"name": "entry", "templateType": "Serial", "deadline": go_duration(total), "children": children}
    meta = _meta(
        object_name(scenario, tag, run_id, limit=NAME_LIMIT["Workflow"]),
        namespaces[0],
        run_id,
        scenario,
        start_offset=go_duration(sequence.start_s),
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": meta,
        "spec": {"entry": "entry", "templates": [entry, *templates]},
    }


def check_renderable(scenario: Scenario) -> None:
    """Raise ChaosError for the first simulator-only fault, naming it."""
    for i, fault in enumerate(scenario.faults):
        kind_of(fault, f"fault #{i} ({fault.kind.value})")
    for seq in scenario.sequences:
        for k, step in enumerate(seq.steps):
            kind_of(step, f"sequence {seq.name!r} step #{k} ({step.kind.value})")


def render_scenario(scenario: Scenario, *, run_id: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every fault and sequence of ``scenario`` as Chaos Mesh manifests, in scenario order.

    ``namespace`` is the default for selectors that name none.
    """
    check_run_id(run_id)
    check_renderable(scenario)
    out = []
    for i, fault in enumerate(scenario.faults):
        where = f"fault #{i} ({fault.kind.value})"
        render = schedule_manifest if fault.repeat is not None else fault_manifest
        out.append(
            render(
                fault, scenario=scenario.name, tag=_tag(fault, f"f{i}"), run_id=run_id, namespace=namespace, where=where
            )
        )
    for j, seq in enumerate(scenario.sequences):
        out.append(
            workflow_manifest(
                seq,
                scenario=scenario.name,
                tag=f"s{j}-{seq.name}",
                run_id=run_id,
                namespace=namespace,
                where=f"sequence {seq.name!r}",
            )
        )
    return out


def window_manifests(
    scenario: Scenario, *, run_id: str, namespace: str | None = None
) -> list[tuple[FaultWindow, dict[str, Any]]]:
    """One plain chaos object per fault window (repeats and sequence steps expanded), in time order.

    Names carry the fault (``f<i>``) or sequence step (``s<j>-<k>``) and the occurrence
    (``-<n>``), so each window's object is distinct and stable across renders.
    """
    check_run_id(run_id)
    check_renderable(scenario)
    tags: dict[int, tuple[str, str]] = {}
    for i, fault in enumerate(scenario.faults):
        tags[id(fault)] = (f"f{i}", f"fault #{i} ({fault.kind.value})")
    for j, seq in enumerate(scenario.sequences):
        for k, step in enumerate(seq.steps):
            tags[id(step)] = (f"s{j}-{k}", f"sequence {seq.name!r} step #{k} ({step.kind.value})")
    seen: dict[str, int] = {}
    out = []
    for window in scenario.windows():
        prefix, where = tags[id(window.spec)]
        occurrence = seen.get(prefix, 0)
        seen[prefix] = occurrence + 1
        manifest = fault_manifest(
            window.spec,
            scenario=scenario.name,
            tag=f"{_tag(window.spec, prefix)}-{occurrence}",
            run_id=run_id,
            namespace=namespace,
            duration_s=window.end_s - window.start_s,
            where=where,
        )
        out.append((window, manifest))
    return out


@dataclass(frozen=True)
class NativeObject:
    """One object ``--mesh-objects native`` creates, with the fault windows it stands for.

    ``create_s`` is when rlctl creates it (seconds from the run start). A Schedule's first
    run comes one period (``every_s``) after its creation, so it is created ``every_s`` before
    the first window (at 0 if the window starts earlier: its runs then come late, and the
    report shows by how much). ``natural_end_s`` is when Chaos Mesh is done by itself: a
    Workflow's entry deadline, a plain object's ``spec.duration``, a Schedule's last run's end.
    """

    manifest: dict[str, Any]
    windows: tuple[FaultWindow, ...]
    create_s: float
    natural_end_s: float
    every_s: float | None = None


def native_manifests(scenario: Scenario, *, run_id: str, namespace: str | None = None) -> list[NativeObject]:
    """What ``--mesh-objects native`` creates, in order of creation.

    A fault with ``repeat``: its Schedule (:func:`schedule_manifest`); a sequence: its Workflow
    (:func:`workflow_manifest`); any other fault: one plain object per window, named as
    :func:`window_manifests` names them. Faults and sequences with no window inside the
    scenario's duration are left out.
    """
    check_run_id(run_id)
    check_renderable(scenario)
    windows = scenario.windows()
    native = {id(f) for f in scenario.faults if f.repeat is not None}
    native |= {id(step) for seq in scenario.sequences for step in seq.steps}
    out = [NativeObject(m, (w,), w.start_s, w.end_s) for w, m in window_manifests(scenario, run_id=run_id,
           namespace=namespace) if id(w.spec) not in native]  # fmt: skip
    for i, fault in enumerate(scenario.faults):
        mine = tuple(w for w in windows if w.spec is fault)
        if fault.repeat is None or not mine:
            continue
        manifest = schedule_manifest(fault, scenario=scenario.name, tag=_tag(fault, f"f{i}"), run_id=run_id,
                                     namespace=namespace, where=f"fault #{i} ({fault.kind.value})")  # fmt: skip
        every = float(fault.repeat.every_s)
        create = max(0.0, mine[0].start_s - every)
        out.append(NativeObject(manifest, mine, create, create + len(mine) * every + fault.duration_s, every))
    for j, seq in enumerate(scenario.sequences):
        steps = {id(step) for step in seq.steps}
        mine = tuple(w for w in windows if id(w.spec) in steps)
        if not mine:
            continue
        manifest = workflow_manifest(seq, scenario=scenario.name, tag=f"s{j}-{seq.name}", run_id=run_id,
                                     namespace=namespace, where=f"sequence {seq.name!r}")  # fmt: skip
        total = sum(s.start_s + s.duration_s for s in seq.steps) + seq.gap_s * (len(seq.steps) - 1)
        out.append(NativeObject(manifest, mine, float(seq.start_s), float(seq.start_s + total)))
    return sorted(out, key=lambda o: (o.create_s, o.windows[0].start_s))


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in rendering order (``kubectl apply -f -`` ready)."""
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False, explicit_start=True)
