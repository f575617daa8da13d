"""The boundary DSL: one YAML file per service says what "healthy" means and what rlctl may touch.

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

:func:`load_boundary` validates a file with pydantic; every error names the file, the
line (from the YAML node marks), the field and the fix. :func:`compile_boundary` turns a
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
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlctl.contract import (
    DEFAULT_SLO_P99_MS,
    KNOB_FIELDS,
    LADDERS,
    SCHEMA_HASH,
    TELEMETRY_FIELDS,
    KnobBounds,
    Knobs,
    clamp_array,
)
from rlctl.errors import ConfigError
from rlctl.inputs import load_yaml, read_text

SAFETY_SCHEMA = "rlctl.safety/v1"
ENV_SCHEMA = "rlctl.env-config/v1"
OPS = ("<=", "<", ">=", ">")
_SLO_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$"
)
_QUANTITY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(Ki|Mi|Gi|Ti|k|M|G|T|m)?\s*$")
_MEM_EXPR_RE = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+)\s*\*\s*)?memory_limit\s*(?:\*\s*([0-9]*\.?[0-9]+)\s*)?$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UNITS = {None: 1.0, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "m": 1e-3}  # fmt: skip
#: Knobs with numeric ranges (the toggles are set in ``kernel:``).
RANGE_KNOBS = tuple(k for k in KNOB_FIELDS if k not in ("prefetch", "turbo"))


# ------------------------------------------------------------------------------ small parsers


@dataclass(frozen=True, slots=True)
class Objective:
    """One SLO: ``metric op value`` over telemetry fields, e.g. ``p99_ms <= 8``."""

    metric: str
    op: str
    value: float

    def holds(self, sample: Any) -> bool:
        """Whether the objective holds for ``sample`` (anything with the metric as attribute or key)."""
        v = float(sample[self.metric] if isinstance(sample, dict) else getattr(sample, self.metric))
        return {"<=": v <= self.value, "<": v < self.value, ">=": v >= self.value, ">": v > self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_objective(text: str) -> Objective:
    """``"p99_ms <= 8"`` -> :class:`Objective`; the ValueError says how to fix it."""
    m = _SLO_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not 'metric op number'; write it like 'p99_ms <= 8'")
    metric, op, value = m.group(1), m.group(2), float(m.group(3))
    if metric not in TELEMETRY_FIELDS:
        close = difflib.get_close_matches(metric, TELEMETRY_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use a telemetry field such as {TELEMETRY_FIELDS[5]!r}"
        raise ValueError(f"unknown metric {metric!r} in {text!r}; {hint}")
    if op not in OPS:
        raise ValueError(f"operator {op!r} in {text!r} is not allowed; use one of {', '.join(OPS)}")
    return Objective(metric, op, value)


def parse_quantity(value: Any, *, what: str = "quantity") -> float:
    """A Kubernetes quantity (``2``, ``500m``, ``1Gi``, ``512Mi``) as a float (bytes or cores)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is a boolean; give a number or a quantity like 1Gi")
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY_RE.match(str(value))
    if not m:
        raise ValueError(f"{what} {value!r} is not a quantity; write e.g. 2, 500m, 512Mi or 1Gi")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _fmt_quantity(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


# ------------------------------------------------------------------------------ the spec model

KnobValue = int | float | str | list[int | float | str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cost(_Strict):
    """Reward weights (the fields of :class:`envs.sim.RewardWeights`)."""

    slo: float = Field(default=1.0, ge=0)
    error: float = Field(default=5.0, ge=0)
    replica: float = Field(default=0.05, ge=0)
    core: float = Field(default=0.01, ge=0)
    churn: float = Field(default=0.01, ge=0)


class Runtime(_Strict):
    """Go runtime knobs: a value pins, ``[lo, hi]`` is a range, ``quota`` / ``F * memory_limit`` resolve."""

    gomaxprocs: KnobValue | None = None
    gogc: KnobValue | None = None
    gomemlimit: KnobValue | None = None
    object_pool_size: KnobValue | None = None
    conn_pool_size: KnobValue | None = None

    @field_validator("gomaxprocs", "gogc", "object_pool_size", "conn_pool_size", "gomemlimit")
    @classmethod
    def _shape(cls, v: KnobValue | None) -> KnobValue | None:
        if isinstance(v, list) and len(v) != 2:
            raise ValueError(f"{v!r} has {len(v)} items; write a range as [lo, hi] or pin it with one value")
        return v


KernelSetting = Literal["allow", "deny", "on", "off"]


class Kernel(_Strict):
    """Host knobs: ``allow`` (the controller may toggle), ``deny`` (never touched), ``on`` / ``off`` (pinned)."""

    prefetch: KernelSetting = "allow"
    turbo: KernelSetting = "allow"

    @field_validator("prefetch", "turbo", mode="before")
    @classmethod
    def _bool_words(cls, v: Any) -> Any:
        # YAML 1.1 reads bare on/off as booleans.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class Kubernetes(_Strict):
    """Where the service runs in Kubernetes; resources in Kubernetes quantities."""

    namespace: str = "default"
    deployment: str
    container: str | None = None
    labels: dict[str, str] | None = None
    cpu_limit: float | str | None = None
    memory_limit: float | str | None = None
    cpu_request: float | str | None = None
    memory_request: float | str | None = None
    hpa_cpu_utilization: int = Field(default=60, ge=1, le=100)
    min_available: int | str | None = 1

    @field_validator("namespace", "deployment", "container")
    @classmethod
    def _dns_name(cls, v: str | None) -> str | None:
        if v is not None and not (_NAME_RE.match(v) and len(v) <= 63):
            raise ValueError(f"{v!r} is not a DNS-1123 label; use lower-case letters, digits and '-', e.g. 'gosvc'")
        return v

    @field_validator("cpu_limit", "cpu_request", "memory_limit", "memory_request")
    @classmethod
    def _quantity(cls, v: float | str | None) -> float | str | None:
        if v is not None and parse_quantity(v) <= 0:
            raise ValueError(f"{v!r} must be positive")
        return v

    @field_validator("min_available")
    @classmethod
    def _min_available(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str) and not re.fullmatch(r"\d{1,3}%", v):
            raise ValueError(f"{v!r} is neither a count nor a percentage; write 1 or '50%'")
        return v


def _check_range(v: list[float] | None) -> list[float] | None:
    if v is not None and (len(v) != 2 or v[0] > v[1]):
        raise ValueError(f"{v!r} is not [min, max] with min <= max; write e.g. [1, 8]")
    return v


def _check_objective(v: str) -> str:
    parse_objective(v)
    return v


Range = Annotated[list[float], AfterValidator(_check_range)]
Step = Annotated[int, Field(ge=1, description="at least 1, or the knob could never move (deny it instead)")]
Allow = Literal["allow", "deny"]
SloText = Annotated[str, AfterValidator(_check_objective)]


class Bounds(_Strict):
    """``[min, max]`` per numeric knob (knobs not named keep the contract's bounds)."""

    replicas: Range | None = None
    gomaxprocs: Range | None = None
    gogc: Range | None = None
    gomemlimit_mib: Range | None = None
    object_pool_size: Range | None = None
    conn_pool_size: Range | None = None


class MaxStep(_Strict):
    """Largest change per interval: replicas, GOMAXPROCS, and ladder rungs (one limit for all ladders)."""

    replicas: Step | None = None
    gomaxprocs: Step | None = None
    rungs: Step | None = None
    gogc: Step | None = None
    gomemlimit_mib: Step | None = None
    object_pool_size: Step | None = None
    conn_pool_size: Step | None = None


class Cooldowns(_Strict):
    """Seconds a knob stays untouched after it changed."""

    replicas: float | None = Field(default=None, ge=0)
    gomaxprocs: float | None = Field(default=None, ge=0)
    gogc: float | None = Field(default=None, ge=0)
    gomemlimit_mib: float | None = Field(default=None, ge=0)
    object_pool_size: float | None = Field(default=None, ge=0)
    conn_pool_size: float | None = Field(default=None, ge=0)
    prefetch: float | None = Field(default=None, ge=0)
    turbo: float | None = Field(default=None, ge=0)


class Actions(_Strict):
    """``allow`` / ``deny`` per knob; overrides what the ranges imply."""

    replicas: Allow | None = None
    gomaxprocs: Allow | None = None
    gogc: Allow | None = None
    gomemlimit_mib: Allow | None = None
    object_pool_size: Allow | None = None
    conn_pool_size: Allow | None = None
    prefetch: Allow | None = None
    turbo: Allow | None = None


def _set(model: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in model.model_dump().items() if v is not None}


class BoundarySpec(_Strict):
    """One service's boundary file, validated."""

    service: str
    slo: list[SloText] = Field(min_length=1)
    bounds: Bounds = Bounds()
    max_step: MaxStep = MaxStep()
    cooldown_s: Cooldowns = Cooldowns()
    actions: Actions = Actions()
    cost: Cost = Cost()
    runtime: Runtime = Runtime()
    kernel: Kernel = Kernel()
    kubernetes: Kubernetes | None = None
    dt_s: float = Field(default=5.0, gt=0)
    window: int = Field(default=12, ge=1)

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        if not (_NAME_RE.match(v) and len(v) <= 63):
            raise ValueError(f"{v!r} is not a DNS-1123 label; use lower-case letters, digits and '-', e.g. 'gosvc'")
        return v

    @field_validator("slo")
    @classmethod
    def _slo(cls, v: list[str]) -> list[str]:
        if not any(o.metric == "p99_ms" and o.op in ("<=", "<") for o in map(parse_objective, v)):
            raise ValueError("no P99 objective; add 'p99_ms <= N' (the environment's reward needs it)")
        return v

    @model_validator(mode="after")
    def _cross(self) -> BoundarySpec:
        for knob in ("gogc", "gomaxprocs", "object_pool_size", "conn_pool_size"):
            if getattr(self.bounds, knob) is not None and getattr(self.runtime, knob) is not None:
                raise ValueError(f"{knob} is set in both bounds and runtime; keep one (runtime.{knob})")
        if self.bounds.gomemlimit_mib is not None and self.runtime.gomemlimit is not None:
            raise ValueError("gomemlimit is set in both bounds.gomemlimit_mib and runtime.gomemlimit; keep one")
        return self

    # ---------------------------------------------------------------- derived values

    def objectives(self) -> list[Objective]:
        return [parse_objective(s) for s in self.slo]

    @property
    def slo_p99_ms(self) -> float:
        return min(o.value for o in self.objectives() if o.metric == "p99_ms" and o.op in ("<=", "<"))

    def cpu_quota(self) -> float | None:
        k = self.kubernetes
        return parse_quantity(k.cpu_limit) if k and k.cpu_limit is not None else None

    def memory_limit(self) -> float | None:
        k = self.kubernetes
        return parse_quantity(k.memory_limit) if k and k.memory_limit is not None else None


# ------------------------------------------------------------------------------ loading with line numbers


def _node_line(root: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    import yaml

    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            node, line = match[1], match[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


_TYPE_TAGS = {"int", "float", "str", "list", "bool", "literal", "dict"}


def _loc_from_message(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """A model-level message that names its field (``gogc is set in both ...``) points at that field."""
    m = re.match(r"(\w+) is set in both", msg)
    if m and not loc:
        return ("runtime", m.group(1))
    return loc


def _yaml_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """``loc`` without the type tags pydantic adds for union members; and whether it had any."""
    kept = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))
    return kept, len(kept) != len(loc)


def spec_from_text(text: str, *, source: str = "<boundary>") -> BoundarySpec:
    """Validate boundary YAML ``text``; :class:`ConfigError` lists every problem as ``source:line: field: fix``."""
    import yaml

    data = load_yaml(text, source=source, what="boundary file")  # bounded; file:line errors
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a boundary file is a mapping with at least 'service' and 'slo' keys")
    try:
        return BoundarySpec.model_validate(data)
    except ValidationError as exc:
        problems: dict[str, tuple[int, str]] = {}
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            loc, union = _yaml_loc(_loc_from_message(tuple(err["loc"]), msg))
            line = _node_line(root, loc) if err["type"] != "missing" else _node_line(root, loc[:-1])
            field = ".".join(str(p) for p in loc) or "(top level)"
            fix = _UNION_FIX if union else _fix(err, msg)
            problems.setdefault(field, (line or 1, f"{source}:{line or 1}: {field}: {fix}"))
        ordered = [text for _, text in sorted(problems.values(), key=lambda p: p[0])]
        raise ConfigError("invalid boundary file:\n  " + "\n  ".join(ordered)) from None


_UNION_FIX = "expected a number, a word such as 'quota' or a range [lo, hi]; e.g. gogc: [50, 400]"


def _fix(err: Any, msg: str) -> str:
    """A pydantic error as 'what is wrong; how to fix it'."""
    kind = err["type"]
    if kind == "missing":
        return "required field is missing; add it"
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        close = difflib.get_close_matches(field, _ALL_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "remove it (see rlctl/dsl.py for the fields)"
        return f"unknown field {field!r}; {hint}"
    if kind == "greater_than_equal" and err["loc"] and err["loc"][0] == "max_step":
        return f"{err.get('input')!r} must be at least 1, or the knob could never move (deny it instead)"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        limit = next(iter((err.get("ctx") or {}).values()), "?")
        word = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}[kind]
        return f"{err.get('input')!r} is out of range; write a number {word} {limit}"
    if kind == "literal_error":
        return f"{err.get('input')!r} is not allowed: {msg}"
    return msg


_ALL_FIELDS = sorted(
    {
        f
        for m in (BoundarySpec, Bounds, MaxStep, Cooldowns, Actions, Cost, Runtime, Kernel, Kubernetes)
        for f in m.model_fields
    }
)


def load_boundary(path: str | Path) -> BoundarySpec:
    """Read and validate a boundary YAML file."""
    p = Path(path)
    text = read_text(p, what="boundary file")
    spec = spec_from_text(text, source=str(p))
    _resolve(spec, source=str(p), text=text)  # semantic checks that need the whole spec
    return spec


# ------------------------------------------------------------------------------ compiling


@dataclass(frozen=True)
class Resolved:
    """A spec resolved to contract types: bounds, allowed knobs, pinned and initial values."""

    bounds: KnobBounds
    initial: Knobs
    pinned: dict[str, float]
    max_step: dict[str, int]
    env: dict[str, str]


def _err(source: str, text: str | None, loc: tuple[Any, ...], msg: str) -> ConfigError:
    line = 1
    if text is not None:
        import yaml

        line = _node_line(yaml.compose(text, Loader=yaml.SafeLoader), loc) or 1
    return ConfigError(f"invalid boundary file:\n  {source}:{line}: {'.'.join(map(str, loc))}: {msg}")


def _resolve_value(spec: BoundarySpec, knob: str, raw: Any, *, source: str, text: str | None) -> float:
    """One knob value: a number, ``quota``, a memory quantity or ``F * memory_limit`` (gomemlimit in MiB)."""
    field = "gomemlimit" if knob == "gomemlimit_mib" else knob
    loc = ("runtime", field)
    if isinstance(raw, str) and raw.strip() == "quota":
        quota = spec.cpu_quota()
        if knob != "gomaxprocs":
            raise _err(source, text, loc, f"'quota' only applies to gomaxprocs; give {field} a number")
        if quota is None:
            raise _err(source, text, loc, "'quota' needs kubernetes.cpu_limit; add it or give a number")
        return float(max(1, math.floor(quota)))
    if knob == "gomemlimit_mib":
        if isinstance(raw, str) and "memory_limit" in raw:
            m = _MEM_EXPR_RE.match(raw)
            if not m:
                raise _err(source, text, loc, f"{raw!r} is not 'F * memory_limit'; write e.g. 0.9 * memory_limit")
            limit = spec.memory_limit()
            if limit is None:
                raise _err(source, text, loc, f"{raw!r} needs kubernetes.memory_limit; add it (e.g. 1Gi)")
            factor = float(m.group(1) or 1.0) * float(m.group(2) or 1.0)
            if not 0 < factor <= 1:
                raise _err(source, text, loc, f"factor {factor:g} must be in (0, 1]: a limit above the container's "
                           "OOM-kills it")  # fmt: skip
            return math.floor(factor * limit / 2**20)
        try:
            value = parse_quantity(raw, what=field)
        except ValueError as exc:
            raise _err(source, text, loc, str(exc)) from None
        return value / 2**20 if isinstance(raw, str) else value  # bare numbers are MiB
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _err(source, text, loc, f"{raw!r} is not a number; write e.g. 100 or a range [50, 400]")
    return float(raw)


def _resolve(spec: BoundarySpec, *, source: str = "<boundary>", text: str | None = None) -> Resolved:
    defaults = KnobBounds()
    lo: dict[str, float] = {k: getattr(defaults, f"min_{k}") for k in RANGE_KNOBS}
    hi: dict[str, float] = {k: getattr(defaults, f"max_{k}") for k in RANGE_KNOBS}
    pinned: dict[str, float] = {}
    for knob, (a, b) in _set(spec.bounds).items():
        lo[knob], hi[knob] = a, b
    runtime = {"gomaxprocs": spec.runtime.gomaxprocs, "gogc": spec.runtime.gogc,
               "gomemlimit_mib": spec.runtime.gomemlimit, "object_pool_size": spec.runtime.object_pool_size,
               "conn_pool_size": spec.runtime.conn_pool_size}  # fmt: skip
    for knob, raw in runtime.items():
        if raw is None:
            continue
        if isinstance(raw, list):
            a, b = (_resolve_value(spec, knob, r, source=source, text=text) for r in raw)
            if a > b:
                field = "gomemlimit" if knob == "gomemlimit_mib" else knob
                raise _err(
                    source, text, ("runtime", field), f"range {raw!r} has min above max; write [{raw[1]}, {raw[0]}]"
                )
            lo[knob], hi[knob] = a, b
        else:
            lo[knob] = hi[knob] = pinned[knob] = _resolve_value(spec, knob, raw, source=source, text=text)
    memlimit = spec.memory_limit()
    if memlimit is not None and spec.runtime.gomemlimit is None and spec.bounds.gomemlimit_mib is None:
        # Not given: keep the GC's soft limit under the container's hard one (10 % for non-heap memory).
        hi["gomemlimit_mib"] = math.floor(0.9 * memlimit / 2**20)
        lo["gomemlimit_mib"] = min(lo["gomemlimit_mib"], hi["gomemlimit_mib"])
    if memlimit is not None and hi["gomemlimit_mib"] * 2**20 > memlimit:
        raise _err(source, text, ("runtime", "gomemlimit"),
                   f"GOMEMLIMIT up to {hi['gomemlimit_mib']:g} MiB exceeds kubernetes.memory_limit "
                   f"({memlimit / 2**20:g} MiB); cap it, e.g. gomemlimit: 0.9 * memory_limit")  # fmt: skip
    for knob, rungs in LADDERS.items():
        if not any(lo[knob] <= r <= hi[knob] for r in rungs):
            where = ("runtime", "gomemlimit" if knob == "gomemlimit_mib" else knob)
            where = where if getattr(spec.runtime, where[1], None) is not None else ("bounds", knob)
            if knob not in pinned:
                raise _err(source, text, where, f"[{lo[knob]:g}, {hi[knob]:g}] holds no rung of the {knob} ladder "
                           f"{list(rungs)}; widen it")  # fmt: skip
    allow = []
    for knob in KNOB_FIELDS:
        if knob in ("prefetch", "turbo"):
            ok = getattr(spec.kernel, knob) == "allow"
        else:
            ok = knob not in pinned and hi[knob] > lo[knob]
        action = getattr(spec.actions, knob)
        if action == "deny":
            ok = False
        elif action == "allow" and not ok:
            raise _err(source, text, ("actions", knob), f"{knob} is pinned or denied elsewhere; drop 'allow' or give "
                       "it a range")  # fmt: skip
        if ok:
            allow.append(knob)
    try:
        bounds = KnobBounds(**{f"{side}_{k}": round(v) for k in RANGE_KNOBS
                               for side, v in (("min", lo[k]), ("max", hi[k]))}, allow=tuple(allow))  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    initial = _initial_knobs(spec, bounds, pinned)
    max_step = _max_step(spec, source, text)
    return Resolved(bounds, initial, pinned, max_step, _container_env(initial, pinned, bounds))


def _initial_knobs(spec: BoundarySpec, bounds: KnobBounds, pinned: dict[str, float]) -> Knobs:
    """Start from the contract's defaults, pinned values first, all inside the bounds."""
    d = Knobs()
    raw = dataclasses.replace(
        d,
        replicas=bounds.min_replicas,
        gomaxprocs=int(pinned.get("gomaxprocs", min(max(d.gomaxprocs, bounds.min_gomaxprocs), bounds.max_gomaxprocs))),
        gomemlimit_mib=int(pinned.get("gomemlimit_mib", bounds.max_gomemlimit_mib)),
        prefetch=spec.kernel.prefetch != "off",
        turbo=spec.kernel.turbo != "off",
    )
    knobs = Knobs.from_array(clamp_array(raw.to_array(), bounds))
    # A pinned value need not be on the ladder.
    changes: dict[str, Any] = {n: int(pinned[n]) for n in ("gogc", "object_pool_size", "conn_pool_size",
                                                          "gomemlimit_mib") if n in pinned}  # fmt: skip
    return dataclasses.replace(knobs, **changes)


def _max_step(spec: BoundarySpec, source: str, text: str | None) -> dict[str, int]:
    given = _set(spec.max_step)
    steps = {"replicas": 2, "gomaxprocs": 1, "rungs": 1, **given}
    ladder_steps = {steps[k] for k in LADDERS if k in given}
    if len(ladder_steps) > 1:
        raise _err(source, text, ("max_step",), f"ladder knobs have different steps {sorted(ladder_steps)}; the "
                   "controller moves all ladders by one 'rungs' limit: give one value as max_step.rungs")  # fmt: skip
    if ladder_steps and "rungs" not in given:
        steps["rungs"] = ladder_steps.pop()
    return {"replicas": steps["replicas"], "gomaxprocs": steps["gomaxprocs"], "rungs": steps["rungs"]}


def _container_env(initial: Knobs, pinned: dict[str, float], bounds: KnobBounds) -> dict[str, str]:
    """GOMAXPROCS, GOGC and GOMEMLIMIT the container starts with."""
    env = {"GOMAXPROCS": str(initial.gomaxprocs), "GOGC": str(initial.gogc)}
    if "gomemlimit_mib" in pinned or bounds.max_gomemlimit_mib < KnobBounds().max_gomemlimit_mib:
        env["GOMEMLIMIT"] = f"{initial.gomemlimit_mib}MiB"
    return env


def resolve(spec: BoundarySpec) -> Resolved:
    """Bounds, allowed knobs, pinned and initial values of a validated spec."""
    return _resolve(spec)


def compile_boundary(spec: BoundarySpec, *, source: str = "<boundary>", text: str | None = None) -> dict[str, Any]:
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


def kubernetes_objects(spec: BoundarySpec, r: Resolved) -> dict[str, dict[str, Any]]:
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
    from rlctl.online.safety import SafetyConfig

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read safety bounds ({exc}); write it with `rlctl boundary compile`") from None
    if data.get("schema") != SAFETY_SCHEMA:
        raise ConfigError(f"{p}: schema {data.get('schema')!r} is not {SAFETY_SCHEMA!r}; recompile the boundary file")
    if data.get("schema_hash") != SCHEMA_HASH:
        raise ConfigError(f"{p}: compiled for contract {data.get('schema_hash')}, this is {SCHEMA_HASH}; recompile it")
    cfg = dict(data["safety"])
    bounds = dict(cfg.pop("bounds"))
    bounds["allow"] = tuple(bounds.get("allow", KNOB_FIELDS))
    return SafetyConfig(bounds=KnobBounds(**bounds), **cfg)


def env_config(compiled_env: dict[str, Any]) -> Any:
    """The :class:`envs.sim.EnvConfig` of a compiled ``env.json`` (imports the simulator)."""
    from envs.sim import EnvConfig, RewardWeights

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
