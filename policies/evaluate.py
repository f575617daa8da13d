"""Evaluation: run controllers on scenarios in the simulator and score them side by side.

Every (scenario, seed) pair is one row of a :class:`envs.sim.ServiceBatch`, so a whole
suite runs in one batched simulation per controller. Scores per scenario and controller are
those of :mod:`rlctl.scoring` (the same for ``chaos run`` and ``validate-real``): SLO-violation
seconds, replica-seconds, core-seconds, actions and flaps per hour, recovery seconds after
each fault; plus the mean reward.

``hpa-tuned`` is the HPA with its CPU target picked per scenario by a hindsight sweep
over 0.3-0.9 in steps of 0.025 (whole percents), scored by the environment's own reward (the objective the policy is
trained on), as Autothrottle tuned its baselines. ``oracle`` knows the future load and
faults: per step it runs the fewest replicas that meet the SLO (where none can, the fewest
within 5 % of the best P99), started early enough to be ready, with the best static runtime
knobs in hindsight (of :func:`oracle_runtimes`: Go's defaults, or GOGC 200-800 with large pools),
plus the fewest extra replicas that remove
the misses its own rollout shows (:func:`oracle_rollout`) — a lower bound on cost.
``oracle-reactive[-<headroom>]`` (:class:`ReactiveOracle`) has the same capacity model without
the foresight: it sizes for the last observed load, so it shows what any controller without a
forecast pays on a burst.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from policies.registry import make_baseline  # names -> controllers (the registry builds this module's oracles)
from rlctl.contract import COL, KNOB_COL, KNOB_FIELDS, Knobs, clamp_array
from rlctl.errors import ConfigError
from rlctl.scoring import knob_changes, score_run, violated

log = logging.getLogger(__name__)

#: CPU targets ``hpa-tuned`` sweeps: 0.3-0.9 on a 0.025 grid (a 0.1 grid missed targets with
#: 6.3 % fewer replica-seconds), each point rounded to a whole percent, because an HPA's
#: ``averageUtilization`` is an integer (0.325 -> 0.32, 0.375 -> 0.38: every target is one a
#: real HPA can be given).
HPA_TARGETS: tuple[float, ...] = tuple(round(30 + 2.5 * i) / 100 for i in range(25))
SERIES = ("t_s", "offered_qps", "p99_ms", "replicas", "gomaxprocs", "gogc", "cores", "error_rate", "faults")
#: Extra replicas the oracle tries, one more per pass, where its plan missed (see :func:`oracle_extra`).
ORACLE_MAX_EXTRA = 6
#: Where no replica count meets the SLO, the oracle takes the fewest within this factor of the best P99.
NEAR_BEST_P99 = 1.05
#: Misses closer than this many steps are one episode: the extra replicas cover the gap too.
_ORACLE_GAP_STEPS = 12


@dataclass
class RunResult:
    """One controller on one scenario with one seed: time series, knob changes and scores.

    ``changes`` lists every knob the controller changed, ``{"t_s", "knob", "from", "to"}``
    (:func:`rlctl.scoring.knob_changes`): the record a live backend keeps, so the sim backend
    passes it on and both count actions from the same list.
    """

    scenario: str
    controller: str
    seed: int
    series: dict[str, FloatArray]
    reward: float
    scores: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)


def rollout(
    controller: Controller,
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
    prepare: Any = None,
) -> list[RunResult]:
    """Run ``controller`` on every (scenario, seed) pair in one batch; returns one result per pair."""
    pairs = [(s, seed) for s in scenarios for seed in seeds]
    durations = {s.duration_s for s in scenarios}
    if len(durations) != 1:
        raise ConfigError(f"scenarios of one rollout must share a duration, got {sorted(durations)}")
    cfg = EnvConfig(**{**_config_dict(config), "episode_s": durations.pop()})
    batch = ServiceBatch(len(pairs), cfg)
    rngs = [np.random.default_rng([seed, _stable_hash(s.name)]) for s, seed in pairs]
    batch.reset_rows(np.arange(len(pairs)), [s for s, _ in pairs], [profile] * len(pairs), rngs)
    controller.reset(len(pairs), cfg.bounds, cfg.dt_s)
    if prepare is not None:
        prepare(controller, batch)
    t = cfg.n_steps
    rec = {k: np.zeros((len(pairs), t)) for k in SERIES}
    initial = batch.knobs.copy()
    knobs = np.zeros((len(pairs), t, len(KNOB_FIELDS)))
    total = np.zeros(len(pairs))
    for i in range(t):
        target = controller.decide(batch.window, batch.knobs.copy())
        tel, reward, fig = batch.advance(target)
        total += reward
        rec["t_s"][:, i] = (i + 1) * cfg.dt_s
        rec["offered_qps"][:, i] = tel[:, COL["offered_qps"]]
        rec["p99_ms"][:, i] = tel[:, COL["p99_ms"]]
        rec["replicas"][:, i] = batch.knobs[:, KNOB_COL["replicas"]]
        rec["gomaxprocs"][:, i] = batch.knobs[:, KNOB_COL["gomaxprocs"]]
        rec["gogc"][:, i] = batch.knobs[:, KNOB_COL["gogc"]]
        rec["cores"][:, i] = batch.last_cores
        rec["error_rate"][:, i] = tel[:, COL["error_rate"]]
        rec["faults"][:, i] = fig["faults_active"]
        knobs[:, i] = batch.knobs
    results = []
    for j, (s, seed) in enumerate(pairs):
        series = {k: v[j] for k, v in rec.items()}
        changes = knob_changes(knobs[j], initial[j], cfg.dt_s, KNOB_FIELDS)
        r = RunResult(s.name, controller.name, seed, series, float(total[j]), changes=changes)
        r.scores = score_run(
            t_s=series["t_s"], dt_s=cfg.dt_s, offered_qps=series["offered_qps"], p99_ms=series["p99_ms"],
            replicas=series["replicas"], slo_p99_ms=cfg.slo_p99_ms, changes=changes,
            windows=[(w.start_s, w.end_s) for w in s.windows()], cores=series["cores"],
            error_rate=series["error_rate"],
        )  # fmt: skip
        results.append(r)
    return results


def _config_dict(config: EnvConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _stable_hash(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") % (2**31)


# ------------------------------------------------------------------------- oracle


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
    at the initial knobs (what ``rlctl probe`` gives it on a real replica)."""
    cfg = batch.config
    capacity_user(controller).set_capacity(slo_capacity_qps(batch.prof, batch.knobs, cfg.slo_p99_ms, cfg.dt_s))


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


