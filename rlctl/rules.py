"""The boundary rule library: what chaos runs proved about where a strategy stops holding.

A rule says: *under fault K* (of at least some intensity), *with these knob settings or this
load per replica*, *metric M leaves its bound* (P99 above the SLO, or the error rate above its
limit); *prefer* the other side of the knob condition. :mod:`chaos.learn` learns rules from
chaos run reports; this module holds the library file's format, the one definition of the
features rules speak about (:data:`FEATURES`), and the compiled form the safety layer
(:mod:`rlctl.online.safety`) enforces. It imports no chaos backend, so the online loop may use it.

The library is a YAML file a reviewer reads and edits::

    schema: rlctl.rules/v1           # refused if unknown
    settings: {min_support: 5, ...}  # how the rules were learned (chaos.learn.LearnSettings)
    detectors:                       # how the online loop sees each fault in its telemetry
      cpu-stress: [{feature: cfs_throttled_fraction, op: '>=', value: 0.1}]
    rules:                           # numbered, never renumbered; retired rules stay
      - id: 1
        status: active
        fault: cpu-stress
        intensity: [{feature: workers, op: '>=', value: 1}]
        when: [{feature: gomaxprocs, op: '<=', value: 1}]
        breaks: p99_ms
        ...
    candidates: [...]                # learned, but with fewer than min_support runs: no number yet

Online, a rule is enforced while its fault's detector fires on the newest telemetry sample:
fault intensity is not observable there, so the detector stands in for it (conservatively: any
detected fault of the kind). A fault kind without a detector has unenforced rules.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chaos.spec import FaultKind
from rlctl.contract import COL, KNOB_COL
from rlctl.errors import ConfigError
from rlctl.inputs import load_yaml_file
from rlctl.report import write_atomic

#: The library file's schema; a file with another is refused (a newer rlctl wrote it).
SCHEMA = "rlctl.rules/v1"

Op = Literal[">=", "<="]

#: What a rule says broke, and the bound it left.
METRICS: dict[str, str] = {
    "p99_ms": "P99 leaves the SLO",
    "error_rate": "the error rate exceeds its limit",
}

#: Features rules speak about, at the moment a fault hit. Each is a knob, or a knob against the
#: load (``qps_per_replica``: offered requests per second over replicas); the safety layer moves
#: ``knob`` to leave a forbidden region. One definition for the learner and the safety layer.
FEATURES: dict[str, str] = {
    "replicas": "replicas",
    "gomaxprocs": "gomaxprocs",
    "gogc": "gogc",
    "qps_per_replica": "replicas",
}

#: How the online loop sees each fault in the contract's telemetry (any condition fires), from
#: what each fault does (``envs/model/faults.py``; the local injectors): a killed or failed replica
#: fails the requests routed to it, loss and partitions fail requests, CPU stress throttles the
#: replicas' cgroups. Kinds absent here have no telemetry signature the contract carries (memory
#: stress, IO latency, time skew, bandwidth): their rules are learned and listed but enforced only
#: once a reviewer adds a detector. A signature may be shared (errors): then every kind it names
#: counts as detected, the conservative reading.
DEFAULT_DETECTORS: dict[str, list[dict[str, Any]]] = {
    "pod-kill": [{"feature": "error_rate", "op": ">=", "value": 0.05}],
    "pod-failure": [{"feature": "error_rate", "op": ">=", "value": 0.05}],
    "container-kill": [{"feature": "error_rate", "op": ">=", "value": 0.05}],
    "cpu-stress": [{"feature": "cfs_throttled_fraction", "op": ">=", "value": 0.1}],
    "network-delay": [{"feature": "rtt_mean_ms", "op": ">=", "value": 5.0}],
    "network-loss": [{"feature": "error_rate", "op": ">=", "value": 0.01}],
    "network-partition": [{"feature": "error_rate", "op": ">=", "value": 0.05}],
    "fan-failure": [{"feature": "cpu_temp_c", "op": ">=", "value": 85.0}],
    "numa-misplacement": [{"feature": "numa_remote_fraction", "op": ">=", "value": 0.5}],
}

#: The directions a condition may take (the learner's monotonicity prior, stated once): fewer
#: replicas and more load per replica are never safer, so rules say ``replicas <=`` and
#: ``qps_per_replica >=``; GOMAXPROCS and GOGC hurt at both ends (starved or throttled, GC-bound
#: or memory-bound); a tighter SLO is never easier to meet. The run's SLO is context, like the
#: fault's parameters (not observable online; the detector stands in for both). A fault
#: parameter is an intensity: stronger when higher, but for
#: :data:`WEAKER_WHEN_HIGHER`. Without this prior a rule could read "P99 breaks with *less* load".
FEATURE_OPS: dict[str, tuple[str, ...]] = {
    "replicas": ("<=",),
    "gomaxprocs": (">=", "<="),
    "gogc": (">=", "<="),
    "qps_per_replica": (">=",),
    "slo_p99_ms": ("<=",),
}
#: Fault parameters whose fault is weaker when they are higher (a bandwidth cap and its buffers).
WEAKER_WHEN_HIGHER = frozenset({"rate_mbps", "limit_bytes", "buffer_bytes"})

_FAULT_KINDS = tuple(k.value for k in FaultKind)


class Condition(BaseModel):
    """``feature op value``: a fault parameter, a :data:`FEATURES` entry or a telemetry field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    feature: str = Field(min_length=1, max_length=64)
    op: Op
    value: float

    def holds(self, values: Mapping[str, float]) -> bool:
        """True when ``values`` has the feature and it satisfies the condition (a missing or NaN value never does)."""
        v = values.get(self.feature, math.nan)
        if v is None or not math.isfinite(v):
            return False
        return v >= self.value if self.op == ">=" else v <= self.value

    def text(self) -> str:
        return f"{self.feature} {self.op} {_num(self.value)}"


