"""The single environment's float path equals the batched numpy path, function by function.

The physics, ``featurize`` and the reward are written once against ``rlctl.xp``; the
single env evaluates them on Python floats (``SCALAR``) and the batched env on numpy
arrays (``NUMPY``). These tests pin the two evaluations together, from each namespace
operation up to whole episodes with faults.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from chaos.spec import FaultKind, FaultSpec, LoadSpec, Scenario
from envs import EnvConfig
from envs.model import cpu, gc, queueing
from envs.model.faults import effects_table
from envs.model.service import ServiceState, step_services
from envs.profile import PROFILE_FIELDS, ServiceProfile, randomize, stack_profiles
from envs.scenarios import random_scenario
from envs.sim import ServiceBatch, nominal_capacity_qps
from envs.single import SingleService
from rlctl.contract import (
    ACTION_NVEC,
    N_TELEMETRY,
    KnobBounds,
    apply_array,
    clamp_array,
    featurize,
    row_applier,
)
from rlctl.errors import ConfigError
from rlctl.xp import NUMPY, SCALAR

EDGES = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-300, 1e-300, 0.5, 1.0, 3.0, 700.0, 1e308]


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_scalar_binary_ops_follow_numpy_on_edge_values(name: str) -> None:
    f_np, f_sc = getattr(NUMPY, name), getattr(SCALAR, name)
    for a in EDGES:
        for b in EDGES:
            want = float(f_np(a, b))
            got = f_sc(a, b)
            assert (math.isnan(want) and math.isnan(got)) or want == got, (name, a, b, want, got)


@pytest.mark.parametrize("name", ["log", "log1p", "log2", "exp", "sqrt", "ndtr", "isnan"])
def test_scalar_unary_ops_follow_numpy_on_edge_values(name: str) -> None:
    f_np, f_sc = getattr(NUMPY, name), getattr(SCALAR, name)
    with np.errstate(all="ignore"):
        for x in [*EDGES, -0.5, 2.5, -3.7, 1e-17, 37.0, -40.0]:
            want = float(f_np(np.float64(x)))
            got = float(f_sc(x))
            if math.isnan(want):
                assert math.isnan(got), (name, x, got)
            else:
                assert got == pytest.approx(want, rel=1e-14, abs=1e-300), (name, x, want, got)


def test_scalar_clip_where_and_not_follow_numpy() -> None:
    for x in EDGES:
        want = float(NUMPY.clip(x, 0.0, 1.0))
        got = SCALAR.clip(x, 0.0, 1.0)
        assert (math.isnan(want) and math.isnan(got)) or want == got
    assert SCALAR.where(True, 1.0, 2.0) == 1.0 and SCALAR.where(False, 1.0, 2.0) == 2.0
    # ``~True`` is -2 in Python: the namespace's logical_not is the one the physics uses.
    assert SCALAR.logical_not(True) is False and bool(NUMPY.logical_not(np.array([True]))[0]) is False


def _agree(f, arrays: list[np.ndarray], tiny: float = 1e-300, **kwargs: object) -> None:  # type: ignore[no-untyped-def]
    """``f`` over numpy arrays equals ``f`` on each row's floats through ``SCALAR`` (``tiny``: absolute slack)."""
    want = f(*arrays, **kwargs)
    outs = want if isinstance(want, tuple) else (want,)
    for i in range(arrays[0].shape[0]):
        got = f(*(float(a[i]) for a in arrays), xp=SCALAR, **kwargs)
        gots = got if isinstance(got, tuple) else (got,)
        for w, g in zip(outs, gots, strict=True):
            assert float(g) == pytest.approx(float(np.asarray(w)[i]), rel=1e-12, abs=tiny), (f.__name__, i)


