"""Limits files (rlctl's DSL): one YAML file per service says what "healthy" means and what rlctl may
touch; ``rlctl limits check|compile``. "Limits", not "boundary": the boundary is the service's
critical point, which ``rlctl probe`` finds (:mod:`rlctl.boundary`).

A file holds the service's SLOs, the bounds of every knob and which knobs may move at all,
the per-interval step limits, the cost weights of the reward, and the mapping from the
service-level SLO down to runtime and kernel knobs::

    service: gosvc
    slo: ["p99_ms <= 8", "error_rate <= 0.001"]
    bounds: {replicas: [1, 8]}
    max_step: {replicas: 2, gomaxprocs: 1, rungs: 1}
    cost: {slo: 1.0, error: 5.0, replica: 0.05, core: 0.01, churn: 0.01}
    runtime: {gomaxprocs: quota, gogc: [50, 400], gomemlimit: 0.9 * memory_limit}
    kernel: {prefetch: allow, turbo: deny}
    kubernetes: {deployment: gosvc, cpu_limit: 2, memory_limit: 1Gi, min_available: 1}

Knob values: a list ``[lo, hi]`` is a range the controller may move in; a single value
pins the knob (it is set once and never moved); ``quota`` is the container's CPU limit
rounded down (the automaxprocs rule); ``F * memory_limit`` is a fraction of the memory
limit. Kernel knobs are ``allow`` / ``deny`` (the controller may or may not toggle them)
or ``on`` / ``off`` (pinned).

:func:`load_limits` validates a file with pydantic; every error names the file, the
line (from the YAML node marks), the field and the fix. :func:`compile_limits` turns a
spec into

- the environment's reward and constraints (``env.json``: the fields of
  :class:`envs.sim.EnvConfig`; :func:`env_config` builds the object),
- the controller's safety bounds (``safety.json``: the fields of
  :class:`rlctl.online.safety.SafetyConfig`; :func:`load_safety_config` reads it back),
- Kubernetes objects where they apply: an ``autoscaling/v2`` HorizontalPodAutoscaler, a
  ``policy/v1`` PodDisruptionBudget and a strategic-merge patch of the Deployment's
  container resources and GOMAXPROCS / GOGC / GOMEMLIMIT environment.

This module is production code: it never imports the simulator (:func:`env_config`
imports :mod:`envs.sim` only when called).

The package is split by concern: :mod:`~rlctl.dsl.schema` (objectives, quantities, the pydantic
models), :mod:`~rlctl.dsl.parse` (YAML to a validated spec with line numbers),
:mod:`~rlctl.dsl.resolve` (spec to contract types, :func:`load_limits`) and
:mod:`~rlctl.dsl.compiler` (the artefacts, written and read back). Every public name is
re-exported here.
"""

from __future__ import annotations

from rlctl.dsl.compiler import (
    compile_limits,
    env_config,
    kubernetes_objects,
    load_safety_config,
    validate_kubernetes,
    write_compiled,
)
from rlctl.dsl.parse import spec_from_text
from rlctl.dsl.resolve import Resolved, load_limits, resolve
from rlctl.dsl.schema import (
    ENV_SCHEMA,
    OPS,
    RANGE_KNOBS,
    SAFETY_SCHEMA,
    Actions,
    Allow,
    Bounds,
    Cooldowns,
    Cost,
    Kernel,
    KernelSetting,
    KnobValue,
    Kubernetes,
    LimitsSpec,
    MaxStep,
    Objective,
    Range,
    Runtime,
    SloText,
    Step,
    parse_objective,
    parse_quantity,
)

__all__ = [
    "ENV_SCHEMA",
    "OPS",
    "RANGE_KNOBS",
    "SAFETY_SCHEMA",
    "Actions",
    "Allow",
    "BoundarySpec",
    "Bounds",
    "Cooldowns",
    "Cost",
    "Kernel",
    "KernelSetting",
    "KnobValue",
    "Kubernetes",
    "LimitsSpec",
    "MaxStep",
    "Objective",
    "Range",
    "Resolved",
    "Runtime",
    "SloText",
    "Step",
    "compile_boundary",
    "compile_limits",
    "env_config",
    "kubernetes_objects",
    "load_boundary",
    "load_limits",
    "load_safety_config",
    "parse_objective",
    "parse_quantity",
    "resolve",
    "spec_from_text",
    "validate_kubernetes",
    "write_compiled",
]

# The names before "limits" replaced "boundary" for the file format; kept for callers.
BoundarySpec = LimitsSpec
load_boundary = load_limits
compile_boundary = compile_limits