# ------------------------------------------------------------------- evaluation


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


def scenario_slo(scenario: Scenario, config: EnvConfig) -> float:
    """The SLO a scenario is run and scored against: the one its file states, else the environment's.

    ``rlctl chaos run`` uses a scenario's own SLO; without this ``rlctl eval`` of the same file
    scored it against the environment's default and the two disagreed (e.g. 250 ms against 8 ms).
    A scenario that states none (every built-in suite's) keeps the caller's, e.g. training's.
    """
    return float(scenario.slo_p99_ms) if "slo_p99_ms" in scenario.model_fields_set else config.slo_p99_ms


def evaluate(
    controllers: list[Controller | str],
    scenarios: list[Scenario],
    seeds: list[int],
    config: EnvConfig,
    profile: ServiceProfile,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, list[RunResult]]]]:
    """Evaluate controllers (objects or baseline names) on scenarios; returns (report, runs).

    ``report["scenarios"][name]["controllers"][controller]`` holds the mean scores over
    seeds (and ``per_seed``); ``runs[scenario][controller]`` the raw results.
    Each scenario runs against :func:`scenario_slo` (its entry says so where that is not
    ``config``'s). ``on_progress(done, total, what)`` is called before each batch of (controller,
    scenarios of one duration and SLO) and once at the end; ``done`` and ``total`` count scenario runs per seed set.
    """
    base, default_slo = config, config.slo_p99_ms
    runs: dict[str, dict[str, list[RunResult]]] = {s.name: {} for s in scenarios}
    groups: dict[tuple[float, float], list[Scenario]] = {}
    for s in scenarios:
        groups.setdefault((s.duration_s, scenario_slo(s, config)), []).append(s)
    total = len(scenarios) * len(controllers)
    done = 0
    for (_, slo), group in groups.items():
        config = dataclasses.replace(base, slo_p99_ms=slo)
        for c in controllers:
            if on_progress is not None:
                label = c if isinstance(c, str) else c.name
                on_progress(done, total, f"{label} on {len(group)} scenario(s) of {group[0].duration_s:g} s")
            done += len(group)
            if c == "hpa-tuned":
                best, _ = tuned_hpa(group, seeds, config, profile)
                for name, rs in best.items():
                    runs[name]["hpa-tuned"] = rs
                continue
            ctrl = make_baseline(c, config, profile) if isinstance(c, str) else c
            reactive = _reactive_oracle(ctrl)
            if reactive is not None:
                # The guard's rollout prepares the plan of the oracle it wraps.
                plan = lambda _ctrl, batch, oracle=reactive: prepare_oracle(oracle, batch)  # noqa: E731
                results = rollout(ctrl, group, seeds, config, profile, prepare=plan)
            elif isinstance(ctrl, OracleController):
                results = oracle_rollout(ctrl, group, seeds, config, profile)
            elif capacity_user(ctrl) is not None:
                results = rollout(ctrl, group, seeds, config, profile, prepare=measure_capacity)
            else:
                results = rollout(ctrl, group, seeds, config, profile)
            for r in results:
                runs[r.scenario].setdefault(ctrl.name, []).append(r)
    if on_progress is not None:
        on_progress(total, total, "scoring")
    report: dict[str, Any] = {"slo_p99_ms": default_slo, "seeds": seeds, "scenarios": {}}
    for s in scenarios:
        entry: dict[str, Any] = {"kind": s.kind, "duration_s": s.duration_s, "controllers": {}}
        if scenario_slo(s, base) != default_slo:
            entry["slo_p99_ms"] = scenario_slo(s, base)
        for name, rs in runs[s.name].items():
            entry["controllers"][name] = aggregate(rs)
        report["scenarios"][s.name] = entry
    report["summary"] = summarize(report)
    return report, runs


