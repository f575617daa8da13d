"""The scenario vocabulary: loads and faults, in Chaos Mesh's words. Pure data, no I/O.

A scenario is a duration, a load and a list of faults. Fault kinds map one to one onto
Chaos Mesh (``chaos-mesh.org/v1alpha1``) kinds and actions:

=====================  ==============  ================  =============================
fault kind             Chaos Mesh kind action            parameters
=====================  ==============  ================  =============================
network-delay          NetworkChaos    delay             latency_ms, jitter_ms, correlation
network-loss           NetworkChaos    loss              loss_percent, correlation
network-partition      NetworkChaos    partition         direction
network-bandwidth      NetworkChaos    bandwidth         rate_mbps, limit_bytes, buffer_bytes
cpu-stress             StressChaos     (cpu stressor)    workers, load_percent
memory-stress          StressChaos     (memory stressor) workers, size_mib
pod-kill               PodChaos        pod-kill          restart_delay_s (grace_period_s)
pod-failure            PodChaos        pod-failure       (none)
container-kill         PodChaos        container-kill    container
io-latency             IOChaos         latency           delay_ms, percent, path, volume_path
time-skew              TimeChaos       (time offset)     offset_ms
fan-failure            (none)          simulator only    r_factor
numa-misplacement      (none)          simulator only    remote_fraction
=====================  ==============  ================  =============================

Network faults may name a ``target`` selector: the peers whose traffic with the selected
pods is affected (Chaos Mesh ``spec.target``). A partition needs one on Kubernetes; the
simulator and the local backend ignore it.

A fault with ``repeat`` recurs (a Chaos Mesh ``Schedule``); a ``sequence`` is a list of
faults run one after another (a Chaos Mesh serial ``Workflow``). :meth:`Scenario.windows`
expands both into concrete :class:`FaultWindow` s for the simulator and the local backend.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlctl.contract import DEFAULT_SLO_P99_MS
from rlctl.errors import ConfigError
from rlctl.inputs import load_yaml_file


def _not_bool(value: Any) -> Any:
    # YAML's true/yes/on are booleans, and pydantic would read them as 1: a typo, not a number.
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean; give a number")
    return value


#: A number in a scenario: ints, floats and numeric text (YAML 1.1 reads ``1e3`` as text), never a boolean.
Number = Annotated[float, BeforeValidator(_not_bool)]
#: A whole number in a scenario, never a boolean.
Count = Annotated[int, BeforeValidator(_not_bool)]

#: Load traces shipped inside this package (``chaos/traces``, see its README for provenance).
TRACES_DIR = Path(__file__).resolve().parent / "traces"
#: A scenario names a shipped trace as ``builtin:<file name>``.
BUILTIN_PREFIX = "builtin:"
#: The NASA Kennedy Space Center trace, July-August 1995, requests per minute.
NASA_TRACE = "nasa-1995-requests-per-minute.txt.gz"


def builtin_trace(name: str = NASA_TRACE) -> Path:
    """The path of a trace shipped with rlctl; a clear error naming the file if it is absent.

    Never a substitute: a suite or scenario that replays a trace must replay that trace, so a
    broken installation stops here instead of quietly running another load.
    """
    path = TRACES_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in TRACES_DIR.glob("*") if p.is_file() and p.name != "README.md")
        raise ConfigError(
            f"{BUILTIN_PREFIX}{name}: no such shipped trace in {TRACES_DIR} (shipped: {', '.join(shipped) or 'none'}); "
            "name one of those, or reinstall rlctl if the file was removed from the installation"
        )
    return path


def file_stem(name: str) -> str:
    """``name`` as one safe file-name component: characters other than letters, digits, ``.``,
    ``_`` and ``-`` become ``-``, no leading dot or dash, at most 100 characters; a scenario named
    ``../x`` writes ``x.png`` in the output folder, never outside it."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")[:100]
    return stem or "scenario"


class FaultKind(StrEnum):
    NETWORK_DELAY = "network-delay"
    NETWORK_LOSS = "network-loss"
    NETWORK_PARTITION = "network-partition"
    NETWORK_BANDWIDTH = "network-bandwidth"
    CPU_STRESS = "cpu-stress"
    MEMORY_STRESS = "memory-stress"
    POD_KILL = "pod-kill"
    POD_FAILURE = "pod-failure"
    CONTAINER_KILL = "container-kill"
    IO_LATENCY = "io-latency"
    TIME_SKEW = "time-skew"
    FAN_FAILURE = "fan-failure"
    NUMA_MISPLACEMENT = "numa-misplacement"