def test_every_physics_function_gives_the_same_numbers_on_floats() -> None:
    rng = np.random.default_rng(7)
    n = 300
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    gomaxprocs = rng.integers(1, 9, n).astype(float)
    quota = u(0.25, 8)
    _agree(cpu.usable_cores, [gomaxprocs, quota, u(0.5, 16), u(0, 2), u(0, 0.1)])
    _agree(cpu.cfs_throttled_fraction, [gomaxprocs, quota, u(0, 1.2), u(0, 1)])
    _agree(cpu.throttle_stall_ms, [gomaxprocs, quota, u(50, 150)])
    _agree(cpu.core_frequency_ghz, [rng.integers(0, 2, n).astype(float), u(40, 110), u(80, 100), u(2, 3),
                                    u(3, 4), u(1, 2)])  # fmt: skip
    _agree(cpu.package_power_w, [u(0, 1.2), u(1, 4), u(2, 3), u(5, 20), u(20, 100)])
    _agree(cpu.thermal_step_c, [u(30, 100), u(10, 200), u(20, 30), u(0.1, 1), u(10, 200)], dt_s=5.0)
    live = u(1e6, 1e9)
    _agree(gc.heap_goal_bytes, [live, u(0, 1e7), rng.choice([25.0, 100.0, 800.0], n), u(1e7, 8e9)])
    _agree(gc.gc_cycles_per_s, [u(0, 1e9), live * u(1, 3), live])
    _agree(gc.gc_cpu_cores, [u(0, 50), live, u(0, 1e7), u(1e-5, 1e-3), u(1e-10, 1e-9), u(0.5, 1.5)])
    _agree(gc.gc_cpu_fraction, [u(0, 4), u(0.05, 8), rng.integers(0, 2, n).astype(float)])
    _agree(gc.pool_hit_rate, [rng.choice([0.0, 16.0, 4096.0], n), u(0, 500), u(0, 5000), u(0, 50)])
    servers = np.where(rng.random(n) < 0.5, rng.integers(1, 130, n), u(1, 8)).astype(float)
    offered = servers * np.where(rng.random(n) < 0.2, u(0, 0.01), u(0, 1.3))
    # A batch stops the Erlang B recurrence when every row is under 1e-30, one queue when it is:
    # a row of a batch can keep a probability under 1e-29 that the queue alone rounds to 0.
    _agree(queueing.erlang_c, [servers, offered], tiny=1e-28)
    mu = u(100, 2000)
    _agree(queueing.wait_quantile_s, [u(0, 1), servers, mu, servers * mu * u(0.1, 1.2)], q=0.99)
    _agree(queueing.service_quantile, [u(1e-4, 1e-2), u(0, 4)], q=0.99)


def _random_inputs(rng: np.random.Generator, n: int) -> tuple:  # type: ignore[type-arg]
    """Profiles, knobs, serving replicas, load, fault effects and state for ``n`` services."""
    bounds = KnobBounds()
    profiles = [randomize(ServiceProfile(), rng) for _ in range(n)]
    prof = stack_profiles(profiles)
    raw = np.column_stack([rng.integers(1, 40, n), rng.integers(1, 9, n), rng.uniform(20, 900, n),
                           rng.uniform(100, 9000, n), rng.uniform(0, 5000, n), rng.uniform(1, 130, n),
                           rng.integers(0, 2, n), rng.integers(0, 2, n)])  # fmt: skip
    knobs = clamp_array(raw, bounds)
    serving = rng.integers(0, 12, n).astype(float)
    cap = np.array([nominal_capacity_qps(p) for p in profiles])
    offered = serving * cap * rng.choice([0.0, 0.3, 0.9, 1.1, 3.0], n) + rng.uniform(0, 50, n)
    kinds = list(FaultKind)
    effects = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        scenario = Scenario(name="f", duration_s=60, load=LoadSpec(kind="constant", qps=1.0),
                            faults=[FaultSpec(kind=kind, start_s=0, duration_s=60)])  # fmt: skip
        effects.append(effects_table(scenario.windows(), 3, 5.0)[0] if i % 3 else effects_table([], 3, 5.0)[0])
    eff = np.array(effects)
    state = ServiceState(temp_c=rng.uniform(30, 105, n), backlog=rng.uniform(0, 2000, n) * (rng.random(n) < 0.3),
                         gc_cycles_per_s=rng.uniform(0.1, 30, n))  # fmt: skip
    return profiles, prof, knobs, serving, offered, eff, state


def test_step_services_on_floats_equals_the_batched_step() -> None:
    rng = np.random.default_rng(11)
    n = 200
    profiles, prof, knobs, serving, offered, eff, state = _random_inputs(rng, n)
    temp0, backlog0, gc0 = state.temp_c.copy(), state.backlog.copy(), state.gc_cycles_per_s.copy()
    want = step_services(prof, knobs, serving, offered, eff, state, 0.0, 5.0)
    for i in range(n):
        one = ServiceState(temp_c=float(temp0[i]), backlog=float(backlog0[i]), gc_cycles_per_s=float(gc0[i]))
        p = {name: float(getattr(profiles[i], name)) for name in PROFILE_FIELDS}
        got = step_services(p, knobs[i].tolist(), float(serving[i]), float(offered[i]), eff[i].tolist(), one, 0.0, 5.0,
                            xp=SCALAR)  # fmt: skip
        assert isinstance(got.telemetry, list) and len(got.telemetry) == N_TELEMETRY
        np.testing.assert_allclose(got.telemetry, want.telemetry[i], rtol=1e-12, atol=1e-300, err_msg=f"service {i}")
        assert got.cores_used == pytest.approx(want.cores_used[i], rel=1e-12, abs=1e-300)
        assert [one.temp_c, one.backlog, one.gc_cycles_per_s] == pytest.approx(
            [state.temp_c[i], state.backlog[i], state.gc_cycles_per_s[i]], rel=1e-12, abs=1e-300
        )
    # The inputs reached the interesting regimes: saturation, outages, throttling, faults.
    p99 = want.telemetry[:, 5]
    assert (p99 > 100).any() and (p99 < 10).any() and (serving == 0).any() and (want.telemetry[:, 13] > 0.01).any()


