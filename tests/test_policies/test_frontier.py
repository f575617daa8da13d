"""The frontier check (policies/frontier.py) and ``rlctl eval --frontier``'s exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from policies import frontier as fr
from policies.frontier import (
    CLAIRVOYANT,
    FRONTIER_BASELINES,
    TOTAL,
    dominated_by,
    dominates,
    frontier_check,
    pareto_front,
)

# --------------------------------------------------------------------------- the logic


def test_domination_is_strict_in_both_coordinates() -> None:
    assert dominates((1.0, 100.0), (2.0, 200.0))
    assert not dominates((1.0, 300.0), (2.0, 200.0))  # fewer misses, more cost: a trade-off
    assert not dominates((3.0, 100.0), (2.0, 200.0))
    assert not dominates((2.0, 200.0), (1.0, 100.0))


def test_ties_do_not_dominate() -> None:
    assert not dominates((2.0, 100.0), (2.0, 200.0))  # same misses, cheaper: not strictly better in both
    assert not dominates((1.0, 200.0), (2.0, 200.0))
    assert not dominates((2.0, 200.0), (2.0, 200.0))
    # A rounding error is a tie too: sums of means over seeds differ in their last bits.
    assert not dominates((2.0 - 1e-13, 200.0 - 1e-10), (2.0, 200.0))
    assert dominated_by((2.0, 200.0), {"same-misses": (2.0, 100.0), "same-cost": (0.0, 200.0)}) == []


def test_dominated_by_lists_every_dominating_baseline_cheapest_first() -> None:
    others = {"a": (1.0, 150.0), "b": (0.5, 120.0), "c": (3.0, 50.0), "d": (1.0, 250.0)}
    assert dominated_by((2.0, 200.0), others) == ["b", "a"]


def test_pareto_front_on_a_hand_made_set() -> None:
    points = {
        "cheap": (9.0, 100.0),
        "mid": (4.0, 200.0),
        "dominated": (5.0, 250.0),  # mid is better in both
        "same-misses-dearer": (4.0, 260.0),  # weakly dominated by mid
        "careful": (1.0, 400.0),
        "perfect-but-dear": (0.0, 900.0),
        "worst": (10.0, 1000.0),
    }
    assert pareto_front(points) == ["cheap", "mid", "careful", "perfect-but-dear"]
    assert pareto_front({"x": (1.0, 1.0), "twin": (1.0, 1.0)}) == ["twin", "x"]  # equal points both stay
    assert pareto_front({}) == []


def test_the_grid_is_the_documented_one() -> None:
    assert fr.FRONTIER_HPA_TARGETS == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert fr.FRONTIER_HEADROOMS == (1.0, 1.1, 1.2, 1.3)
    assert len(FRONTIER_BASELINES) == 30 and len(set(FRONTIER_BASELINES)) == 30
    assert {
        "hpa-0.3",
        "hpa-0.9+guard",
        "oracle-reactive-1.0",
        "oracle-reactive-1.3+guard",
        "capacity-1.0",
        "capacity-1.3+guard",
    } <= set(FRONTIER_BASELINES)
    assert not set(CLAIRVOYANT) & set(FRONTIER_BASELINES)


def test_every_grid_name_is_a_baseline_make_baseline_builds() -> None:
    from envs.profile import ServiceProfile
    from envs.sim import EnvConfig
    from policies.registry import make_baseline

    config, profile = EnvConfig(), ServiceProfile()
    for name in FRONTIER_BASELINES:
        assert make_baseline(name, config, profile).name == name


def _totals(points: dict[str, dict[str, tuple[float, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        kind: {c: {"slo_violation_s": v, "replica_seconds": r, "core_seconds": r} for c, (v, r) in by.items()}
        for kind, by in points.items()
    }


def test_frontier_check_per_kind_and_in_total_ignores_the_clairvoyant() -> None:
    totals = _totals(
        {
            "steady": {"ppo:x": (1.0, 100.0), "hpa-0.5": (0.5, 90.0), "oracle": (0.0, 10.0), "hpa-tuned": (0.1, 50.0)},
            "fault": {"ppo:x": (2.0, 100.0), "hpa-0.5": (5.0, 90.0), "oracle": (0.0, 10.0), "hpa-tuned": (0.1, 50.0)},
        }
    )
    out = frontier_check(totals, ["ppo:x"], ["hpa-0.5", "oracle", "hpa-tuned"])
    assert out["ppo:x"]["steady"] == {
        "dominated_by": ["hpa-0.5"],
        "violation": 1.0,
        "violation_unit": "s",
        "replica_seconds": 100.0,
    }
    assert out["ppo:x"]["fault"]["dominated_by"] == []
    assert out["ppo:x"][TOTAL] == {
        "dominated_by": [],
        "violation": 3.0,
        "violation_unit": "s",
        "replica_seconds": 200.0,
    }
    assert fr.failures(out) == ["ppo:x on steady by hpa-0.5"]


def test_reports_from_before_the_seconds_are_checked_in_minutes() -> None:
    totals = {"steady": {"ppo:x": {"slo_violation_minutes": 2.0, "replica_seconds": 100.0},
                         "hpa-0.5": {"slo_violation_minutes": 1.0, "replica_seconds": 90.0}}}  # fmt: skip
    out = frontier_check(totals, ["ppo:x"], ["hpa-0.5"])
    assert out["ppo:x"]["steady"]["dominated_by"] == ["hpa-0.5"]
    assert out["ppo:x"]["steady"]["violation_unit"] == "min"


# --------------------------------------------------------------------------- the CLI

KINDS = ("steady", "bursty", "fault")


class _StubPolicy:
    """Stands in for PPOController: the CLI test is about the check's wiring and exit codes, not the policy."""

    def __init__(self, policy: str = "stub", name: str | None = None, **_: Any) -> None:
        self.name = name or f"ppo:{policy}"


