"""The one controller registry: every controller name, parsed, refused and built in one place.

``rlctl eval --baseline``, ``rlctl simulate --controller``, ``rlctl chaos run -c``, ``rlctl
validate-real -c`` and ``rlctl control --policy`` all read controller names here, so a name
either works in each of them or is refused with the same message. The grammar
(:data:`GRAMMAR`)::

    ppo:NAME                 the learned policy: ppo:default (the shipped one) or ppo:PATH (an artifact folder)
    ppo+guard:NAME           the policy under the SLO guard (policies/guard.py)
    hpa                      the Kubernetes HPA port (policies/baselines.py), target 0.7
    hpa-<target>             the HPA with a fixed CPU target in (0, 1.5], e.g. hpa-0.6
    hpa-tuned                the HPA with the target a simulator sweep of the scenario picks
    threshold, static        the seed's threshold rule; fixed knobs
    oracle                   the hindsight lower bound (knows the simulator's future load and faults)
    oracle-reactive[-<h>]    the oracle's capacity model without foresight, headroom h in [1, 4]
    capacity[-<h>]           replicas = ceil(load x h / each replica's measured capacity) (policies/residual.py)
    NAME+guard               hpa, hpa-<target>, threshold, static, oracle-reactive, capacity under the SLO guard

:func:`parse` turns a name into a :class:`ControllerSpec`; :func:`parse_all` also refuses
duplicates. :func:`check_runs` is where a name cannot run (the oracles plan with the
simulator's model of the service: the simulator only; ``rlctl control`` runs a policy or the
HPA rule); :func:`build` makes the :class:`~policies.base.Controller` for a :class:`Context`
(the environment's config, the profile, where it runs, how ``hpa-tuned`` is tuned), and
:func:`control_plan` what ``rlctl control``'s loop runs. Every refusal is a
:class:`~rlctl.errors.ConfigError` worded here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from policies.base import Controller
from policies.baselines import HPAConfig, HPAController, StaticController, ThresholdController
from policies.guard import GuardConfig, SLOGuard
from policies.residual import CapacityRule, RuleConfig
from rlctl.contract import KnobBounds
from rlctl.errors import ConfigError

if TYPE_CHECKING:  # types only: the CLI imports this module for its help texts, without the simulator
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig

Kind = Literal["ppo", "hpa", "hpa-tuned", "threshold", "static", "oracle", "oracle-reactive", "capacity"]
#: Where a controller runs: the simulator (eval, simulate, chaos run --backend sim), a live chaos
#: backend, or ``rlctl control``'s loop.
Where = Literal["sim", "local", "k8s", "control"]

#: Every controller name, for help texts.
NAMES: tuple[str, ...] = (
    "ppo:default", "ppo:PATH", "ppo+guard:default", "ppo+guard:PATH", "hpa", "hpa-tuned", "hpa-<target>",
    "threshold", "static", "oracle", "oracle-reactive[-<headroom>]", "capacity[-<headroom>]", "NAME+guard",
)  # fmt: skip
#: The grammar, as every refusal of a name ends.
GRAMMAR = (
    "use ppo:default, ppo:PATH (an artifact folder), ppo+guard:default|PATH, hpa, hpa-tuned, hpa-<target> "
    "(a CPU target in (0, 1.5], e.g. hpa-0.6), threshold, static, oracle, oracle-reactive[-<headroom>] or "
    "capacity[-<headroom>] (a headroom in [1, 4], e.g. oracle-reactive-1.3); hpa, hpa-<target>, threshold, "
    "static, oracle-reactive and capacity also as NAME+guard, under the SLO guard (e.g. hpa-0.6+guard)"
)
#: One line for a CLI option's help.
HELP = (
    "ppo:default, ppo:PATH, ppo+guard:default|PATH, hpa, hpa-tuned, hpa-<target> (e.g. hpa-0.6), threshold, "
    "static, oracle, oracle-reactive[-<headroom>] and capacity[-<headroom>] (the simulator only); NAME+guard runs "
    "hpa, hpa-<target>, threshold, static, oracle-reactive or capacity under the SLO guard (e.g. hpa-0.6+guard)."
)
#: Where the simulator-only controllers run.
SIM_ONLY = "rlctl eval, rlctl simulate, rlctl chaos run --backend sim"
#: What ``rlctl control`` runs.
CONTROL_RUNS = "a policy (NAME, ppo:NAME, ppo+guard:NAME) or the HPA rule (hpa, hpa-<target>, each also +guard)"
_PLAIN: dict[str, Kind] = {
    "hpa": "hpa", "hpa-tuned": "hpa-tuned", "threshold": "threshold", "static": "static", "oracle": "oracle",
}  # fmt: skip


@dataclass(frozen=True)
class ControllerSpec:
    """A parsed controller name.

    ``name`` is the name as given (the controller's name in every report); ``param`` the
    HPA's CPU target (``hpa-<target>``; None: the HPA's default) or the reactive oracle's
    headroom; ``artifact`` the policy's artifact reference (``default`` or a folder).
    """

    name: str
    kind: Kind
    param: float | None = None
    guard: bool = False
    artifact: str | None = None

    @property
    def sim_only(self) -> bool:
        """The oracles plan with the simulator's model of the service."""
        return self.kind in ("oracle", "oracle-reactive", "capacity")