#: Chaos Mesh kind and action for each fault kind; None for simulator-only faults.
CHAOS_MESH_KIND: dict[FaultKind, tuple[str, str] | None] = {
    FaultKind.NETWORK_DELAY: ("NetworkChaos", "delay"),
    FaultKind.NETWORK_LOSS: ("NetworkChaos", "loss"),
    FaultKind.NETWORK_PARTITION: ("NetworkChaos", "partition"),
    FaultKind.NETWORK_BANDWIDTH: ("NetworkChaos", "bandwidth"),
    FaultKind.CPU_STRESS: ("StressChaos", "cpu"),
    FaultKind.MEMORY_STRESS: ("StressChaos", "memory"),
    FaultKind.POD_KILL: ("PodChaos", "pod-kill"),
    FaultKind.POD_FAILURE: ("PodChaos", "pod-failure"),
    FaultKind.CONTAINER_KILL: ("PodChaos", "container-kill"),
    FaultKind.IO_LATENCY: ("IOChaos", "latency"),
    FaultKind.TIME_SKEW: ("TimeChaos", "time-offset"),
    FaultKind.FAN_FAILURE: None,
    FaultKind.NUMA_MISPLACEMENT: None,
}

SIM_ONLY: frozenset[FaultKind] = frozenset(k for k, v in CHAOS_MESH_KIND.items() if v is None)

#: Fault kinds that act on traffic (Chaos Mesh NetworkChaos) and may name a ``target``.
NETWORK_KINDS: frozenset[FaultKind] = frozenset(
    k for k, v in CHAOS_MESH_KIND.items() if v is not None and v[0] == "NetworkChaos"
)

#: Parameters each fault kind accepts, with defaults. Anything else is an error.
FAULT_PARAMS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.NETWORK_DELAY: {"latency_ms": 50.0, "jitter_ms": 10.0, "correlation": 25.0},
    FaultKind.NETWORK_LOSS: {"loss_percent": 5.0, "correlation": 25.0},
    FaultKind.NETWORK_PARTITION: {"direction": "to", "fraction": 1.0},
    FaultKind.NETWORK_BANDWIDTH: {"rate_mbps": 10.0, "limit_bytes": 20971520, "buffer_bytes": 10000},
    FaultKind.CPU_STRESS: {"workers": 1, "load_percent": 100},
    FaultKind.MEMORY_STRESS: {"workers": 1, "size_mib": 256},
    FaultKind.POD_KILL: {"restart_delay_s": 20.0, "grace_period_s": 0},
    FaultKind.POD_FAILURE: {},
    FaultKind.CONTAINER_KILL: {"container": "gosvc", "restart_delay_s": 10.0},
    FaultKind.IO_LATENCY: {"delay_ms": 10.0, "percent": 100, "path": "/data/**", "volume_path": "/data"},
    FaultKind.TIME_SKEW: {"offset_ms": -600000},
    FaultKind.FAN_FAILURE: {"r_factor": 3.0},
    FaultKind.NUMA_MISPLACEMENT: {"remote_fraction": 0.8},
}

#: Limits every command applies to a scenario (render, simulate, every chaos backend, eval): one
#: schema, so a scenario one command accepts is never refused by another.
MAX_SCENARIO_S = 7 * 86400.0
#: Offered load, requests per second: far above anything one service or this host serves.
MAX_QPS = 1e7
#: Faults listed in one scenario, steps in one sequence, and fault windows once repeats expand.
MAX_FAULTS = 1000
MAX_SEQUENCES = 100
MAX_WINDOWS = 10_000
MAX_NAME_LEN = 253
MAX_DESCRIPTION_LEN = 2000
#: Names are display text (scenario, fault and sequence names): anything printable. Object names
#: (:func:`chaos.mesh.object_name`) and file names (:func:`file_stem`) are derived from them.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"