def _fake_evaluate(points: dict[str, tuple[float, float]]) -> Any:
    """An ``evaluate`` that scores every controller at ``points[name]`` per kind (baselines not
    named: worse than anything in both), so the verdict is known before the run."""

    def evaluate(controllers: list[Any], scenarios: Any, seeds: list[int], *_: Any, **__: Any) -> Any:
        from policies.evaluate import summarize

        report: dict[str, Any] = {"slo_p99_ms": 50.0, "seeds": seeds, "scenarios": {}}
        for kind in KINDS:
            ctrls = {}
            for c in controllers:
                name = c if isinstance(c, str) else c.name
                v, r = points.get(name, (100.0, 1e6))
                # Both names of the violation score: before and after rlctl.scoring (seconds).
                ctrls[name] = {"slo_violation_s": v, "slo_violation_minutes": v, "replica_seconds": r,
                               "core_seconds": r, "actions_per_hour": 0.0, "flaps_per_hour": 0.0,
                               "recovery_seconds": []}  # fmt: skip
            report["scenarios"][f"s-{kind}"] = {"kind": kind, "duration_s": 60.0, "controllers": ctrls}
        report["summary"] = summarize(report)
        return report, {}

    return evaluate


def _run(argv: list[str]) -> int:
    from rlctl.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


@pytest.mark.parametrize(
    ("baseline_point", "code"),
    [
        ((0.5, 4000.0), 1),  # fewer misses and fewer replica-s: dominated
        pytest.param((1.0, 4000.0), 0, marks=pytest.mark.slow),  # the same misses, cheaper: a tie, not dominated
        pytest.param((0.5, 5000.0), 0, marks=pytest.mark.slow),  # fewer misses at the same cost: a tie
        pytest.param((0.5, 6000.0), 0, marks=pytest.mark.slow),  # a trade-off
    ],
)
def test_eval_frontier_exits_1_when_dominated_and_0_when_not(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    baseline_point: tuple[float, float],
    code: int,
) -> None:
    import policies.evaluate
    import policies.ppo

    points = {"ppo:stub": (1.0, 5000.0), "ppo+guard:stub": (0.2, 9000.0), "hpa-0.5": baseline_point,
              "oracle": (0.0, 100.0), "hpa-tuned": (0.0, 100.0)}  # fmt: skip
    monkeypatch.setattr(policies.ppo, "PPOController", _StubPolicy)
    monkeypatch.setattr(policies.evaluate, "evaluate", _fake_evaluate(points))
    out = tmp_path / "e.json"
    argv = ["eval", "--policy", "stub", "--guard", "--frontier", "--suite", "smoke", "--seeds", "1"]
    assert _run([*argv, "--json", str(out), "--report", str(tmp_path / "rep")]) == code
    err = capsys.readouterr().err
    frontier = json.loads(out.read_text())["frontier"]  # written before the verdict, pass or fail
    assert set(frontier) == {"ppo:stub", "ppo+guard:stub"}
    assert set(frontier["ppo:stub"]) == {*KINDS, TOTAL}
    expected = ["hpa-0.5"] if code else []
    for kind in KINDS:
        assert frontier["ppo:stub"][kind]["dominated_by"] == expected
        assert frontier["ppo:stub"][kind]["violation"] == 1.0
        assert frontier["ppo+guard:stub"][kind]["dominated_by"] == []
    if code:
        assert err.startswith("CheckFailed: the policy is dominated") and "ppo:stub on steady by hpa-0.5" in err
    for kind in (*KINDS, TOTAL):
        assert (tmp_path / "rep" / f"frontier-{kind}.png").stat().st_size > 0
    assert "| ppo:stub | steady |" in (tmp_path / "rep" / "frontier.md").read_text()


def test_eval_frontier_adds_the_grid_and_the_references(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import policies.evaluate
    import policies.ppo

    seen: list[str] = []
    fake = _fake_evaluate({"ppo:stub": (0.0, 1.0)})

    def spy(controllers: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.extend(c if isinstance(c, str) else c.name for c in controllers)
        return fake(controllers, *args, **kwargs)

    monkeypatch.setattr(policies.ppo, "PPOController", _StubPolicy)
    monkeypatch.setattr(policies.evaluate, "evaluate", spy)
    argv = ["eval", "--policy", "stub", "--frontier", "--baseline", "hpa-0.5", "--suite", "smoke", "--seeds", "1"]
    assert _run(argv) == 0
    assert seen == ["ppo:stub", "hpa-0.5", *CLAIRVOYANT, *(b for b in FRONTIER_BASELINES if b != "hpa-0.5")]


def test_eval_frontier_without_a_policy_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["eval", "--frontier", "--baseline", "hpa", "--suite", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("ConfigError: --frontier checks the policy")
