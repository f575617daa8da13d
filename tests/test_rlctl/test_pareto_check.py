"""``rlctl pareto --check-real`` (rlctl.pareto_check): front points on real gosvc replicas, predicted vs measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke_rlctl

from rlctl import pareto_check as C

OBJ = {"p99_ms": 3.0, "cores_used": 0.5, "peak_heap_mib": 10.0}


def point(name: str, replicas: int) -> C.CheckPoint:
    knobs = {"replicas": replicas, "gomaxprocs": 2, "gogc": 100, "gomemlimit_mib": 8192, "object_pool_size": 16,
             "conn_pool_size": 16, "prefetch": True, "turbo": True}  # fmt: skip
    return C.CheckPoint((name,), knobs, dict(OBJ))


def trial(name: str, repeat: int, p99: float, cores: float, heap: float) -> C.Trial:
    return C.Trial(name, repeat, 0, p99, cores, heap, 100.0, 100.0, 0.0, 0.25, 10.0)


def test_repeats_are_interleaved_every_repeat_visits_every_point() -> None:
    order = C.schedule(3, 4, seed=1)
    assert len(order) == 12 and [i for r, i in order if r == 0] == [0, 1, 2]
    for r in range(4):
        assert sorted(i for rr, i in order if rr == r) == [0, 1, 2]
    assert [i for _, i in order] != [0, 1, 2] * 4  # later repeats are shuffled
    assert C.schedule(3, 4, seed=1) == order


def test_a_point_called_out_twice_runs_once_with_both_names() -> None:
    front = [{"knobs": point("x", r).knobs, "objectives": OBJ} for r in (1, 2)]
    report = {"front": front, "knees": {"cheapest": {"index": 0}, "knee": {"index": 0}, "lowest_p99": {"index": 1}}}
    pts = C.check_points(report)
    assert [p.label for p in pts] == ["cheapest+knee", "lowest_p99"] and [p.replicas for p in pts] == [1, 2]


def test_a_point_the_measurements_dominate_is_reported() -> None:
    a, b, c = point("a", 1), point("b", 2), point("c", 3)
    trials = [trial("a", r, 5.0 + r * 0.1, 0.60, 4.0) for r in range(3)]
    trials += [trial("b", r, 7.0 + r * 0.1, 0.70, 9.0) for r in range(3)]  # worse than a in everything
    trials += [trial("c", r, 4.0 + r, 0.65, 30.0) for r in range(3)]  # faster than a, costs more
    rows = {r["point"]: r for r in C.summarise([a, b, c], trials, slo_p99_ms=8.0)}
    assert rows["b"]["dominated_by"] == ["a"] and rows["b"]["clearly_dominated_by"] == ["a"]
    assert not rows["b"]["non_dominated_measured"] and rows["a"]["non_dominated_measured"]
    assert rows["c"]["non_dominated_measured"] and rows["c"]["measured"]["p99_ms"] == {
        "mean": 5.0,
        "min": 4.0,
        "max": 6.0,
    }
    assert rows["a"]["relative_error"]["cores_used"] == pytest.approx(0.2)
    assert rows["a"]["meets_slo_measured"] and rows["a"]["repeats"] == 3


def test_the_interval_holds_a_few_hundred_requests() -> None:
    assert C.interval_for(1000.0, 10.0) == 0.25
    assert C.interval_for(250.0, 10.0) == 1.0
    assert C.interval_for(10.0, 10.0) == 2.5  # at most a quarter of the window


def test_check_real_needs_one_load() -> None:
    r = invoke_rlctl("pareto", "--trace", "builtin:nasa-1995-requests-per-minute.txt.gz", "--check-real",
                     "--population", "8", "--generations", "2")  # fmt: skip
    assert r.returncode == 2 and "--check-real runs the front's points at one load" in r.stderr


@pytest.mark.real  # gosvc replicas, their load generators, cgroups
@pytest.mark.slow
def test_check_real_on_a_tiny_front(tmp_path: Path) -> None:
    out = tmp_path / "front.json"
    r = invoke_rlctl("pareto", "--load", "200", "--max-replicas", "2", "--population", "12", "--generations", "4",
                     "--check-real", "--repeats", "2", "--check-duration", "1.5", "--check-warmup", "0.5",
                     "--check-iters-per-us", "300",
                     "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    check = doc["check"]
    names = {n for row in check["points"] for n in row["point"].split("+")}
    assert names == {"cheapest", "lowest_p99", "knee"}
    assert check["held"]["turbo"]["value"] is True and check["held"]["prefetch"]["value"] is True
    # Prefetch and turbo were held in the front itself, not only on the test-bed.
    assert all(p["knobs"]["turbo"] is True and p["knobs"]["prefetch"] is True for p in doc["front"])
    assert len(check["trials"]) == 2 * len(check["points"]) and check["spin_iters_per_us"] == 300
    for row in check["points"]:
        m = row["measured"]
        assert row["repeats"] == 2
        assert 0 < m["p99_ms"]["min"] <= m["p99_ms"]["mean"] <= m["p99_ms"]["max"] < 1000
        # 200 req/s at ~0.5 ms of CPU each: about 0.1 core, measured from the replicas' cgroups.
        assert 0.03 < m["cores_used"]["mean"] < 1.5
        assert m["peak_heap_mib"]["mean"] > 0
        assert set(row["predicted"]) == {"p99_ms", "cores_used", "peak_heap_mib"}
    for t in check["trials"]:
        assert abs(t["offered_qps"] - 200) < 60 and t["error_rate"] < 0.01
    assert "Real test-bed at 200 req/s" in r.stdout + r.stderr
