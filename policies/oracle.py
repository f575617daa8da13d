"""The hindsight controllers: ``oracle``, ``oracle-reactive[-<headroom>]`` and ``hpa-tuned``'s target sweep.

``oracle`` knows the future load and faults: per step it runs the fewest replicas that meet the
SLO (where none can, the fewest within 5 % of the best P99), started early enough to be ready,
with the best static runtime knobs in hindsight (of :func:`oracle_runtimes`), plus the fewest extra
replicas that remove the misses its own rollout shows (:func:`oracle_rollout`): a lower bound on
cost. ``oracle-reactive`` (:class:`ReactiveOracle`) has the same capacity model without the
foresight. ``hpa-tuned`` is the HPA with its CPU target picked per scenario by a hindsight sweep
(:func:`tuned_hpa`). All of them run the simulator (:mod:`policies.rollout`); the controller
registry (:mod:`policies.registry`), evaluation and the sim chaos backend import them from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from chaos.spec import Scenario
from envs.model.faults import E
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile
from envs.sim import EnvConfig, ServiceBatch, slo_capacity_qps
from policies.base import Controller, FloatArray
from policies.baselines import HPAConfig, HPAController
from policies.rollout import RunResult, rollout
from rlctl.contract import COL, KNOB_COL, Knobs, clamp_array
from rlctl.scoring import violated

#: CPU targets ``hpa-tuned`` sweeps: 0.3-0.9 on a 0.025 grid (a 0.1 grid missed targets with
#: 6.3 % fewer replica-seconds), each point rounded to a whole percent, because an HPA's
#: ``averageUtilization`` is an integer (0.325 -> 0.32, 0.375 -> 0.38: every target is one a
#: real HPA can be given).
HPA_TARGETS: tuple[float, ...] = tuple(round(30 + 2.5 * i) / 100 for i in range(25))


#: Extra replicas the oracle tries, one more per pass, where its plan missed (see :func:`oracle_extra`).
ORACLE_MAX_EXTRA = 6


#: Where no replica count meets the SLO, the oracle takes the fewest within this factor of the best P99.
NEAR_BEST_P99 = 1.05


#: Misses closer than this many steps are one episode: the extra replicas cover the gap too.
_ORACLE_GAP_STEPS = 12


class OracleController(Controller):
    """Hindsight lower bound: knows each step's load and faults (set by :func:`prepare_oracle`)."""

    name = "oracle"

    def __init__(
        self,
        runtime: Knobs | None = None,
        lookahead: bool = True,
        headroom: float = 1.0,
        runtimes: tuple[Knobs, ...] = (),
    ) -> None:
        """``lookahead=False`` makes a non-clairvoyant teacher: the replicas the *current*
        load times ``headroom`` needs (still with the simulator's exact capacity model).
        ``runtime`` fixes the runtime knobs (None: the environment's initial ones);
        ``runtimes``, with ``runtime`` None, lets :func:`oracle_rollout` pick the best of
        these static settings per service in hindsight."""
        self.runtime = runtime
        self.runtimes = runtimes
        self.lookahead = lookahead
        self.headroom = headroom
        self.plan = np.zeros((0, 0))
        #: Replicas added to the planned need per (service, step), ``(N, steps)``; set by
        #: :func:`oracle_extra` where the first plan missed.
        self.extra: FloatArray | None = None

    def reset(self, n: int, bounds: Any, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self._t = 0

    def _knobs(self, knobs: FloatArray) -> FloatArray:
        """``knobs`` with the oracle's static runtime knobs, if it has them."""
        out = knobs.copy()
        if self.runtime is not None:
            out[:] = clamp_array(self.runtime.to_array(), self.bounds)
        return out

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = self._knobs(knobs)
        col = min(self._t, self.plan.shape[1] - 1)
        out[:, KNOB_COL["replicas"]] = self.plan[:, col]
        self._t += 1
        return out


class ReactiveOracle(OracleController):
    """The oracle's exact capacity model without its foresight: what a reactive controller
    with a perfect model of the service could do.

    At each decision it asks for the fewest replicas that would have met the SLO (at 90 % of
    it, as the oracle plans) under the *last observed* step's load times ``headroom`` and
    that step's faults, with the oracle's usual runtime pick (GOGC 800, largest pools), and
    scales down only to the highest of those counts over the last ``stabilise_s`` (the
    Kubernetes HPA's 300 s scale-down stabilisation window: without it, it is caught short by
    every burst that returns). It does not know the next load, does not start replicas early,
    and adds nothing for its own misses (the oracle's hindsight passes). Its ``headroom``
    sweep is the frontier of cost against misses for control without a forecast.
    """

    def __init__(
        self,
        headroom: float = 1.0,
        runtime: Knobs | None = None,
        name: str | None = None,
        stabilise_s: float = 300.0,
    ) -> None:
        super().__init__(runtime=runtime, lookahead=False, headroom=headroom)
        self.name = name or ("oracle-reactive" if headroom == 1.0 else f"oracle-reactive-{headroom:g}")
        self.stabilise_s = stabilise_s

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        out = self._knobs(knobs)
        # Decision i sees the telemetry of step i - 1 (step 0: the initial window, the first load).
        last = min(max(self._t - 1, 0), self.plan.shape[1] - 1)
        span = max(round(self.stabilise_s / self.interval_s), 1)
        out[:, KNOB_COL["replicas"]] = self.plan[:, max(last - span + 1, 0) : last + 1].max(axis=1)
        self._t += 1
        return out


def prepare_oracle(controller: OracleController, batch: ServiceBatch) -> None:
    """Compute, for every row and step, the fewest ready replicas meeting the SLO, and
    request them ``replica_start_s`` ahead (plus the restarts after pod kills)."""
    cfg = batch.config
    n, t = batch.n, cfg.n_steps
    lo, hi = cfg.bounds.min_replicas, cfg.bounds.max_replicas
    cands = np.arange(lo, hi + 1, dtype=np.float64)
    knobs0 = clamp_array((controller.runtime or cfg.initial_knobs).to_array(), cfg.bounds)
    need = np.full((n, t), float(hi))
    for row in range(n):
        # Step i serves offered[i] and its faults effects[i], with the replicas decided at step i
        # (a scale-down acts within the step): need[i] is about step i.
        offered = batch.offered[row, :t] * controller.headroom
        eff = batch.effects[row, :t]
        prof = {k: np.repeat(v[row], t * len(cands)) for k, v in batch.prof.items()}
        reps = np.tile(cands, t)
        knobs = np.tile(knobs0, (t * len(cands), 1))
        knobs[:, KNOB_COL["replicas"]] = reps
        serving = np.maximum(reps - np.repeat(eff[:, E["pods_failed"]], len(cands)), 0)
        state = ServiceState.initial(prof)
        state.temp_c[:] = prof["t_amb_c"] + 40.0
        eff_rep = np.repeat(eff, len(cands), axis=0)
        for _ in range(2):  # settle the GC fixed point and temperature
            out = step_services(prof, knobs, serving, np.repeat(offered, len(cands)), eff_rep, state, 0.0, cfg.dt_s)
            state.backlog[:] = 0.0
        p99 = out.telemetry[:, COL["p99_ms"]].reshape(t, len(cands))
        ok = p99 <= cfg.slo_p99_ms * 0.9
        # Where no count meets the SLO (a fault adds latency that replicas cannot remove), the
        # fewest replicas whose P99 is within 5 % of the best any count reaches: more would only
        # cost. (It took the most replicas there, which made its cost no lower bound.)
        near_best = p99 <= NEAR_BEST_P99 * p99.min(axis=1, keepdims=True)
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), near_best.argmax(axis=1))
        need[row] = cands[first]
        if controller.extra is not None:
            need[row] = np.minimum(need[row] + controller.extra[row, :t], hi)
        # Pod kills take a replica away until it restarts: hold one extra meanwhile.
        kill = eff[:, E["pod_kill"]] > 0
        for k in np.flatnonzero(kill):
            span = int(np.ceil(eff[k, E["pod_kill_restart_s"]] / cfg.dt_s)) + 1
            need[row, k : k + span] = np.minimum(need[row, k : k + span] + 1, hi)
    if not controller.lookahead:
        controller.plan = need
        return
    lead = np.ceil(batch.prof["replica_start_s"] / cfg.dt_s).astype(int) + 1
    plan = need.copy()
    for row in range(n):
        # Ask early: the target at step i covers the need until the new replicas are ready.
        for i in range(t):
            plan[row, i] = need[row, i : i + lead[row] + 1].max()
    controller.plan = plan


