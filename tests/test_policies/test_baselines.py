"""Baselines behave as their definitions say."""

from __future__ import annotations

import numpy as np
import pytest

from policies.baselines import HPAConfig, HPAController, StaticController, ThresholdController
from rlctl.contract import COL, DEFAULT_WINDOW, KNOB_COL, N_TELEMETRY, KnobBounds, Knobs
from rlctl.errors import ConfigError


def window(util: float, replicas: float, p99: float = 3.0, goroutines: float = 50.0, t: float = 0.0) -> np.ndarray:
    """A window of identical samples, the newest stamped ``t`` (5 s apart)."""
    w = np.zeros((1, DEFAULT_WINDOW, N_TELEMETRY))
    w[..., COL["timestamp_s"]] = t - 5.0 * np.arange(DEFAULT_WINDOW - 1, -1, -1)
    w[..., COL["cpu_util"]] = util
    w[..., COL["replicas"]] = replicas
    w[..., COL["p99_ms"]] = p99
    w[..., COL["goroutines"]] = goroutines
    return w


def knobs(replicas: int) -> np.ndarray:
    return Knobs(replicas=replicas).to_array()[None, :]


def hpa(**kw: float) -> HPAController:
    c = HPAController(HPAConfig(**kw))  # type: ignore[arg-type]
    c.reset(1, KnobBounds(max_replicas=64), 5.0)
    return c


def replicas_after(c: HPAController, util: float, current: int, t: float = 0.0) -> float:
    return float(c.decide(window(util, current, t=t), knobs(current))[0, KNOB_COL["replicas"]])


class Feed:
    """Telemetry one sample per 5 s, as the simulator and the online loop keep it."""

    def __init__(self, c: HPAController) -> None:
        self.c, self.t, self.rows = c, 0.0, list[np.ndarray]()

    def step(self, util: float, current: int) -> float:
        self.t += 5.0
        row = np.zeros(N_TELEMETRY)
        row[COL["timestamp_s"]], row[COL["cpu_util"]], row[COL["replicas"]] = self.t, util, current
        self.rows = [*self.rows, row][-DEFAULT_WINDOW:]
        return float(self.c.decide(np.stack(self.rows)[None], knobs(current))[0, KNOB_COL["replicas"]])


def test_hpa_desired_is_ceil_of_ready_replicas_times_ratio() -> None:
    assert replicas_after(hpa(target_cpu=0.5), 0.8, 4) == 7  # ceil(4 * 80 % / 50 %)


def test_hpa_tolerance_holds_within_ten_percent() -> None:
    assert replicas_after(hpa(target_cpu=0.5), 0.54, 4) == 4
    assert replicas_after(hpa(target_cpu=0.5), 0.56, 4) == 5


def test_hpa_acts_every_sync_period_of_telemetry_time_not_every_call() -> None:
    c = hpa(target_cpu=0.5, metric_lag_s=0.0, pod_ready_s=0.0, metric_window_s=5.0)
    assert replicas_after(c, 1.0, 2, t=100.0) == 4
    assert replicas_after(c, 1.0, 4, t=105.0) == 4  # 5 s later: no sync
    assert replicas_after(c, 1.0, 4, t=110.0) == 4  # 10 s
    assert replicas_after(c, 1.0, 4, t=115.0) == 8  # 15 s: next sync
    assert replicas_after(c, 1.0, 8, t=115.0) == 8  # the same telemetry again: no time passed, no sync


def test_hpa_scale_up_limited_to_double_or_four_pods() -> None:
    assert replicas_after(hpa(target_cpu=0.1, max_replicas=64), 1.0, 2) == 6  # max(2*2, 2+4) = 6, not 20
    assert replicas_after(hpa(target_cpu=0.1, max_replicas=64), 1.0, 10) == 20  # max(20, 14), not 100
    legacy = hpa(target_cpu=0.1, max_replicas=64, behavior=False)
    assert replicas_after(legacy, 1.0, 1) == 4  # no behavior: max(2 * current, 4)