class Experiment(BaseModel):
    """One independent experiment behind a rule (see :func:`chaos.learn.independence_key`)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    backend: str
    scenario: str
    run_id: str
    controllers: list[str] = Field(default_factory=list)
    created: str = ""


class Support(BaseModel):
    """The experiments that support a rule: count, scenarios, backends, first and last seen."""

    model_config = ConfigDict(extra="forbid")

    count: int = 0
    scenarios: list[str] = Field(default_factory=list)
    backends: dict[str, int] = Field(default_factory=dict)
    first_seen: str = ""
    last_seen: str = ""
    experiments: list[Experiment] = Field(default_factory=list)

    @classmethod
    def of(cls, experiments: Sequence[Experiment]) -> Support:
        """The summary of ``experiments``, one entry per independence key (the first one kept)."""
        unique: dict[str, Experiment] = {}
        for e in experiments:
            if e.key in unique:
                merged = sorted(set(unique[e.key].controllers) | set(e.controllers))
                unique[e.key] = unique[e.key].model_copy(update={"controllers": merged})
            else:
                unique[e.key] = e
        exps = sorted(unique.values(), key=lambda e: (e.created, e.key))
        backends: dict[str, int] = {}
        for e in exps:
            backends[e.backend] = backends.get(e.backend, 0) + 1
        created = [e.created for e in exps if e.created]
        return cls(
            count=len(exps),
            scenarios=sorted({e.scenario for e in exps}),
            backends=dict(sorted(backends.items())),
            first_seen=min(created, default=""),
            last_seen=max(created, default=""),
            experiments=exps,
        )


class Retirement(BaseModel):
    """Why a rule left force: the run whose fault window held inside the rule's region."""

    model_config = ConfigDict(extra="forbid")

    run: str
    key: str
    fault: str
    at: str
    reason: str
    values: dict[str, float] = Field(default_factory=dict)
    """The contradicting window's fault parameters and features: a relearned rule that these
    values would satisfy is refused too."""