def _reactive_oracle(controller: Controller) -> ReactiveOracle | None:
    """The :class:`ReactiveOracle` that ``controller`` is or wraps (under the guard), else None."""
    inner = controller if isinstance(controller, ReactiveOracle) else getattr(controller, "inner", None)
    return inner if isinstance(inner, ReactiveOracle) else None


def capacity_user(controller: Controller) -> Any:
    """The controller (or the one it wraps under the guard) that needs each service's capacity."""
    for c in (controller, getattr(controller, "inner", None)):
        if c is not None and getattr(c, "needs_capacity", False):
            return c
    return None


def measure_capacity(controller: Controller, batch: ServiceBatch) -> None:
    """Give a capacity rule each service's per-replica capacity at its SLO, measured off the model
    at the knobs it will run (the initial ones, or a rule's fixed ``runtime``): what ``rlctl probe``
    gives it on a real replica."""
    cfg = batch.config
    user = capacity_user(controller)
    knobs = user.runtime_knobs(batch.knobs) if hasattr(user, "runtime_knobs") else batch.knobs
    user.set_capacity(slo_capacity_qps(batch.prof, knobs, cfg.slo_p99_ms, cfg.dt_s))


def _miss_spans(missed: npt.NDArray[np.bool_], gap: int, lead: int) -> npt.NDArray[np.bool_]:
    """``missed`` with the gaps of at most ``gap`` steps between two misses filled in, and
    each span started ``lead`` steps earlier."""
    out = missed.copy()
    idx = np.flatnonzero(missed)
    for a, b in itertools.pairwise(idx):
        if b - a <= gap:
            out[a:b] = True
    for i in np.flatnonzero(out & ~np.r_[False, out[:-1]]):  # span starts
        out[max(0, i - lead) : i] = True
    return out


