"""The limits file's schema: the SLO objectives (:func:`parse_objective`), Kubernetes quantities
(:func:`parse_quantity`) and the pydantic models of one service's file (:class:`LimitsSpec`).
Part of :mod:`rlctl.dsl`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from rlctl.contract import (
    KNOB_FIELDS,
    TELEMETRY_FIELDS,
)

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
    controller: Literal["act", "advise", "shadow"] = "act"
    """How ``rlctl control --mode`` runs for this Deployment: ``act`` (it scales it), ``advise`` (an
    autoscaler scales it on rlctl's advice) or ``shadow`` (the autoscaler scales it, rlctl records)."""
    autoscaler: Literal["none", "hpa", "keda"] | None = None
    """What ``rlctl limits compile`` emits for the Deployment's replicas; default ``none`` in act mode
    (the controller is the one writer), ``hpa`` otherwise. In advise mode ``hpa`` is an HPA on the
    external metric ``rlctl_desired_replicas`` and ``keda`` a ScaledObject with a Prometheus trigger;
    in shadow mode ``hpa`` is the CPU HPA the shadow is compared with."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """The Prometheus a KEDA ScaledObject asks for rlctl's advice (``autoscaler: keda``)."""

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


class LimitsSpec(_Strict):
    """One service's limits file, validated."""

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
    def _cross(self) -> LimitsSpec:
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