class Rule(BaseModel):
    """One learned rule (``id`` 0 and status ``candidate`` until it has enough support)."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(default=0, ge=0)
    status: Literal["active", "retired", "candidate"] = "candidate"
    statement: str = ""
    fault: str
    intensity: list[Condition] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)
    breaks: str
    prefer: list[Condition] = Field(default_factory=list)
    enforce: bool = True
    """A reviewer may set false: the rule stays in the library but the safety layer ignores it."""
    support: Support = Field(default_factory=Support)
    evidence: dict[str, Any] = Field(default_factory=dict)
    retired: Retirement | None = None
    note: str = ""
    """Free text for reviewers; kept across relearning."""

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.fault not in _FAULT_KINDS:
            raise ValueError(f"fault {self.fault!r} is not a fault kind; choose from {', '.join(_FAULT_KINDS)}")
        if self.breaks not in METRICS:
            raise ValueError(f"breaks {self.breaks!r}: choose one of {', '.join(METRICS)}")
        for c in [*self.when, *self.prefer]:
            if c.feature not in FEATURES:
                raise ValueError(f"condition on {c.feature!r}: rules speak about {', '.join(FEATURES)}")
        if self.status == "retired" and self.retired is None:
            raise ValueError("a retired rule needs 'retired' (the run that contradicted it)")
        if self.status != "candidate" and self.id < 1:
            raise ValueError(f"an {self.status} rule needs an id >= 1")
        return self

    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """What makes two learned rules the same rule, whatever their thresholds."""
        return (
            self.fault,
            self.breaks,
            tuple(sorted((c.feature, c.op) for c in self.intensity)),
            tuple(sorted((c.feature, c.op) for c in self.when)),
        )

    def matches(self, kind: str, values: Mapping[str, float]) -> bool:
        """True when a fault window of ``kind`` with these parameters and features is in the rule's region."""
        return kind == self.fault and all(c.holds(values) for c in [*self.intensity, *self.when])

    def describe(self) -> str:
        """The rule in words: under what, with what, what breaks, what to prefer."""
        under = f"under {self.fault}" + (
            f" with {' and '.join(c.text() for c in self.intensity)}" if self.intensity else ""
        )
        knobs = f", with {' and '.join(c.text() for c in self.when)}" if self.when else ", whatever the knobs"
        prefer = f"; prefer {' or '.join(c.text() for c in self.prefer)}" if self.prefer else ""
        return f"{under}{knobs}, {METRICS[self.breaks]}{prefer}"


class Library(BaseModel):
    """The library file (:data:`SCHEMA`)."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(default=SCHEMA, alias="schema")
    updated: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    detectors: dict[str, list[Condition]] = Field(
        default_factory=lambda: {k: [Condition(**c) for c in v] for k, v in DEFAULT_DETECTORS.items()}
    )
    rules: list[Rule] = Field(default_factory=list)
    candidates: list[Rule] = Field(default_factory=list)
    runs_read: int = 0
    """Chaos run reports read, summed over every ``rules learn`` (a report read twice counts twice)."""

    @model_validator(mode="after")
    def _check(self) -> Library:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"rule ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
        for r in self.rules:
            if r.status == "candidate":
                raise ValueError(f"rule {r.id} has status candidate; candidates belong under 'candidates'")
        for kind, conds in self.detectors.items():
            if kind not in _FAULT_KINDS:
                raise ValueError(f"detectors: {kind!r} is not a fault kind")
            for c in conds:
                if c.feature not in COL:
                    raise ValueError(f"detectors.{kind}: {c.feature!r} is not a telemetry field")
        return self

    @property
    def next_id(self) -> int:
        return max((r.id for r in self.rules), default=0) + 1

    def rule(self, rule_id: int) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        known = ", ".join(str(r.id) for r in self.rules) or "none"
        raise ConfigError(f"no rule {rule_id} in the library (rules: {known}); see `rlctl rules list`")


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _where(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())


def load_library(path: str | Path) -> Library:
    """Read and validate a library file; errors name the file, the field and the fix."""
    p = Path(path)
    data = load_yaml_file(p, what="rule library")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: a rule library is a mapping with schema, rules, detectors; write one with `rlctl rules learn`"
        )
    schema = data.get("schema")
    if schema != SCHEMA:
        raise ConfigError(
            f"{p}: schema {schema!r} is not {SCHEMA!r}; this rlctl reads {SCHEMA} libraries "
            "(relearn it with `rlctl rules learn`, or use the rlctl that wrote it)"
        )
    try:
        return Library.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: invalid rule library: {_where(exc)}") from None


def to_yaml(data: Any) -> str:
    """YAML as the library writes it: conditions and experiments on one line each."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def library_text(lib: Library) -> str:
    """The library as YAML, with a header that says what the file is."""
    data = lib.model_dump(mode="json", by_alias=True, exclude_none=True)
    head = (
        "# rlctl boundary rule library: learned from chaos run reports by `rlctl rules learn`.\n"
        "# Reviewers may edit thresholds, 'enforce', 'note' and 'detectors'; ids are never reused.\n"
    )
    return head + to_yaml(data)


