"""Compiling a limits file into its artefacts (``env.json``, ``safety.json``, Kubernetes objects),
validating and writing them, and reading the compiled files back (:func:`load_safety_config`,
:func:`env_config`). Part of :mod:`rlctl.dsl`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rlctl.contract import (
    DEFAULT_SLO_P99_MS,
    KNOB_FIELDS,
    SCHEMA_HASH,
    KnobBounds,
    Knobs,
)
from rlctl.dsl.resolve import (
    Resolved,
    _err,
    _resolve,
)
from rlctl.dsl.schema import (
    ENV_SCHEMA,
    SAFETY_SCHEMA,
    LimitsSpec,
    _fmt_quantity,
    _set,
)
from rlctl.errors import ConfigError
from rlctl.online.safety import SafetyConfig


def compile_limits(spec: LimitsSpec, *, source: str = "<limits>", text: str | None = None) -> dict[str, Any]:
    """Every artefact of ``spec`` as JSON-able dicts: ``env``, ``safety`` and ``kubernetes`` (name -> object)."""
    r = _resolve(spec, source=source, text=text)
    objectives = [str(o) for o in spec.objectives()]
    env = {
        "schema": ENV_SCHEMA,
        "service": spec.service,
        "env_config": {
            "dt_s": spec.dt_s,
            "slo_p99_ms": spec.slo_p99_ms,
            "window": spec.window,
            "reward": spec.cost.model_dump(),
            "bounds": _bounds_dict(r.bounds),
            "initial_knobs": r.initial.to_dict(),
        },
        "constraints": [dataclasses.asdict(o) for o in spec.objectives()],
        "slo": objectives,
    }
    safety = {
        "schema": SAFETY_SCHEMA,
        "service": spec.service,
        "schema_hash": SCHEMA_HASH,
        "slo": objectives,
        "safety": {
            "bounds": _bounds_dict(r.bounds),
            "max_step_replicas": r.max_step["replicas"],
            "max_step_gomaxprocs": r.max_step["gomaxprocs"],
            "max_rungs": r.max_step["rungs"],
            "cooldown_s": {"prefetch": 300.0, "turbo": 300.0, **_set(spec.cooldown_s)},
        },
        "pinned": {k: v for k, v in r.pinned.items()},
    }
    return {"env": env, "safety": safety, "kubernetes": kubernetes_objects(spec, r, source=source, text=text)}


def _bounds_dict(b: KnobBounds) -> dict[str, Any]:
    d = dataclasses.asdict(b)
    d["allow"] = list(b.allow)
    return d


#: The metric an advised autoscaler scales on (``rlctl.online.loop.ControllerMetrics.desired_replicas``).
DESIRED_REPLICAS_METRIC = "rlctl_desired_replicas"


def autoscaler_for(spec: LimitsSpec, *, source: str = "<limits>", text: str | None = None) -> str:
    """``none``, ``hpa`` or ``keda``: what replaces or joins the controller on the Deployment's replicas.

    One writer per Deployment: with ``controller: act`` the controller patches the scale
    subresource, so an HPA or ScaledObject on the same Deployment would be a second writer; the
    combination is refused (:class:`ConfigError` naming the line and the fix).
    """
    k = spec.kubernetes
    if k is None:
        return "none"
    mode = k.controller
    chosen = k.autoscaler if k.autoscaler is not None else ("none" if mode == "act" else "hpa")
    where = f"Deployment {k.namespace}/{k.deployment}"
    if mode == "act" and chosen != "none":
        raise _err(source, text, ("kubernetes", "autoscaler"),
                   f"autoscaler {chosen!r} with controller 'act' puts two writers on {where}: rlctl control patches "
                   f"its scale subresource and the {chosen.upper()} sets its replicas too. Fix: controller: advise "
                   f"(the {chosen.upper()} scales on rlctl's advice), controller: shadow (rlctl only records), or "
                   "autoscaler: none (rlctl alone)")  # fmt: skip
    if mode == "act" and "hpa_cpu_utilization" in k.model_fields_set:
        raise _err(source, text, ("kubernetes", "hpa_cpu_utilization"),
                   f"hpa_cpu_utilization asks for a CPU HPA on {where}, but controller 'act' (the default) scales "
                   "it: two writers. Fix: remove hpa_cpu_utilization (rlctl alone), or set controller: shadow "
                   "(the CPU HPA scales it, rlctl records what it would have done)")  # fmt: skip
    if mode == "shadow" and chosen == "keda":
        raise _err(source, text, ("kubernetes", "autoscaler"),
                   "autoscaler 'keda' with controller 'shadow': rlctl generates the autoscaler a shadow is "
                   "compared with only as a CPU HPA. Fix: autoscaler: hpa, or autoscaler: none and keep your own "
                   "ScaledObject")  # fmt: skip
    return chosen


def _behavior(step: int, period_s: int, *, down_window_s: int) -> dict[str, Any]:
    return {"scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": step, "periodSeconds": period_s}]},
            "scaleDown": {"stabilizationWindowSeconds": down_window_s,
                          "policies": [{"type": "Pods", "value": step, "periodSeconds": period_s}]}}  # fmt: skip


def kubernetes_objects(
    spec: LimitsSpec, r: Resolved, *, source: str = "<limits>", text: str | None = None
) -> dict[str, dict[str, Any]]:
    """The autoscaler (HPA or KEDA ScaledObject, see :func:`autoscaler_for`), PDB and Deployment patch
    for ``spec.kubernetes`` (empty without that section)."""
    k = spec.kubernetes
    if k is None:
        return {}
    autoscaler = autoscaler_for(spec, source=source, text=text)
    labels = k.labels or {"app": k.deployment}
    meta = {"name": k.deployment, "namespace": k.namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "rlctl"}}  # fmt: skip
    step = r.max_step["replicas"]
    period = max(int(spec.dt_s * 3), 1)
    target_ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": k.deployment}
    # Advised: the HPA computes ceil(metric / 1) = the advice; the controller's safety layer already
    # limits steps and cool-downs, so the HPA adds no stabilisation of its own on the way down.
    advised_metric = {"type": "External", "external": {
        "metric": {"name": DESIRED_REPLICAS_METRIC, "selector": {"matchLabels": {"service": spec.service}}},
        "target": {"type": "AverageValue", "averageValue": "1"}}}  # fmt: skip
    cpu_metric = {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": k.hpa_cpu_utilization}}}  # fmt: skip
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": target_ref,
            "minReplicas": r.bounds.min_replicas,
            "maxReplicas": r.bounds.max_replicas,
            "metrics": [advised_metric if k.controller == "advise" else cpu_metric],
            "behavior": _behavior(step, period, down_window_s=0 if k.controller == "advise" else 60),
        },
    }  # fmt: skip
    objects: dict[str, dict[str, Any]] = {}
    if autoscaler == "hpa":
        objects["hpa"] = hpa
    elif autoscaler == "keda":
        objects["scaledobject"] = scaled_object(spec, r, meta, target_ref, _behavior(step, period, down_window_s=0))
    if k.min_available is not None:
        objects["pdb"] = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta,
            "spec": {"minAvailable": k.min_available, "selector": {"matchLabels": labels}},
        }
    resources: dict[str, dict[str, str]] = {}
    for kind, cpu, mem in (("limits", k.cpu_limit, k.memory_limit), ("requests", k.cpu_request, k.memory_request)):
        res = {n: _fmt_quantity(v) if isinstance(v, float) else str(v)
               for n, v in (("cpu", cpu), ("memory", mem)) if v is not None}  # fmt: skip
        if res:
            resources[kind] = res
    container: dict[str, Any] = {"name": k.container or k.deployment,
                                 "env": [{"name": n, "value": v} for n, v in r.env.items()]}  # fmt: skip
    if resources:
        container["resources"] = resources
    objects["deployment-patch"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": k.deployment, "namespace": k.namespace},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }
    return objects


def scaled_object(
    spec: LimitsSpec, r: Resolved, meta: dict[str, Any], target_ref: dict[str, Any], behavior: dict[str, Any]
) -> dict[str, Any]:
    """A KEDA ScaledObject that scales the Deployment to rlctl's advice (``controller: advise``).

    The Prometheus trigger's ``AverageValue`` target of 1 makes the HPA KEDA manages compute
    ceil(advice / 1). ``ignoreNullValues: false``: when the advice is missing (the controller is
    down), the query is an error instead of 0, and after three failed polls KEDA runs
    ``fallback.replicas`` (the upper bound: an absent controller must not shrink the service).
    """
    k = spec.kubernetes
    assert k is not None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": target_ref,
            "pollingInterval": max(int(spec.dt_s), 1),
            "minReplicaCount": r.bounds.min_replicas,
            "maxReplicaCount": r.bounds.max_replicas,
            "fallback": {"failureThreshold": 3, "replicas": r.bounds.max_replicas},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": k.prometheus_url,
                    "query": f'max({DESIRED_REPLICAS_METRIC}{{service="{spec.service}"}})',
                    "threshold": "1",
                    "ignoreNullValues": "false",
                },
            }],
        },
    }  # fmt: skip


def validate_kubernetes(objects: dict[str, dict[str, Any]], *, version: str | None = None) -> dict[str, str]:
    """Validate the full objects (HPA, PDB) with ``kubernetes_validate`` in strict mode.

    Returns ``{name: "ok" | "skipped: ..."}``; raises :class:`ConfigError` on an invalid
    object. The Deployment patch is partial by design and is not validated.
    """
    try:
        import kubernetes_validate
    except ImportError:
        return {name: "skipped: kubernetes-validate is not installed" for name in objects}
    target = version or kubernetes_validate.utils.latest_version()
    out = {}
    for name, obj in objects.items():
        if name == "deployment-patch":
            out[name] = "skipped: a strategic-merge patch is partial"
            continue
        if obj["apiVersion"].startswith("keda.sh/"):
            out[name] = "skipped: a KEDA custom resource (no CRD schema vendored; its structure is tested)"
            continue
        try:
            kubernetes_validate.validate(obj, target, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ConfigError(f"compiled {obj['kind']} is invalid for Kubernetes {target}: {exc.message}") from None
        out[name] = f"ok (Kubernetes {target}, strict)"
    return out


def write_compiled(compiled: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``env.json``, ``safety.json`` and ``k8s/<name>.yaml`` under ``out_dir``."""
    import yaml

    out = Path(out_dir)
    (out / "k8s").mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("env", "safety"):
        p = out / f"{name}.json"
        p.write_text(json.dumps(compiled[name], indent=2) + "\n")
        paths.append(p)
    for name, obj in compiled["kubernetes"].items():
        p = out / "k8s" / f"{name}.yaml"
        p.write_text(yaml.safe_dump(obj, sort_keys=False))
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------ readers


