"""The knobs' Pareto front (policies.pareto, ``rlctl pareto``, ``rlctl bench pareto``): small budgets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_rlctl

from envs.profile import ServiceProfile
from policies import pareto as P
from rlctl.contract import KNOB_FIELDS, KnobBounds, Knobs, clamp_array

pytest.importorskip("pymoo")

REPO = Path(__file__).resolve().parents[2]
SLO = 8.0
LOAD = np.array([2000.0])


@pytest.fixture(scope="module")
def prof() -> dict[str, np.ndarray]:
    return P.profile_arrays(ServiceProfile.load(REPO / "envs" / "profiles" / "testbed.yaml"))


@pytest.fixture(scope="module")
def front(prof: dict[str, np.ndarray]) -> P.Front:
    return P.nsga2_front(prof, P.KnobSpace(), LOAD, SLO, population=40, generations=25, seed=0)


def test_the_front_is_non_dominated_and_within_the_bounds(front: P.Front) -> None:
    f = front.objectives
    assert f.shape[0] >= 10 and f.shape[1] == len(P.OBJECTIVES)
    for i in range(f.shape[0]):
        others = np.delete(f, i, axis=0)
        dominated = (others <= f[i]).all(axis=1) & (others < f[i]).any(axis=1)
        assert not dominated.any(), f"front point {i} {f[i]} is dominated"
    bounds = KnobBounds()
    assert np.array_equal(clamp_array(front.knobs, bounds), front.knobs)  # inside the bounds, on the ladders
    assert front.evaluations <= 40 * 25 and front.generations == 25 and front.population == 40


def test_every_front_point_meets_the_slo_and_scores_as_the_physics_say(
    prof: dict[str, np.ndarray], front: P.Front
) -> None:
    assert (front.objectives[:, 0] <= SLO).all()
    again = P.evaluate_knobs(prof, front.knobs, LOAD)
    np.testing.assert_allclose(again, front.objectives)


def test_the_knee_points_are_on_the_front(front: P.Front) -> None:
    knees = P.knee_points(front.objectives)
    assert set(knees) == {"cheapest", "lowest_p99", "knee"}
    f = front.objectives
    assert f[knees["lowest_p99"], 0] <= f[:, 0].min() * 1.01
    assert f[knees["cheapest"], 1] <= f[:, 1].min() * 1.01
    # The knee lies between the two ends: its normalised distance to the ideal point is the least.
    norm = (f - f.min(axis=0)) / np.where(np.ptp(f, axis=0) > 0, np.ptp(f, axis=0), 1.0)
    dist = np.sqrt((norm**2).sum(axis=1))
    assert dist[knees["knee"]] == dist.min()


def test_nsga2_beats_random_search_at_equal_evaluations(prof: dict[str, np.ndarray], front: P.Front) -> None:
    rnd = P.random_front(prof, P.KnobSpace(), LOAD, SLO, front.evaluations, seed=0)
    grid = P.grid_front(prof, P.KnobSpace(), LOAD, SLO, front.evaluations)
    assert rnd.evaluations == front.evaluations and grid.evaluations <= front.evaluations
    hv, _ = P.hypervolumes({"nsga2": front.objectives, "random": rnd.objectives, "grid": grid.objectives})
    # Seed 0, 40 x 25 = 1,000 evaluations, 2026-12-05: NSGA-II 1.3106, random 1.3075, grid 1.2539.
    assert hv["nsga2"] >= hv["random"] >= hv["grid"] > 0


def test_every_nsga2_point_is_on_the_exhaustive_front(prof: dict[str, np.ndarray]) -> None:
    space = P.KnobSpace(bounds=KnobBounds(max_replicas=3, max_gomaxprocs=2))
    truth = P.exhaustive_front(prof, space, LOAD, SLO)
    assert truth.evaluations == space.n_settings == 3 * 2 * 6 * 7 * 6 * 8 * 2 * 2
    found = P.nsga2_front(prof, space, LOAD, SLO, population=24, generations=15, seed=1)
    for f in found.objectives:
        beaten = (truth.objectives <= f).all(axis=1) & (truth.objectives < f).any(axis=1)
        assert not beaten.any(), f"{f} is dominated by a setting NSGA-II did not find"
    hv, _ = P.hypervolumes({"nsga2": found.objectives, "exhaustive": truth.objectives})
    assert hv["nsga2"] <= hv["exhaustive"] + 1e-12


def test_hypervolume_per_generation_never_falls(front: P.Front) -> None:
    report = P.front_report(front, slo_p99_ms=SLO)
    hv = report["hypervolume"]
    assert len(hv) == 25 and all(b >= a - 1e-12 for a, b in itertools.pairwise(hv))


def test_a_knob_outside_allow_keeps_its_base_value() -> None:
    bounds = KnobBounds(allow=tuple(k for k in KNOB_FIELDS if k != "turbo"), max_replicas=4)
    space = P.KnobSpace(bounds=bounds, base=Knobs(turbo=False))
    assert space.sizes.tolist() == [4, 8, 6, 7, 6, 8, 2, 1]
    rows = space.decode(np.array([[99, 0, 0, 0, 0, 0, 1, 1]]))
    assert rows[0, 0] == 4 and rows[0, -1] == 0.0


@pytest.mark.parametrize("budget", [1, 200, 1000, 10_000])
def test_the_grid_fits_the_budget(budget: int) -> None:
    sizes = P.KnobSpace().sizes
    levels = P.grid_levels(sizes, budget)
    assert np.prod(levels) <= budget and (levels <= sizes).all() and (levels >= 1).all()


def test_rlctl_pareto_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "front.png"
    r = invoke_rlctl("pareto", "--load", "2000", "--population", "16", "--generations", "4", "--json", "-",
                     "--plot", str(png))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"front", "wall_s", "hypervolume", "generations", "population", "knees", "load"} <= set(doc)
    assert doc["generations"] == 4 and doc["population"] == 16 and len(doc["hypervolume"]) == 4
    p = doc["front"][0]
    assert set(p["knobs"]) == set(KNOB_FIELDS) and set(p["objectives"]) == set(P.OBJECTIVES)
    assert set(doc["knees"]) == {"cheapest", "lowest_p99", "knee"}
    assert png.stat().st_size > 10_000 and "Pareto front" in r.stderr


def test_rlctl_bench_pareto_reports_three_hypervolumes() -> None:
    r = invoke_rlctl("bench", "pareto", "--load", "2000", "--population", "12", "--generations", "3", "--seeds", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["methods"]) == {"nsga2", "random", "grid"}
    for m in doc["methods"].values():
        assert (
            len(m["hypervolume"]) >= 1
            and m["wall_s"]
            and m["evaluations"][0] <= doc["methods"]["nsga2"]["evaluations"][0]
        )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--load", "-5"), "UsageError: rlctl pareto: Invalid value for '--load'"),
        (("--load", "nan"), "UsageError: rlctl pareto: Invalid value for '--load'"),
        ((), "ConfigError: give exactly one of --load QPS or --trace FILE"),
        (("--load", "500000"), "ConfigError: no knob setting within the bounds (up to 16 replicas) meets P99 <= 8 ms"),
        (("--trace", "builtin:nope.txt"), "ConfigError: builtin:nope.txt: no such shipped trace"),
    ],
)
def test_bad_load_is_refused(args: tuple[str, ...], match: str) -> None:
    r = invoke_rlctl("pareto", "--population", "8", "--generations", "2", *args)
    assert r.returncode == 2, r.stderr
    assert match in r.stderr and "Traceback" not in r.stderr


def test_a_trace_window(prof: dict[str, np.ndarray]) -> None:
    from chaos.spec import builtin_trace

    loads = P.trace_window(builtin_trace(), interval_s=60.0, offset_s=0.0, window_s=1800.0, peak_qps=3000.0)
    assert loads.size == 30 and loads.max() <= 3000.0
    knobs = np.array([Knobs(replicas=4).to_array()])
    worst = P.evaluate_knobs(prof, knobs, loads)[0]
    at_peak = P.evaluate_knobs(prof, knobs, loads.max())[0]
    assert worst[0] == pytest.approx(at_peak[0]) and worst[2] == pytest.approx(at_peak[2])


def test_one_seed_gives_one_front(prof: dict[str, np.ndarray]) -> None:
    runs = [P.nsga2_front(prof, P.KnobSpace(), LOAD, SLO, population=16, generations=5, seed=7) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].knobs, runs[1].knobs)
    np.testing.assert_array_equal(runs[0].objectives, runs[1].objectives)