class _Dumper(yaml.SafeDumper):
    """Conditions and experiments on one line each (``{feature: gomaxprocs, op: <=, value: 1}``)."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = set(data) in ({"feature", "op", "value"}, set(Experiment.model_fields))
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow or None)


_Dumper.add_representer(dict, _represent_dict)


def save_library(lib: Library, path: str | Path) -> Path:
    """Write the library atomically (temporary file + rename: never half-written)."""
    return write_atomic(path, library_text(lib))


# ------------------------------------------------------------------ compiled form for the safety layer


@dataclass(frozen=True)
class SafetyRule:
    """One rule as the safety layer enforces it: while ``detect`` fires, ``when`` is forbidden."""

    id: int
    fault: str
    detect: tuple[Condition, ...]
    when: tuple[Condition, ...]
    statement: str

    def detected(self, sample: Mapping[str, float]) -> str | None:
        """The detector condition that fired on ``sample`` (as text with the value), else None."""
        for c in self.detect:
            if c.holds(sample):
                return f"{c.feature}={_num(round(float(sample[c.feature]), 4))} {c.op} {_num(c.value)}"
        return None


def feature_values(knobs: Mapping[str, float], offered_qps: float) -> dict[str, float]:
    """:data:`FEATURES` of a knob setting under a load (``qps_per_replica`` NaN without a usable load)."""
    out = {name: float(knobs[name]) for name in FEATURES if name in KNOB_COL and name in knobs}
    replicas = float(knobs.get("replicas", math.nan))
    ok = math.isfinite(offered_qps) and offered_qps >= 0 and replicas > 0
    out["qps_per_replica"] = offered_qps / replicas if ok else math.nan
    return out


def compile_rules(lib: Library) -> tuple[SafetyRule, ...]:
    """The active, enforced rules with a knob condition and a detector for their fault."""
    out = []
    for r in lib.rules:
        detect = tuple(lib.detectors.get(r.fault, ()))
        if r.status == "active" and r.enforce and r.when and detect:
            out.append(SafetyRule(r.id, r.fault, detect, tuple(r.when), r.statement or r.describe()))
    return tuple(out)


def unenforced(lib: Library) -> list[tuple[int, str]]:
    """Active rules the safety layer will not enforce, and why (for ``rules list`` and ``control``)."""
    out = []
    for r in lib.rules:
        if r.status != "active":
            continue
        if not r.enforce:
            out.append((r.id, "enforce: false"))
        elif not r.when:
            out.append((r.id, "no knob condition: a lesson, nothing to forbid"))
        elif not lib.detectors.get(r.fault):
            out.append((r.id, f"no detector for {r.fault} under 'detectors'"))
    return out


def load_safety_rules(path: str | Path) -> tuple[SafetyRule, ...]:
    """The compiled rules of the library at ``path`` (``rlctl control --rules``)."""
    return compile_rules(load_library(path))