#: Upper bound of each numeric fault parameter (the lower bound is 0). From the Chaos Mesh CRDs
#: where they state one (stress workers <= 8192; bandwidth limit and buffer int32), else from what
#: the fault still means (a delay of a minute, a day's restart delay).
PARAM_MAX: dict[str, float] = {
    "latency_ms": 60_000, "jitter_ms": 60_000, "correlation": 100, "loss_percent": 100, "fraction": 1,
    "rate_mbps": 100_000, "limit_bytes": 2**31 - 1, "buffer_bytes": 2**31 - 1, "workers": 8192,
    "load_percent": 100, "size_mib": 1 << 20, "restart_delay_s": 86_400, "grace_period_s": 86_400,
    "delay_ms": 60_000, "percent": 100, "offset_ms": 1e10, "r_factor": 100, "remote_fraction": 1,
}  # fmt: skip
#: Parameters that are whole numbers (Chaos Mesh's integer fields).
INTEGER_PARAMS = frozenset({"workers", "limit_bytes", "buffer_bytes", "grace_period_s"})
#: String parameters and their longest value.
MAX_PARAM_STR = 253

_NONNEGATIVE = {
    "latency_ms", "jitter_ms", "loss_percent", "rate_mbps", "limit_bytes", "buffer_bytes",
    "workers", "load_percent", "size_mib", "restart_delay_s", "grace_period_s", "delay_ms",
    "percent", "r_factor", "remote_fraction", "correlation", "fraction",
}  # fmt: skip
_PERCENT = {"loss_percent", "load_percent", "percent", "correlation"}


class Selector(BaseModel):
    """Which pods (Kubernetes) or replicas (local, sim) a fault hits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = Field(default=None, max_length=63)
    labels: dict[str, str] = Field(default_factory=lambda: {"app": "gosvc"}, max_length=32)
    mode: Literal["one", "all", "fixed", "fixed-percent", "random-max-percent"] = "one"
    value: str | None = Field(default=None, max_length=63)


class Repeat(BaseModel):
    """Recurrence: the fault starts every ``every_s`` seconds, ``count`` times."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    every_s: Number = Field(gt=0, le=MAX_SCENARIO_S)
    count: Count = Field(default=3, ge=1, le=MAX_WINDOWS)


class FaultSpec(BaseModel):
    """One fault: what, when (seconds from scenario start), for how long, on whom."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: FaultKind
    start_s: Number = Field(ge=0, le=MAX_SCENARIO_S)
    duration_s: Number = Field(gt=0, le=MAX_SCENARIO_S)
    selector: Selector = Field(default_factory=Selector)
    params: dict[str, Any] = Field(default_factory=dict)
    repeat: Repeat | None = None
    #: Free text (the renderer derives object names from it), without control characters.
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LEN, pattern=TEXT_PATTERN)
    #: Network faults only: the peers whose traffic with the selected pods is affected.
    target: Selector | None = None

    @model_validator(mode="after")
    def _check_params(self) -> FaultSpec:
        if self.target is not None and self.kind not in NETWORK_KINDS:
            raise ValueError(
                f"'target' applies to network faults only ({', '.join(sorted(k.value for k in NETWORK_KINDS))}), "
                f"not to {self.kind.value!r}; remove it"
            )
        allowed = FAULT_PARAMS[self.kind]
        unknown = set(self.params) - set(allowed)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for fault kind {self.kind.value!r}; "
                f"allowed: {sorted(allowed) or 'none'}"
            )
        for key, value in self.params.items():
            default = allowed[key]
            if isinstance(default, str):
                if not isinstance(value, str) or len(value) > MAX_PARAM_STR:
                    raise ValueError(
                        f"parameter {key}={value!r} of {self.kind.value!r} must be a text of at most "
                        f"{MAX_PARAM_STR} characters"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} must be a finite number")
            if key in _NONNEGATIVE and value < 0:
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} must be a number >= 0")
            if key in _PERCENT and value > 100:
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} is a percentage: use 0..100")
            hi = PARAM_MAX.get(key)
            if hi is not None and abs(value) > hi:
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} is out of range: at most {hi:g}")
            if key in INTEGER_PARAMS and not float(value).is_integer():
                raise ValueError(f"parameter {key}={value!r} of {self.kind.value!r} must be a whole number")
        if self.kind is FaultKind.NETWORK_PARTITION and self.params.get("direction", "to") not in (
            "to",
            "from",
            "both",
        ):
            raise ValueError("parameter direction of 'network-partition' must be one of to, from, both")
        return self

    def param(self, key: str) -> Any:
        """The parameter's value, or its documented default."""
        return self.params.get(key, FAULT_PARAMS[self.kind][key])

    @property
    def sim_only(self) -> bool:
        return self.kind in SIM_ONLY


