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
    return {"env": env, "safety": safety, "kubernetes": kubernetes_objects(spec, r)}


def _bounds_dict(b: KnobBounds) -> dict[str, Any]:
    d = dataclasses.asdict(b)
    d["allow"] = list(b.allow)
    return d


def kubernetes_objects(spec: LimitsSpec, r: Resolved) -> dict[str, dict[str, Any]]:
    """HPA, PDB and Deployment patch for ``spec.kubernetes`` (empty without that section)."""
    k = spec.kubernetes
    if k is None:
        return {}
    labels = k.labels or {"app": k.deployment}
    meta = {"name": k.deployment, "namespace": k.namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "rlctl"}}  # fmt: skip
    step = r.max_step["replicas"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": k.deployment},
            "minReplicas": r.bounds.min_replicas,
            "maxReplicas": r.bounds.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": k.hpa_cpu_utilization}}}],
            "behavior": {
                "scaleUp": {"policies": [{"type": "Pods", "value": step, "periodSeconds": int(spec.dt_s * 3)}]},
                "scaleDown": {"stabilizationWindowSeconds": 60,
                              "policies": [{"type": "Pods", "value": step, "periodSeconds": int(spec.dt_s * 3)}]},
            },
        },
    }  # fmt: skip
    objects: dict[str, dict[str, Any]] = {"hpa": hpa}
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
