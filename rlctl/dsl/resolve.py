"""Resolving a validated spec to contract types (:class:`Resolved`: bounds, allowed knobs, pinned
and initial values, step limits, container environment), with the semantic checks that need the
whole file, and :func:`load_limits`, which reads, validates and resolves a file. Part of
:mod:`rlctl.dsl`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlctl.contract import (
    KNOB_FIELDS,
    LADDERS,
    KnobBounds,
    Knobs,
    clamp_array,
)
from rlctl.dsl.parse import (
    _node_line,
    spec_from_text,
)
from rlctl.dsl.schema import (
    _MEM_EXPR_RE,
    RANGE_KNOBS,
    LimitsSpec,
    _set,
    parse_quantity,
)
from rlctl.errors import ConfigError
from rlctl.inputs import read_text

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
    return ConfigError(f"invalid limits file:\n  {source}:{line}: {'.'.join(map(str, loc))}: {msg}")


def _resolve_value(spec: LimitsSpec, knob: str, raw: Any, *, source: str, text: str | None) -> float:
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


def _resolve(spec: LimitsSpec, *, source: str = "<limits>", text: str | None = None) -> Resolved:
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


def _initial_knobs(spec: LimitsSpec, bounds: KnobBounds, pinned: dict[str, float]) -> Knobs:
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


def _max_step(spec: LimitsSpec, source: str, text: str | None) -> dict[str, int]:
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


def resolve(spec: LimitsSpec) -> Resolved:
    """Bounds, allowed knobs, pinned and initial values of a validated spec."""
    return _resolve(spec)


def load_limits(path: str | Path) -> LimitsSpec:
    """Read and validate a limits YAML file."""
    p = Path(path)
    text = read_text(p, what="limits file")
    spec = spec_from_text(text, source=str(p))
    _resolve(spec, source=str(p), text=text)  # semantic checks that need the whole spec
    return spec