def oracle_extra(
    controller: OracleController,
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
) -> FloatArray | None:
    """The replicas the oracle adds to its plan where its own rollout missed, ``(N, steps)``.

    The plan is made step by step at a warm, unthrottled CPU. What it cannot see that way —
    mainly a failed fan, whose heat throttles the clock once the replicas run hot — shows
    as misses in its rollout. The oracle knows its own future too: each further pass adds
    1, 2, ... :data:`ORACLE_MAX_EXTRA` replicas over the spans where the first plan missed
    (from one thermal time constant before each span), and every service keeps the pass with
    the fewest SLO-violation seconds, then the fewest replica-seconds: the smallest addition
    that removes the misses, and none where more replicas do not help (e.g. injected network
    delay). Rows are services in :func:`rollout`'s order; None when the first plan never missed.
    """
    controller.extra = None
    first = rollout(controller, scenarios, seeds, config, profile, prepare=prepare_oracle)
    missed = np.stack([violated(r.series["p99_ms"], r.series["offered_qps"], config.slo_p99_ms) for r in first])
    if not missed.any():
        return None
    # Heat builds up over the thermal time constant: the extra replicas start that much earlier.
    lead = int(np.ceil(profile.thermal_tau_s / config.dt_s))
    spans = np.stack([_miss_spans(row, _ORACLE_GAP_STEPS, lead) for row in missed]).astype(np.float64)
    best = [(r.scores["slo_violation_s"], r.scores["replica_seconds"]) for r in first]
    best_k = np.zeros(len(first))
    for k in range(1, ORACLE_MAX_EXTRA + 1):
        with planned_extra(controller, k * spans):
            runs = rollout(controller, scenarios, seeds, config, profile, prepare=prepare_oracle)
        for j, r in enumerate(runs):
            key = (r.scores["slo_violation_s"], r.scores["replica_seconds"])
            if key < best[j]:
                best[j], best_k[j] = key, k
    return best_k[:, None] * spans