def refuse(name: str, why: str) -> ConfigError:
    """The error for a name that is not in the grammar: why, then the grammar."""
    return ConfigError(f"controller {name!r}: {why}; {GRAMMAR}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse(name: str, *, bare_is_policy: bool = False) -> ControllerSpec:
    """The :class:`ControllerSpec` of ``name``; :class:`ConfigError` with :data:`GRAMMAR` if it is none.

    ``bare_is_policy`` (``--policy`` options): ``default``, a path with a ``/`` or an existing
    folder is a policy's artifact reference, i.e. ``ppo:VALUE``; anything else must be a name.
    """
    for prefix, guard in (("ppo:", False), ("ppo+guard:", True)):
        if name.startswith(prefix):
            ref = name.removeprefix(prefix)
            if not ref:
                raise refuse(name, f"give the policy after {prefix} (default or an artifact folder)")
            return ControllerSpec(name, "ppo", guard=guard, artifact=ref)
    if name.endswith("+guard"):
        inner = parse(name.removesuffix("+guard"))
        if inner.kind in ("hpa-tuned", "oracle"):
            how = "tuned" if inner.kind == "hpa-tuned" else "planned"
            raise refuse(name, f"{inner.name} is {how} in hindsight, so the SLO guard does not wrap it")
        if inner.guard or inner.kind == "ppo":
            raise refuse(name, "the SLO guard is written once (ppo+guard:NAME for the policy)")
        return dataclasses.replace(inner, name=name, guard=True)
    if name in _PLAIN:
        return ControllerSpec(name, _PLAIN[name])
    if name.startswith("hpa-"):
        target = _number(name.removeprefix("hpa-"))
        if not 0.0 < target <= 1.5:
            raise refuse(name, "the CPU target after hpa- must be a number in (0, 1.5]")
        return ControllerSpec(name, "hpa", param=target)
    for kind in ("oracle-reactive", "capacity"):  # both take an optional headroom: NAME[-<h>]
        if name == kind or name.startswith(f"{kind}-"):
            rest = name.removeprefix(kind).removeprefix("-")
            headroom = _number(rest) if rest else 1.0
            if not 1.0 <= headroom <= 4.0:
                raise refuse(name, f"the headroom after {kind}- must be a number in [1, 4]")
            return ControllerSpec(name, kind, param=headroom)  # type: ignore[arg-type]
    if bare_is_policy and (name == "default" or "/" in name or os.path.exists(name)):
        return ControllerSpec(f"ppo:{name}", "ppo", artifact=name)
    raise refuse(name, "unknown controller")


def parse_all(names: Sequence[str]) -> list[ControllerSpec]:
    """Every name parsed; a name given twice is refused (each controller runs once)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"controller {name!r} is given twice; each controller runs once")
        seen.add(name)
    return [parse(n) for n in names]


def check_runs(spec: ControllerSpec, where: Where) -> None:
    """Refuse ``spec`` where it cannot run, in the same words whoever asks."""
    if spec.sim_only and where != "sim":
        knows = {
            "oracle": "the simulator's future load and faults",
            "oracle-reactive": "the simulator's capacity model",
            "capacity": "each replica's capacity measured off the simulator's model (a live capacity input is "
            "not wired yet)",
        }[spec.kind]
        raise ConfigError(f"controller {spec.name!r} plans with {knows}; it runs in the simulator only: {SIM_ONLY}")
    if where != "control" or spec.kind in ("ppo", "hpa"):
        return
    if spec.kind == "hpa-tuned":
        why = "its CPU target is tuned by a simulator sweep of the scenario it runs, and control has no scenario"
        raise ConfigError(
            f"controller {spec.name!r} does not run in rlctl control: {why}; use hpa-<target> (e.g. hpa-0.6)"
        )
    raise ConfigError(
        f"controller {spec.name!r} does not run in rlctl control, which runs {CONTROL_RUNS}; "
        f"{spec.name} runs in rlctl eval, rlctl simulate and rlctl chaos run"
    )


# ------------------------------------------------------------------ building


@dataclass(frozen=True)
class Context:
    """What building a controller needs from its caller.

    ``config`` carries the SLO (the guard's and the oracles'), the knob bounds and the
    initial knobs; ``profile`` the simulated service (an HPA's pod start, the static
    baseline's GOMAXPROCS). ``where`` refuses what cannot run there (:func:`check_runs`);
    on a live backend ``static`` keeps ``config.initial_knobs`` as they are. ``tune_hpa``
    returns ``hpa-tuned``'s CPU target (a simulator sweep of the caller's scenario); without
    it ``hpa-tuned`` cannot be built (``rlctl eval`` sweeps it itself, per scenario).
    """

    config: EnvConfig
    profile: ServiceProfile
    where: Where = "sim"
    tune_hpa: Callable[[], float] | None = None


def build(name: str | ControllerSpec, ctx: Context) -> tuple[Controller, dict[str, Any]]:
    """The controller for ``name`` in ``ctx``, and facts about it for a report."""
    spec = parse(name) if isinstance(name, str) else name
    check_runs(spec, ctx.where)
    if spec.kind == "ppo":
        # A policy runs on torch and SB3; its manifest models (pydantic) would add 0.3 s to every
        # rlctl start, and the CLI imports this module for its help texts.
        from policies.ppo import PPOController, load_policy, trained_with_guard  # local: torch/SB3 path

        assert spec.artifact is not None
        ppo = load_policy(spec.artifact, name=spec.name)
        loaded = ppo if isinstance(ppo, PPOController) else getattr(ppo, "inner", None)
        assert isinstance(loaded, PPOController)
        facts: dict[str, Any] = {"artifact": str(loaded.artifact.path)}
        if trained_with_guard(loaded):
            if spec.guard:
                raise refuse(spec.name, "this policy was trained under the SLO guard and always runs under it")
            return ppo, {**facts, "guard": "trained with it (policies/guard.py defaults)"}
        if not spec.guard:
            return ppo, facts
        return _guarded(ppo, spec, ctx), {**facts, "guard": "policies/guard.py defaults"}
    inner, facts = _baseline(spec, ctx)
    if not spec.guard:
        return inner, facts
    return _guarded(inner, spec, ctx), {**facts, "guard": "policies/guard.py defaults"}


def make_baseline(name: str, config: EnvConfig, profile: ServiceProfile) -> Controller:
    """The controller ``name`` in the simulator with ``config`` and ``profile`` (see :func:`build`)."""
    return build(name, Context(config, profile))[0]


def _guarded(inner: Controller, spec: ControllerSpec, ctx: Context) -> Controller:
    return SLOGuard(inner, GuardConfig(slo_p99_ms=ctx.config.slo_p99_ms), name=spec.name)


def _baseline(spec: ControllerSpec, ctx: Context) -> tuple[Controller, dict[str, Any]]:
    config, profile = ctx.config, ctx.profile
    base = spec.name.removesuffix("+guard") if spec.guard else spec.name
    if spec.kind == "hpa":
        hpa = HPAConfig(max_replicas=config.bounds.max_replicas, pod_ready_s=profile.replica_start_s)
        if spec.param is not None:
            hpa = dataclasses.replace(hpa, target_cpu=spec.param)
        return HPAController(hpa, name=base), {}
    if spec.kind == "hpa-tuned":
        if ctx.tune_hpa is None:
            raise ConfigError(
                "controller 'hpa-tuned': its CPU target is tuned by a simulator sweep of the scenario it runs; "
                "give the context a tuner (policies.evaluate.tuned_hpa)"
            )
        target = ctx.tune_hpa()
        hpa = HPAConfig(target_cpu=target, max_replicas=config.bounds.max_replicas)
        return HPAController(hpa, name="hpa-tuned"), {
            "hpa_target_cpu": target,
            "tuned_by": "simulator sweep of this scenario",
        }
    if spec.kind == "threshold":
        return ThresholdController(), {}
    if spec.kind == "static":
        if ctx.where != "sim":  # a live service keeps the knobs it started with
            return StaticController(config.initial_knobs, name="static"), {"knobs": config.initial_knobs.to_dict()}
        quota = round(profile.cpu_quota_cores)
        return StaticController(dataclasses.replace(config.initial_knobs, gomaxprocs=quota)), {}
    # Local: the oracles run the simulator, whose package imports gymnasium (heavy); the CLI imports
    # this module for its help texts, and the production path builds controllers without a simulator.
    from policies.oracle import (  # local: the oracles run the simulator (gymnasium, heavy)
        OracleController,
        ReactiveOracle,
        oracle_runtimes,
    )

    if spec.kind == "capacity":
        assert spec.param is not None
        return CapacityRule(RuleConfig(headroom=spec.param), name=base), {"capacity": "measured off the model"}
    if spec.kind == "oracle":
        return OracleController(runtimes=oracle_runtimes(config)), {}
    assert spec.kind == "oracle-reactive" and spec.param is not None
    return ReactiveOracle(spec.param, runtime=oracle_runtimes(config)[-1], name=base), {}


# ------------------------------------------------------------------ rlctl control


@dataclass(frozen=True)
class ControlPlan:
    """What ``rlctl control``'s loop runs for a ``--policy`` value.

    ``policy``: the artifact to run in-process (None: the HPA rule is the controller);
    ``hpa``: the HPA rule's config (None: the loop's default); ``guard``: the SLO guard's.
    """

    spec: ControllerSpec | None
    policy: str | None = None
    hpa: HPAConfig | None = None
    guard: GuardConfig | None = None


def _trained_with_guard(spec: ControllerSpec) -> bool:
    """A policy trained under the SLO guard runs under it in control too (it is part of what was trained)."""
    if spec.kind != "ppo" or spec.artifact is None:
        return False
    from policies.artifact import load_artifact  # local: the torch/SB3 path's manifest (see build)

    return bool((load_artifact(spec.artifact).manifest.get("config") or {}).get("guard"))


def control_plan(
    value: str | None, *, interval_s: float, bounds: KnobBounds, slo_p99_ms: float, guard: bool = False
) -> ControlPlan:
    """``rlctl control --policy VALUE`` (None: the HPA rule) as the loop runs it; ``guard``: ``--guard``.

    A bare ``default`` or folder is a policy artifact (see :func:`parse`).
    ``hpa-<target>`` sets the HPA rule's target (the loop's rule otherwise: the Kubernetes
    defaults, synced every interval, acting on its own fresh scrape).
    """
    spec = parse(value, bare_is_policy=True) if value is not None else None
    if spec is not None:
        check_runs(spec, "control")
    guarded = guard or (spec is not None and spec.guard) or (spec is not None and _trained_with_guard(spec))
    cfg = GuardConfig(slo_p99_ms=slo_p99_ms) if guarded else None
    if spec is not None and spec.kind == "ppo":
        return ControlPlan(spec, policy=spec.artifact, guard=cfg)
    hpa = None
    if spec is not None and spec.param is not None:
        # sync_s half the interval: the rule syncs on every step even when a scraped sample's
        # timestamp comes a little early (with sync_s == interval it skipped every other step).
        hpa = HPAConfig(target_cpu=spec.param, sync_s=0.5 * interval_s, min_replicas=bounds.min_replicas,
                        max_replicas=bounds.max_replicas, metric_lag_s=0.0)  # fmt: skip
    return ControlPlan(spec, hpa=hpa, guard=cfg)