def _windows(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    w = np.abs(rng.lognormal(2.0, 2.0, size=(batch, n, N_TELEMETRY)))
    holes = rng.random(w.shape)
    w[holes < 0.03] = np.nan
    w[(holes >= 0.03) & (holes < 0.05)] = np.inf
    w[(holes >= 0.05) & (holes < 0.07)] *= -1.0
    w[: batch // 2] = np.abs(np.nan_to_num(w[: batch // 2], nan=1.0, posinf=1.0))  # half are clean
    return w


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_featurize_on_rows_of_floats_equals_the_array_path(n: int) -> None:
    rng = np.random.default_rng(n)
    windows = _windows(rng, 64, n)
    for slo in (8.0, 0.3):
        want = featurize(windows, slo_p99_ms=slo)
        for i in range(len(windows)):
            got = featurize([row.tolist() for row in windows[i]], slo_p99_ms=slo, xp=SCALAR)
            assert got.dtype == np.float32 and got.shape == want[i].shape
            np.testing.assert_allclose(got, want[i], rtol=1e-6, atol=1e-6, err_msg=f"window {i}, slo {slo}")
            assert np.isfinite(got).all()


def test_featurize_on_floats_rejects_a_malformed_window() -> None:
    with pytest.raises(ConfigError, match="rows of 27 floats"):
        featurize([[1.0] * (N_TELEMETRY - 1)], xp=SCALAR)
    with pytest.raises(ConfigError, match="0 rows"):
        featurize([], xp=SCALAR)


def test_row_applier_is_apply_array_row_by_row() -> None:
    rng = np.random.default_rng(3)
    for bounds in (KnobBounds(), KnobBounds(max_replicas=12, min_gogc=50, max_gogc=400, allow=("replicas", "gogc"))):
        step = row_applier(bounds)
        legal = clamp_array(rng.uniform(0, 9000, size=(400, 8)), bounds)
        odd = legal.copy()
        odd[::4, 0] += 0.4  # off the legal values: the fallback path
        actions = rng.integers(0, np.asarray(ACTION_NVEC), size=(400, 8))
        actions[::7, 2] = 9  # out of the action space: clipped
        for knobs in (legal, odd):
            want = apply_array(knobs, actions, bounds)
            for i in range(len(knobs)):
                assert step(knobs[i].tolist(), actions[i].tolist()) == want[i].tolist()
    with pytest.raises(ConfigError, match="components"):
        row_applier(KnobBounds())([2.0] * 8, [1, 1])


def _scenarios() -> list[Scenario]:
    rng = np.random.default_rng(5)
    profile = ServiceProfile()
    cap = nominal_capacity_qps(profile)
    drawn = [random_scenario(rng, profile, 3600.0, 40, cap) for _ in range(6)]
    churn = Scenario(
        name="kills", duration_s=3600, load=LoadSpec(kind="flash", base_qps=cap, peak_qps=12 * cap, at_s=600,
                                                     rise_s=30, decay_s=300),
        faults=[FaultSpec(kind=FaultKind.POD_KILL, start_s=300 + 400 * i, duration_s=30) for i in range(6)]
        + [FaultSpec(kind=FaultKind.POD_FAILURE, start_s=2000, duration_s=300),
           FaultSpec(kind=FaultKind.FAN_FAILURE, start_s=100, duration_s=3000)],
    )  # fmt: skip
    return [*drawn, churn]


#: The first scenario in the fast run; all seven in the full one (each a whole episode twice).
@pytest.mark.parametrize("index", [0, *(pytest.param(i, marks=pytest.mark.slow) for i in range(1, 7))])
def test_single_service_episode_equals_a_batch_of_one(index: int) -> None:
    scenario = _scenarios()[index]
    profile = randomize(ServiceProfile(), np.random.default_rng(index), 0.5)
    cfg = EnvConfig()
    one = SingleService(cfg)
    one.reset(scenario, profile, np.random.default_rng(100 + index))
    batch = ServiceBatch(1, cfg)
    batch.reset_rows([0], [scenario], [profile], [np.random.default_rng(100 + index)])
    np.testing.assert_allclose(one.observe(), batch.observe()[0], rtol=1e-6, atol=1e-6)
    rng = np.random.default_rng(index)
    nvec = np.asarray(ACTION_NVEC)
    # Random actions with a bias to scale up and down in bursts (cancels starting replicas).
    for t in range(cfg.n_steps):
        action = rng.integers(0, nvec)
        if (t // 20) % 3 == 0:
            action[0] = 4 if (t // 60) % 2 == 0 else 0
        tel, reward, info = one.step(action)
        tel_b, reward_b, fig = batch.step(action[None, :])
        np.testing.assert_allclose(tel, tel_b[0], rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        assert reward == pytest.approx(float(reward_b[0]), rel=1e-9, abs=1e-12)
        assert info.keys() == fig.keys()
        for key, value in info.items():
            assert float(value) == pytest.approx(float(fig[key][0]), rel=1e-9, abs=1e-12), (t, key)
        np.testing.assert_allclose(one.observe(), batch.observe()[0], rtol=1e-5, atol=1e-5, err_msg=f"step {t}")
        assert one.done() == bool(batch.done()[0])
    assert one.done()