def aggregate(results: list[RunResult]) -> dict[str, Any]:
    """Mean of the scores over seeds, with the per-seed values."""
    keys = [k for k in results[0].scores if all(isinstance(r.scores[k], (int, float)) for r in results)]
    out: dict[str, Any] = {k: float(np.mean([r.scores[k] for r in results])) for k in keys}
    rec = [r.scores["recovery_seconds"] for r in results]
    out["recovery_seconds"] = [float(np.mean(col)) for col in zip(*rec, strict=True)] if rec and rec[0] else []
    out["reward"] = float(np.mean([r.reward for r in results]))
    out["per_seed"] = {k: [r.scores[k] for r in results] for k in ("slo_violation_s", "replica_seconds")}
    return out


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Totals per scenario kind and controller, and ratios of each controller to hpa-tuned."""
    totals: dict[str, dict[str, dict[str, float]]] = {}
    for entry in report["scenarios"].values():
        kind = entry["kind"]
        for ctrl, sc in entry["controllers"].items():
            t = totals.setdefault(kind, {}).setdefault(
                ctrl, {"slo_violation_s": 0.0, "replica_seconds": 0.0, "core_seconds": 0.0}
            )
            for k in t:
                t[k] += sc[k]
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind, by_ctrl in totals.items():
        base = by_ctrl.get("hpa-tuned")
        if not base:
            continue
        for ctrl, t in by_ctrl.items():
            ratios.setdefault(kind, {})[ctrl] = {
                k: (t[k] / base[k] if base[k] > 0 else (None if t[k] > 0 else 1.0)) for k in t
            }
    return {"totals": totals, "vs_hpa_tuned": ratios}