def test_hpa_scale_down_waits_for_the_stabilisation_window_from_the_first_sync() -> None:
    """The first sync puts the current count in the window (recordInitialRecommendation), so even
    a controller started on low load holds its replicas for 300 s."""
    c = hpa(target_cpu=0.5, metric_lag_s=0.0)
    feed = Feed(c)
    seen = [feed.step(0.1, 8) for _ in range(61)]  # t = 5 ... 305 s of low load, syncs at 5, 20, ...
    assert all(r == 8 for r in seen[:60])  # until t=300 s the window still holds the initial 8
    assert seen[60] == 2  # t=305 s, a sync 300 s after the first: ceil(8 * 10 % / 50 %)


def test_hpa_counts_only_ready_pods_and_starting_ones_as_idle_on_a_scale_up() -> None:
    """A pod counts once it has been Ready for a whole metric window (pod_ready_s + metric_window_s
    after the spec count rose); until then it is an unready pod: 0 % on a scale-up."""
    c = hpa(target_cpu=0.5, metric_lag_s=0.0)
    feed = Feed(c)
    assert feed.step(1.0, 2) == 4  # t=5: 2 ready pods at 200 % of the target: ceil(2 * 2) = 4
    seen = [feed.step(1.0, 4) for _ in range(12)]  # t=10 ... 65
    # 2 ready + 2 starting: 2 * 100 % / 4 pods = 50 % = the target: no scale-up while they start.
    assert seen[:8] == [4] * 8
    # At t=50 (45 s after the rise) the new pods count: 4 ready at 100 %: ceil(4 * 2) = 8.
    assert seen[8] == 8


def test_hpa_acts_on_usage_as_old_as_metrics_server_gives_it() -> None:
    """The load doubles at t=35 s. Syncs at 5, 20, 35, 50 s: on fresh usage the HPA would see
    (20, 35] at 35 s; with metrics-server's age (metric_lag_s 15) it sees that only at 50 s."""
    loads = [0.5] * 6 + [1.0] * 6  # t = 5 ... 60
    fresh, aged = Feed(hpa(target_cpu=0.5, metric_lag_s=0.0)), Feed(hpa(target_cpu=0.5))
    first_up = [next(i for i, u in enumerate(loads) if f.step(u, 4) > 4) for f in (fresh, aged)]
    assert [5.0 * (i + 1) for i in first_up] == [35.0, 50.0]


def test_hpa_never_scales_down_under_overload_whatever_its_history() -> None:
    """Scale-up events and recommendations of long ago cannot cap a scale-up below current."""
    c = hpa(target_cpu=0.7, max_replicas=16, metric_lag_s=0.0)
    assert replicas_after(c, 0.9, 2, t=0.0) == 3
    assert replicas_after(c, 1.0, 12, t=3600.0) == 16  # an hour later: 12 ready at 143 %: up, not down
    assert replicas_after(c, 0.75, 16, t=3615.0) == 16  # over the target, inside the tolerance: hold


def test_hpa_row_targets_give_each_service_its_own_target() -> None:
    c = HPAController(HPAConfig(), row_targets=[0.5, 0.8])
    c.reset(2, KnobBounds(max_replicas=64), 5.0)
    w = np.concatenate([window(0.8, 4), window(0.8, 4)])
    out = c.decide(w, np.concatenate([knobs(4), knobs(4)]))[:, KNOB_COL["replicas"]]
    assert out.tolist() == [7, 4]
    with pytest.raises(ConfigError, match="row_targets for 3 services"):
        c.reset(3, KnobBounds(), 5.0)


def test_hpa_rejects_nonsense_target() -> None:
    with pytest.raises(ConfigError, match="target_cpu=0"):
        HPAConfig(target_cpu=0.0)
    with pytest.raises(ConfigError, match="sync_s=0"):
        HPAConfig(sync_s=0.0)