class FaultSequence(BaseModel):
    """Faults run one after another from ``start_s`` (a serial Chaos Mesh Workflow)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(default="sequence", min_length=1, max_length=MAX_NAME_LEN, pattern=TEXT_PATTERN)
    start_s: Number = Field(default=0.0, ge=0, le=MAX_SCENARIO_S)
    gap_s: Number = Field(default=0.0, ge=0, le=MAX_SCENARIO_S)
    steps: list[FaultSpec] = Field(min_length=1, max_length=MAX_FAULTS)


class LoadSpec(BaseModel):
    """Offered load. ``kind`` picks a generator in :mod:`envs.loads`.

    - ``constant``: ``qps``
    - ``diurnal``: ``base_qps`` .. ``peak_qps`` over ``period_s`` (a day by default)
    - ``ramp``: ``start_qps`` to ``end_qps`` linearly over the scenario
    - ``step``: ``base_qps``, then ``step_qps`` from ``at_s``
    - ``flash``: ``base_qps`` with a flash crowd to ``peak_qps`` at ``at_s``, rising over
      ``rise_s`` and decaying with time constant ``decay_s``
    - ``trace``: replay ``path`` (one value per line, requests per ``interval_s``) scaled
      so its peak is ``peak_qps``, starting ``offset_s`` into the trace; ``builtin:<file>``
      names a trace shipped with rlctl (:func:`builtin_trace`)
    ``noise`` adds Poisson noise to the per-step request count (on by default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["constant", "diurnal", "ramp", "step", "flash", "trace"] = "constant"
    qps: Number = Field(default=1000.0, ge=0, le=MAX_QPS)
    base_qps: Number = Field(default=500.0, ge=0, le=MAX_QPS)
    peak_qps: Number = Field(default=2000.0, ge=0, le=MAX_QPS)
    period_s: Number = Field(default=86400.0, gt=0, le=365 * 86400.0)
    phase_s: Number = Field(default=0.0, ge=-365 * 86400.0, le=365 * 86400.0)
    start_qps: Number = Field(default=100.0, ge=0, le=MAX_QPS)
    end_qps: Number = Field(default=3000.0, ge=0, le=MAX_QPS)
    step_qps: Number = Field(default=2000.0, ge=0, le=MAX_QPS)
    at_s: Number = Field(default=600.0, ge=0, le=MAX_SCENARIO_S)
    rise_s: Number = Field(default=30.0, gt=0, le=MAX_SCENARIO_S)
    decay_s: Number = Field(default=300.0, gt=0, le=MAX_SCENARIO_S)
    path: str | None = Field(default=None, max_length=4096)
    interval_s: Number = Field(default=60.0, gt=0, le=86400.0)
    #: Seconds into the trace (in trace time); a year of any trace is far past its end.
    offset_s: Number = Field(default=0.0, ge=0, le=365 * 86400.0 * 100)
    time_scale: Number = Field(default=1.0, gt=0, le=10_000.0)
    noise: bool = True

    @field_validator("path")
    @classmethod
    def _resolve_builtin(cls, path: str | None) -> str | None:
        if path is not None and path.startswith(BUILTIN_PREFIX):
            try:
                return str(builtin_trace(path.removeprefix(BUILTIN_PREFIX)))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return path

    @model_validator(mode="after")
    def _check_trace(self) -> LoadSpec:
        if self.kind == "trace" and not self.path:
            raise ValueError("a 'trace' load needs 'path': a file with one request count per line")
        return self


ScenarioKind = Literal["steady", "bursty", "fault"]


class Scenario(BaseModel):
    """A load, faults and an SLO over ``duration_s`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=MAX_NAME_LEN, pattern=TEXT_PATTERN)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LEN)  # free text, newlines allowed
    kind: ScenarioKind = "steady"
    duration_s: Number = Field(default=3600.0, gt=0, le=MAX_SCENARIO_S)
    slo_p99_ms: Number = Field(default=DEFAULT_SLO_P99_MS, gt=0, le=600_000.0)
    load: LoadSpec = Field(default_factory=LoadSpec)
    faults: list[FaultSpec] = Field(default_factory=list, max_length=MAX_FAULTS)
    sequences: list[FaultSequence] = Field(default_factory=list, max_length=MAX_SEQUENCES)

    @model_validator(mode="after")
    def _check_faults_fire(self) -> Scenario:
        # A fault that starts at or after the end never fires: a silent no-op in every backend.
        for i, f in enumerate(self.faults):
            if f.start_s >= self.duration_s:
                raise ValueError(
                    f"faults[{i}] ({f.kind.value}) starts at {f.start_s:g} s, at or after the scenario's end "
                    f"({self.duration_s:g} s), so it would never fire; start it earlier or lengthen duration_s"
                )
        for i, seq in enumerate(self.sequences):
            if seq.start_s + seq.steps[0].start_s >= self.duration_s:
                raise ValueError(
                    f"sequences[{i}] ({seq.name}) starts at or after the scenario's end ({self.duration_s:g} s), "
                    "so it would never run; start it earlier or lengthen duration_s"
                )
        windows = sum(f.repeat.count if f.repeat else 1 for f in self.faults)
        windows += sum(len(seq.steps) for seq in self.sequences)
        if windows > MAX_WINDOWS:
            raise ValueError(
                f"the faults expand into {windows:,} windows (repeats and sequence steps counted), "
                f"over the limit of {MAX_WINDOWS:,}; use fewer or longer faults"
            )
        return self

    def windows(self) -> list[FaultWindow]:
        """Every fault occurrence as a concrete window, repeats and sequences expanded."""
        out: list[FaultWindow] = []
        for f in self.faults:
            reps = f.repeat.count if f.repeat else 1
            every = f.repeat.every_s if f.repeat else 0.0
            for i in range(reps):
                start = f.start_s + i * every
                if start < self.duration_s:
                    out.append(FaultWindow(f, start, min(start + f.duration_s, self.duration_s)))
        for seq in self.sequences:
            t = seq.start_s
            for step in seq.steps:
                start = t + step.start_s
                if start < self.duration_s:
                    out.append(FaultWindow(step, start, min(start + step.duration_s, self.duration_s)))
                t = start + step.duration_s + seq.gap_s
        return sorted(out, key=lambda w: w.start_s)

    def all_faults(self) -> list[FaultSpec]:
        return [*self.faults, *(s for seq in self.sequences for s in seq.steps)]


class FaultWindow:
    """One occurrence of a fault: ``[start_s, end_s)`` seconds from scenario start."""

    __slots__ = ("end_s", "spec", "start_s")

    def __init__(self, spec: FaultSpec, start_s: float, end_s: float) -> None:
        self.spec = spec
        self.start_s = float(start_s)
        self.end_s = float(end_s)

    @property
    def kind(self) -> FaultKind:
        return self.spec.kind

    def __repr__(self) -> str:
        return f"FaultWindow({self.kind.value}, {self.start_s:g}-{self.end_s:g}s)"


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def scenario_from_dict(data: Any, *, source: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping; errors name ``source``, the field and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario must be a mapping with name, duration_s, load, faults")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"field {_format_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid scenario: {problems}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file; a relative trace path is taken from the file's folder.

    A trace that is not there is an error naming the file here, before anything runs.
    """

    p = Path(path)
    data = load_yaml_file(p, what="scenario file")
    scenario = scenario_from_dict(data, source=str(p))
    if scenario.load.path:
        trace = Path(scenario.load.path)
        candidate = trace if trace.is_absolute() else (p.parent / trace).resolve()
        if not candidate.is_file():
            raise ConfigError(
                f"{p}: load.path {scenario.load.path!r}: no such file ({candidate}); give a path relative to the "
                f"scenario file, an absolute path, or {BUILTIN_PREFIX}<name> for a trace shipped with rlctl "
                f"(e.g. {BUILTIN_PREFIX}{NASA_TRACE})"
            )
        scenario = scenario.model_copy(update={"load": scenario.load.model_copy(update={"path": str(candidate)})})
    return scenario