@contextlib.contextmanager
def planned_extra(controller: OracleController, extra: FloatArray | None) -> Iterator[None]:
    """The oracle plans with ``extra`` replicas added (see :func:`oracle_extra`) inside the block."""
    controller.extra = extra
    try:
        yield
    finally:
        controller.extra = None


def oracle_rollout(
    controller: OracleController,
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
) -> list[RunResult]:
    """The oracle's rollout with :func:`oracle_extra`'s replicas added to its plan.

    Each run's scores say how many replica-seconds that addition requested
    (``oracle_extra_replica_seconds``), so a report shows what the refinement cost.
    """
    if controller.runtime is None and controller.runtimes:
        # The best static runtime knobs, in hindsight per service: each candidate's whole
        # rollout, and per service the fewest violation seconds, then replica-seconds, then cores.
        best: list[RunResult] = []
        try:
            for runtime in controller.runtimes:
                controller.runtime = config.bounds.clamp(runtime)
                runs = oracle_rollout(controller, scenarios, seeds, config, profile)
                for r in runs:
                    r.scores["oracle_gogc"] = float(controller.runtime.gogc)
                if not best:
                    best = runs
                    continue
                best = [min(a, b, key=_oracle_key) for a, b in zip(best, runs, strict=True)]
        finally:
            controller.runtime = None
        return best
    extra = oracle_extra(controller, scenarios, seeds, config, profile)
    with planned_extra(controller, extra):
        results = rollout(controller, scenarios, seeds, config, profile, prepare=prepare_oracle)
    for j, r in enumerate(results):
        r.scores["oracle_extra_replica_seconds"] = float(extra[j].sum() * config.dt_s) if extra is not None else 0.0
    return results


def _oracle_key(r: RunResult) -> tuple[float, float, float]:
    return (r.scores["slo_violation_s"], r.scores["replica_seconds"], r.scores["core_seconds"])


def oracle_runtimes(config: EnvConfig) -> tuple[Knobs, ...]:
    """The static runtime settings the oracle picks from: Go's defaults, and GOGC 200 / 400 / 800
    with the object and connection pools at their largest (what more memory buys for less GC)."""
    b = config.bounds
    base = config.initial_knobs
    big = dataclasses.replace(base, object_pool_size=b.max_object_pool_size, conn_pool_size=b.max_conn_pool_size)
    return (base, *(dataclasses.replace(big, gogc=g) for g in (200, 400, 800)))


def tuned_hpa(
    scenarios: list[Scenario], seeds: list[int], config: EnvConfig, profile: ServiceProfile
) -> tuple[dict[str, list[RunResult]], dict[str, float]]:
    """Sweep the HPA's CPU target (:data:`HPA_TARGETS`) per scenario; keep the best by mean reward.

    Every (target, scenario, seed) is one row of a single batched rollout, with each row's
    own target (``HPAController(row_targets=...)``): 25 targets cost little more than one.
    """
    per = len(scenarios) * len(seeds)
    sweep = HPAController(
        HPAConfig(max_replicas=config.bounds.max_replicas, pod_ready_s=profile.replica_start_s), name="hpa-sweep",
        row_targets=np.repeat(HPA_TARGETS, per),
    )  # fmt: skip
    runs_all = rollout(sweep, scenarios * len(HPA_TARGETS), seeds, config, profile)
    by_target = {target: runs_all[k * per : (k + 1) * per] for k, target in enumerate(HPA_TARGETS)}
    best: dict[str, list[RunResult]] = {}
    chosen: dict[str, float] = {}
    for s in scenarios:

        def mean_reward(target: float, name: str = s.name) -> float:
            return float(np.mean([r.reward for r in by_target[target] if r.scenario == name]))

        target = max(HPA_TARGETS, key=mean_reward)
        chosen[s.name] = target
        runs = [r for r in by_target[target] if r.scenario == s.name]
        for r in runs:
            r.controller = "hpa-tuned"
            r.scores["hpa_target_cpu"] = target
        best[s.name] = runs
    return best, chosen