def test_threshold_scales_up_on_p99_and_goroutines_then_down_after_cooldown() -> None:
    c = ThresholdController()
    c.reset(1, KnobBounds(), 5.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = window(0.5, 2, p99=3.0 + rng.normal(0, 0.1), goroutines=50 + rng.normal(0, 2))
        assert c.decide(w, knobs(2))[0, KNOB_COL["replicas"]] == 2
    fired = c.decide(window(0.9, 2, p99=20.0, goroutines=400), knobs(2))
    assert fired[0, KNOB_COL["replicas"]] == 4
    not_both = c.decide(window(0.9, 4, p99=20.0, goroutines=50), knobs(4))  # P99 alone does not fire
    assert not_both[0, KNOB_COL["replicas"]] == 4
    later = [c.decide(window(0.1, 4), knobs(4))[0, KNOB_COL["replicas"]] for _ in range(30)]
    assert 3 in later


def test_static_sets_its_knobs() -> None:
    c = StaticController(Knobs(replicas=5, gogc=200))
    c.reset(2, KnobBounds(), 5.0)
    out = c.decide(np.zeros((2, 3, N_TELEMETRY)), np.tile(Knobs().to_array(), (2, 1)))
    assert np.all(out[:, KNOB_COL["replicas"]] == 5) and np.all(out[:, KNOB_COL["gogc"]] == 200)


def test_oracle_meets_the_slo_when_the_load_steps_down() -> None:
    """The oracle plans each step for that step's load: it keeps the replicas a heavy load
    needs until the step where the load falls, and never runs a step short."""
    from chaos.spec import LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import OracleController, prepare_oracle
    from policies.rollout import rollout

    profile = ServiceProfile()
    load = LoadSpec(kind="step", base_qps=9000, step_qps=1000, at_s=300, noise=False)
    scenario = Scenario(name="down", load=load, duration_s=600)
    config = EnvConfig(episode_s=600, initial_knobs=Knobs(replicas=8))
    (run,) = rollout(OracleController(), [scenario], [0], config, profile, prepare=prepare_oracle)
    reps = run.series["replicas"]
    assert run.scores["slo_violation_s"] == 0.0
    assert reps[:59].min() > reps[-1]  # it did scale down, after the load fell


@pytest.mark.slow  # the hindsight oracle's search over long simulations
def test_oracle_adds_the_fewest_replicas_that_cover_a_failed_fans_throttling() -> None:
    """Planned at a warm, unthrottled CPU, the oracle's first plan misses while a failed fan
    throttles the clock; the passes over its own rollout add replicas there, no more than needed."""
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import OracleController, oracle_rollout, prepare_oracle
    from policies.rollout import rollout
    from policies.suites import validation_suite

    profile = ServiceProfile()
    scenario = [s for s in validation_suite(profile) if s.name == "fault-host"]
    config = EnvConfig()
    (first,) = rollout(OracleController(), scenario, [0], config, profile, prepare=prepare_oracle)
    (run,) = oracle_rollout(OracleController(), scenario, [0], config, profile)
    fan = next(w for w in scenario[0].windows() if w.kind.value == "fan-failure")
    in_fan = (run.series["t_s"] > fan.start_s) & (run.series["t_s"] <= fan.end_s + 300)
    assert (first.series["p99_ms"][in_fan] > config.slo_p99_ms).sum() > 20  # the first plan ran hot and slow
    assert not (run.series["p99_ms"][in_fan] > config.slo_p99_ms).any()
    assert run.scores["slo_violation_s"] < first.scores["slo_violation_s"]
    extra = run.scores["replica_seconds"] - first.scores["replica_seconds"]
    assert 0 < extra < 0.3 * first.scores["replica_seconds"]
    assert run.scores["oracle_extra_replica_seconds"] > 0


def test_oracle_miss_spans_fill_short_gaps_and_start_early() -> None:
    from policies.oracle import _miss_spans

    missed = np.zeros(40, dtype=bool)
    missed[[10, 13, 30]] = True
    spans = _miss_spans(missed, gap=4, lead=2)
    assert np.flatnonzero(spans).tolist() == [8, 9, 10, 11, 12, 13, 28, 29, 30]


@pytest.mark.slow  # the hindsight oracle's search over long simulations
def test_oracle_adds_no_replicas_where_none_would_meet_the_slo() -> None:
    """A 30 ms network delay puts every replica count over an 8 ms SLO: the oracle keeps the
    replicas the load needs instead of paying for the most."""
    from chaos.spec import FaultKind, FaultSpec, LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import OracleController, oracle_rollout

    delay = FaultSpec(kind=FaultKind.NETWORK_DELAY, start_s=300, duration_s=120, params={"latency_ms": 30.0})
    scenario = Scenario(name="delay", duration_s=900, load=LoadSpec(kind="constant", qps=400, noise=False),
                        faults=[delay])  # fmt: skip
    config = EnvConfig(episode_s=900, initial_knobs=Knobs(replicas=1))
    (run,) = oracle_rollout(OracleController(), [scenario], [0], config, ServiceProfile())
    assert run.scores["slo_violation_s"] == pytest.approx(120.0, abs=6.0)  # the delay, which nothing fixes
    assert run.series["replicas"].max() == 1.0


@pytest.mark.slow  # the hindsight oracle's search over long simulations
def test_oracle_picks_the_best_static_runtime_knobs_per_service_in_hindsight() -> None:
    """Go's defaults (GOGC 100, small pools) spend CPU on GC that GOGC 800 does not: on a steady
    load the oracle's pick needs no more replicas and fewer cores than the defaults, misses no more, and says
    which setting it took; each service gets its own pick."""
    from chaos.spec import LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import OracleController, oracle_rollout, oracle_runtimes
    from policies.registry import make_baseline

    profile = ServiceProfile()
    scenarios = [Scenario(name=f"c{q}", duration_s=600, load=LoadSpec(kind="constant", qps=q, noise=False))
                 for q in (3000, 12000)]  # fmt: skip
    config = EnvConfig(episode_s=600)
    assert len(oracle_runtimes(config)) == 4 and oracle_runtimes(config)[0] == config.initial_knobs
    defaults = oracle_rollout(OracleController(), scenarios, [0], config, profile)
    oracle = make_baseline("oracle", config, profile)
    assert isinstance(oracle, OracleController)
    picked = oracle_rollout(oracle, scenarios, [0], config, profile)
    assert oracle.runtime is None  # the pick does not stick to the controller
    for d, p in zip(defaults, picked, strict=True):
        assert p.scores["slo_violation_s"] <= d.scores["slo_violation_s"]
        assert p.scores["replica_seconds"] <= d.scores["replica_seconds"]
        assert p.scores["oracle_gogc"] in (100.0, 200.0, 400.0, 800.0)
        assert (p.series["gogc"] == p.scores["oracle_gogc"]).all()
    assert sum(p.scores["core_seconds"] for p in picked) < sum(d.scores["core_seconds"] for d in defaults)


@pytest.mark.slow  # the hindsight oracle's search over long simulations
def test_reactive_oracle_pays_a_replica_start_on_a_burst_that_the_oracle_does_not() -> None:
    """The reactive oracle has the oracle's capacity model but sees a load only after it came:
    on a fourfold step it misses for about one replica start (30 s) where the clairvoyant oracle
    misses nothing; on a constant load it runs the oracle's replicas; headroom buys replicas."""
    from chaos.spec import LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import ReactiveOracle, oracle_rollout, prepare_oracle
    from policies.registry import make_baseline
    from policies.rollout import rollout

    profile = ServiceProfile()
    config = EnvConfig(episode_s=600, initial_knobs=Knobs(replicas=4))
    step = Scenario(name="step", duration_s=600,
                    load=LoadSpec(kind="step", base_qps=3000, step_qps=12000, at_s=300, noise=False))  # fmt: skip
    flat = Scenario(name="flat", duration_s=600, load=LoadSpec(kind="constant", qps=9000, noise=False))
    reactive = make_baseline("oracle-reactive", config, profile)
    assert isinstance(reactive, ReactiveOracle) and reactive.name == "oracle-reactive"
    r_step, r_flat = rollout(reactive, [step, flat], [0], config, profile, prepare=prepare_oracle)
    o_step, o_flat = oracle_rollout(make_baseline("oracle", config, profile), [step, flat], [0], config, profile)
    assert o_step.scores["slo_violation_s"] == 0.0
    after = r_step.series["t_s"] > 300
    missed_s = float((r_step.series["p99_ms"][after] > config.slo_p99_ms).sum() * config.dt_s)
    assert profile.replica_start_s <= missed_s <= 2 * profile.replica_start_s + config.dt_s
    # On a constant load it holds what the oracle holds once it has seen the load.
    assert (r_flat.series["replicas"][1:] == o_flat.series["replicas"][-1]).all()
    assert r_flat.scores["slo_violation_s"] <= o_flat.scores["slo_violation_s"] + 6.0
    (wide,) = rollout(make_baseline("oracle-reactive-1.5", config, profile), [flat], [0], config, profile,
                      prepare=prepare_oracle)  # fmt: skip
    assert wide.series["replicas"][-1] > r_flat.series["replicas"][-1]
    # Under the guard (evaluate prepares the wrapped oracle's plan) it misses less on the step.
    from policies.evaluate import evaluate

    report, _ = evaluate(["oracle-reactive", "oracle-reactive+guard"], [step], [0], config, profile)
    scores = report["scenarios"]["step"]["controllers"]
    assert scores["oracle-reactive"]["slo_violation_s"] == r_step.scores["slo_violation_s"]
    guarded = scores["oracle-reactive+guard"]["slo_violation_s"]
    assert guarded <= scores["oracle-reactive"]["slo_violation_s"]


def test_reactive_oracle_scales_down_only_after_its_stabilisation_window() -> None:
    """After the load falls it keeps the replicas the high load needed for 300 s (the HPA's
    scale-down window), then runs what the low load needs; with no window it drops at once."""
    from chaos.spec import LoadSpec, Scenario
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.oracle import ReactiveOracle, oracle_runtimes, prepare_oracle
    from policies.rollout import rollout

    profile = ServiceProfile()
    config = EnvConfig(episode_s=900, initial_knobs=Knobs(replicas=8))
    down = Scenario(name="down", duration_s=900,
                    load=LoadSpec(kind="step", base_qps=12000, step_qps=3000, at_s=300, noise=False))  # fmt: skip
    runtime = oracle_runtimes(config)[-1]
    (held,) = rollout(ReactiveOracle(runtime=runtime), [down], [0], config, profile, prepare=prepare_oracle)
    (eager,) = rollout(ReactiveOracle(runtime=runtime, stabilise_s=0), [down], [0], config, profile,
                       prepare=prepare_oracle)  # fmt: skip
    t, reps = held.series["t_s"], held.series["replicas"]
    high, low = reps[(t > 200) & (t <= 300)].max(), reps[-1]
    assert high > low
    assert (reps[(t > 310) & (t <= 590)] == high).all()  # the window holds the high count
    assert (reps[t > 620] == low).all()
    assert (eager.series["replicas"][(t > 320) & (t <= 590)] == low).all()


@pytest.mark.parametrize("name", ["oracle-reactive-x", "oracle-reactive-0.5", "oracle-reactive-9"])
def test_reactive_oracle_rejects_a_bad_headroom_by_name(name: str) -> None:
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.registry import make_baseline

    with pytest.raises(ConfigError, match=r"oracle-reactive-1\.3"):
        make_baseline(name, EnvConfig(), ServiceProfile())