def load_safety_config(path: str | Path) -> Any:
    """The :class:`rlctl.online.safety.SafetyConfig` in a compiled ``safety.json``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read safety bounds ({exc}); write it with `rlctl limits compile`") from None
    if data.get("schema") != SAFETY_SCHEMA:
        raise ConfigError(f"{p}: schema {data.get('schema')!r} is not {SAFETY_SCHEMA!r}; recompile the limits file")
    if data.get("schema_hash") != SCHEMA_HASH:
        raise ConfigError(f"{p}: compiled for contract {data.get('schema_hash')}, this is {SCHEMA_HASH}; recompile it")
    cfg = dict(data["safety"])
    bounds = dict(cfg.pop("bounds"))
    bounds["allow"] = tuple(bounds.get("allow", KNOB_FIELDS))
    return SafetyConfig(bounds=KnobBounds(**bounds), **cfg)


def env_config(compiled_env: dict[str, Any]) -> Any:
    """The :class:`envs.sim.EnvConfig` of a compiled ``env.json`` (imports the simulator)."""
    from envs.sim import EnvConfig, RewardWeights  # local: envs loads gymnasium; production never imports it

    c = dict(compiled_env.get("env_config", compiled_env))
    bounds = dict(c.pop("bounds"))
    bounds["allow"] = tuple(bounds.get("allow", KNOB_FIELDS))
    return EnvConfig(
        dt_s=float(c.get("dt_s", 5.0)),
        slo_p99_ms=float(c.get("slo_p99_ms", DEFAULT_SLO_P99_MS)),
        window=int(c.get("window", 12)),
        reward=RewardWeights(**c.get("reward", {})),
        bounds=KnobBounds(**bounds),
        initial_knobs=Knobs(**c.get("initial_knobs", {})),
    )
