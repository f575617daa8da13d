"""Kubernetes' own HPA test cases, ported: the ``hpa`` baseline gives Kubernetes' answer.

Each case is named after its Go test in kubernetes/kubernetes
pkg/controller/podautoscaler/replica_calculator_test.go or horizontal_test.go and keeps its
inputs and expected replica count. Only the numbers are ported; the rule under test is
:mod:`policies.baselines` (``resource_replicas`` and the normalisation functions, and
:class:`HPAController` for the controller-level cases).

Pods are described as Kubernetes' ``groupPods`` sees them: ``(request_m, usage_m, state)``
with ``usage_m`` None for a pod without a metric and ``state`` one of ``ready``,
``unready`` (Ready condition false), ``hot`` (inside the CPU initialisation period without a
full metric window since it became Ready), ``pending``, ``failed`` or ``deleted``. The Go
tests give each pod two containers with the same request and usage; one per pod gives the
same ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from policies.baselines import (
    HPAConfig,
    HPAController,
    ScalingPolicy,
    ScalingRules,
    convert_with_behavior_rate,
    convert_with_rules,
    resource_replicas,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    stabilize_with_behavior,
)
from rlctl.contract import COL, DEFAULT_WINDOW, KNOB_COL, N_TELEMETRY, KnobBounds, Knobs

Pod = tuple[int, int | None, str]


def replicas(current: int, target_pct: int, pods: list[Pod]) -> float:
    """``GetResourceReplicas`` on ``pods`` grouped as ``groupPods`` does (tolerance 0.1)."""
    ready_use = ready_req = ready_n = unready_req = unready_n = missing_req = missing_n = 0.0
    for request, usage, state in pods:
        if state in ("failed", "deleted"):
            continue  # ignoredPods: neither counted nor requested
        if state == "pending":
            unready_req, unready_n = unready_req + request, unready_n + 1
        elif usage is None:
            missing_req, missing_n = missing_req + request, missing_n + 1
        elif state in ("unready", "hot"):
            unready_req, unready_n = unready_req + request, unready_n + 1
        else:
            ready_use, ready_req, ready_n = ready_use + usage, ready_req + request, ready_n + 1
    out = resource_replicas(
        np.array([current], dtype=np.float64), np.array([target_pct], dtype=np.float64), [ready_use], [ready_req],
        [ready_n], [unready_req], [unready_n], [missing_req], [missing_n],
    )  # fmt: skip
    return float(out[0])


def pods(levels: list[int | None], states: list[str] | None = None, requests: list[int] | None = None) -> list[Pod]:
    n = max(len(levels), len(states or []), len(requests or []))
    levels = levels + [None] * (n - len(levels))
    states = (states or []) + ["ready"] * (n - len(states or []))
    requests = requests or [1000] * n
    return [(requests[i], levels[i], states[i]) for i in range(n)]


R, U, H = "ready", "unready", "hot"

# (Go test, current replicas, target %, pods, Kubernetes' expected replicas) — replica_calculator_test.go
REPLICA_CALC_CASES: list[tuple[str, int, int, list[Pod], int]] = [
    ("TestReplicaCalcScaleUp", 3, 30, pods([300, 500, 700]), 5),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, 30, pods([300, 500, 700], [U, R, R]), 4),
    ("TestReplicaCalcScaleUpHotCpuLessScale", 3, 30, pods([300, 500, 700], [H, R, R]), 4),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, 30, pods([400, 500, 700], [R, U, U]), 3),
    ("TestReplicaCalcScaleHotCpuNoScale", 3, 30, pods([400, 500, 700], [R, H, H]), 3),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, 30, pods([500, 700], [R, R, "failed", "failed"]), 4),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, 30, pods([500, 700], [R, R, "deleted", "deleted"]), 4),
    ("TestReplicaCalcScaleDown", 5, 50, pods([100, 300, 500, 250, 250]), 3),
    ("TestReplicaCalcScaleDownIncludeUnreadyPods", 5, 50, pods([100, 300, 500, 250, 250], [R, R, R, U, U]), 2),
    ("TestReplicaCalcScaleDownExcludeUnscheduledPods", 5, 50, pods([100], [R] + ["pending"] * 4), 1),
    ("TestReplicaCalcScaleDownIgnoreHotCpuPods", 5, 50, pods([100, 300, 500, 250, 250], [R, R, R, H, H]), 2),
    ("TestReplicaCalcScaleDownIgnoresFailedPods", 5, 50,
     pods([100, 300, 500, 250, 250], [R] * 5 + ["failed"] * 2), 3),
    ("TestReplicaCalcScaleDownIgnoresDeletionPods", 5, 50,
     pods([100, 300, 500, 250, 250], [R] * 5 + ["deleted"] * 2), 3),
    ("TestReplicaCalcTolerance", 3, 100, pods([1010, 1030, 1020], requests=[900, 1000, 1100]), 3),
    ("TestReplicaCalcMissingMetrics", 4, 100, pods([400, 95, None, None]), 3),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, 100, pods([1000, None]), 2),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, 100, pods([1900, None]), 2),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, 100, pods([600, None]), 2),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, 50, pods([100, 450, None], [U, R, R]), 3),
    ("TestReplicaCalcMissingMetricsHotCpuNoChange", 3, 50, pods([100, 450, None], [H, R, R]), 3),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, 50, pods([100, 2000, None], [U, R, R]), 4),
    ("TestReplicaCalcMissingMetricsHotCpuScaleUp", 3, 50, pods([100, 2000, None], [H, R, R]), 4),
    ("TestReplicaCalcMissingMetricsUnreadyScaleDown", 4, 50, pods([100, 100, 100, None], [U, R, R, R]), 3),
    ("TestReplicaCalcMissingMetricsScaleDownTargetOver100", 4, 300,
     pods([200, 100, 100, None], [U, R, R, R], requests=[1000, 1000, 2000, 2000]), 2),
    ("TestReplicaCalcDuringRollingUpdateWithMaxSurge", 2, 50, pods([100, 100, None]), 2),
]  # fmt: skip


@pytest.mark.parametrize(("case", "current", "target", "pod_list", "expected"), REPLICA_CALC_CASES,
                         ids=[c[0] for c in REPLICA_CALC_CASES])  # fmt: skip
def test_replica_calculator(case: str, current: int, target: int, pod_list: list[Pod], expected: int) -> None:
    assert replicas(current, target, pod_list) == expected


@pytest.mark.parametrize(("margin", "scales"), [(0.01, True), (0.004, False)])
def test_replica_calc_computed_tolerance_alg_implementation(margin: float, scales: bool) -> None:
    """TestReplicaCalcComputedToleranceAlgImplementation: a target just past the tolerance scales
    down to ``ceil(used ratio * 10)``; one just inside it (the test's second half) keeps 10."""
    start_pods, tolerance = 10, 0.1
    used = start_pods * 150
    requested = 2 * used
    requested_to_used = float(requested // used)
    per_pod = requested // start_pods
    target = abs(1 / (requested_to_used * (1 - tolerance))) + margin
    target_pct = int(target * 100)
    expected = math.ceil(used / (requested * target) * start_pods) if scales else start_pods
    jitter = [100, -100, 10, -10, 2, -2, 1, -1, 0, 0]
    assert replicas(start_pods, target_pct, [(per_pod + j, used // 10, R) for j in jitter]) == expected


def test_no_ready_pod_with_a_metric_is_no_answer() -> None:
    """TestReplicaCalcEmptyMetrics: no metric for any ready pod is an error (no scaling): NaN here."""
    assert math.isnan(replicas(4, 100, pods([None, None, None])))


# ------------------------------------------------------------- horizontal_test.go

NOW = 1000.0


def rules(pods_: int, pods_period: int, percent: int, percent_period: int, window: int = 0) -> ScalingRules:
    """``generateScalingRules``: a Pods and/or a Percent policy, selectPolicy Max."""
    policies = []
    if pods_:
        policies.append(ScalingPolicy("Pods", pods_, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(tuple(policies), "Max", window)


def events(changes: list[int], period_s: int) -> list[tuple[float, float]]:
    """``generateEventsUniformDistribution``: events spread over the last ``period_s``, each mid-segment."""
    seg = period_s / len(changes)
    return [(NOW - (period_s - seg * (i + 1) + seg / 2), float(c)) for i, c in enumerate(changes)]


def slots(evs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([[e[0] for e in evs] or [-np.inf]])
    v = np.array([[e[1] for e in evs] or [0.0]])
    return t, v


DEFAULT_UP = HPAConfig().scale_up_rules  # GenerateHPAScaleUpRules(nil): 4 pods or 100 % per 15 s
DEFAULT_DOWN = HPAConfig().scale_down_rules  # GenerateHPAScaleDownRules(nil): 100 % per 15 s

# (name in TestScalingWithRules, up events, down events, min, max, up rules, down rules, current, desired, expected)
SCALING_WITH_RULES = [
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2),
    ("prenormalized desired replicas within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10),
    ("desired replica count is more than the maximum replica count", [], [], 100, 150, None, None, 100, 1000, 150),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", [], [], 1, 2000,
     rules(0, 0, 1, 60), None, 3, 1000, 4),
    ("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies", [], [], 3, 2000,
     None, rules(20, 60, 0, 0), 1000, 3, 980),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20),
    ("scaleUp with pods policy larger than percent policy", [], [], 1, 1000, rules(100, 60, 100, 60), None,
     10, 500, 110),
    ("scaleUp with percent policy larger than pods policy", [], [], 1, 1000, rules(2, 60, 100, 60), None,
     10, 500, 20),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", [], [], 1, 1000, rules(100, 60, 0, 0), None,
     10, 50, 50),
    ("scaleUp with spec MaxReplicas limitation with large percent policy", [], [], 1, 1000,
     rules(10000, 60, 0, 0), None, 10, 50, 50),
    ("scaleUp with pod policy limitation", [], [], 1, 1000, rules(30, 60, 0, 0), None, 10, 50, 40),
    ("scaleUp with percent policy limitation", [], [], 1, 1000, rules(0, 0, 200, 60), None, 10, 50, 30),
    ("scaleDown with percent policy larger than pod policy", [], [], 1, 1000, None, rules(20, 60, 1, 60, 300),
     100, 2, 80),
    ("scaleDown with pod policy larger than percent policy", [], [], 1, 1000, None, rules(2, 60, 1, 60, 300),
     100, 2, 98),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy", [], [], 1, 1000, None,
     rules(100, 60, 0, 0, 300), 10, 0, 1),
    ("scaleDown with spec MinReplicas limitation with large pod policy", [], [], 1, 1000, None,
     rules(100, 60, 0, 0, 300), 10, 0, 1),
    ("scaleDown with spec MinReplicas limitation with large percent policy", [], [], 5, 1000, None,
     rules(0, 0, 100, 60, 300), 10, 2, 5),
    ("scaleDown with pod policy limitation", [], [], 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5),
    ("scaleDown with percent policy limitation", [], [], 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", events([1, 5, 9], 120), [], 1,
     200, rules(300, 60, 0, 0), None, 100, 500, 200),
    ("scaleUp with spec MaxReplicas limitation with large percent policy and events", events([1, 5, 9], 120), [],
     1, 200, rules(0, 0, 10000, 60), None, 100, 500, 200),
    # The guard the online fallback lacked: a limit below current (100 - 15 + 5) keeps current.
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
     events([1, 5, 9], 120), [], 1, 1000, rules(5, 120, 0, 0), None, 100, 500, 100),
    ("scaleUp with pod policy and previous scale up events", events([1, 5, 9], 120), [], 1, 1000,
     rules(150, 120, 0, 0), None, 100, 500, 235),
    ("scaleUp with percent policy and previous scale up events", events([1, 5, 9], 120), [], 1, 1000,
     rules(0, 0, 200, 120), None, 100, 500, 255),
    ("scaleUp with percent policy and previous scale up and down events", events([4], 120), events([2], 120), 1,
     1000, rules(0, 0, 300, 300), None, 6, 24, 16),
    ("scaleDown with default policy and previous events", [], events([1, 5, 9], 120), 1, 1000, None, None,
     10, 5, 5),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", [],
     events([1, 5, 9], 120), 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1),
    ("scaleDown with spec MinReplicas limitation with large pod policy and previous events", [],
     events([1, 5, 9], 120), 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5),
    ("scaleDown with spec MinReplicas limitation with large percent policy and previous events", [],
     events([1, 5, 9], 120), 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5),
    ("scaleDown with pod policy limitation and previous events", [], events([1, 5, 9], 120), 1, 1000, None,
     rules(5, 120, 0, 0, 300), 100, 2, 100),
    ("scaleDown with percent policy limitation and previous events", [], events([2, 4, 6], 120), 1, 1000, None,
     rules(0, 0, 50, 120, 300), 100, 0, 56),
    ("scaleDown with percent policy and previous scale up and down events", events([2], 120), events([4], 120), 1,
     1000, None, rules(0, 0, 50, 180, 0), 10, 1, 6),
    ("scaleDown with previous events preventing further scale down", [], events([10, 10, 10], 120), 1, 1000, None,
     rules(0, 0, 10, 120, 300), 100, 0, 100),
    ("scaleDown with with previous events still allowing more scale down", [], events([10, 10, 10], 120), 1, 1000,
     None, rules(0, 0, 1000, 120, 300), 10, 5, 5),
    ("check 'outdated' flag for events for one behavior for up", events([8, 12, 9, 11], 120), [], 1, 1000,
     rules(1000, 60, 0, 0), None, 100, 200, 200),
    ("check that events were not marked 'outdated' for two different policies in the behavior for up",
     events([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 120, 100, 60), None, 100, 200, 200),
    ("check that events were marked 'outdated' for two different policies in the behavior for up",
     events([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 30, 100, 60), None, 100, 200, 200),
    ("check 'outdated' flag for events for one behavior for down", [], events([8, 12, 9, 11], 120), 1, 1000, None,
     rules(1000, 60, 0, 0, 300), 100, 5, 5),
    ("check that events were not marked 'outdated' for two different policies in the behavior for down", [],
     events([8, 12, 9, 11], 120), 1, 1000, None, rules(1000, 120, 100, 60, 300), 100, 5, 5),
    ("check that events were marked 'outdated' for two different policies in the behavior for down", [],
     events([8, 12, 9, 11], 120), 1, 1000, None, rules(1000, 30, 100, 60, 300), 100, 5, 5),
]  # fmt: skip


@pytest.mark.parametrize("case", SCALING_WITH_RULES, ids=[c[0] for c in SCALING_WITH_RULES])
def test_scaling_with_rules(case: tuple) -> None:  # type: ignore[type-arg]
    """TestScalingWithRules: ``convertDesiredReplicasWithBehaviorRate`` with the policies and past events."""
    _, up_ev, down_ev, lo, hi, up_rules, down_rules, current, desired, expected = case
    evs = (*slots(up_ev), *slots(down_ev))
    cur, now = np.array([float(current)]), np.array([NOW])
    up = scale_up_limit(cur, evs, now, up_rules or DEFAULT_UP)
    down = scale_down_limit(cur, evs, now, down_rules or DEFAULT_DOWN)
    out = convert_with_behavior_rate(cur, np.array([float(desired)]), lo, hi, up, down)
    assert out[0] == expected


def test_calculate_scale_up_limit_with_scaling_rules() -> None:
    """TestCalculateScaleUpLimitWithScalingRules: selectPolicy Min takes the smaller proposal."""
    r = ScalingRules((ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)), "Min", 300)
    assert scale_up_limit(np.array([1.0]), (*slots([]), *slots([])), np.array([NOW]), r)[0] == 2


def test_calculate_scale_down_limit_with_behaviors() -> None:
    """TestCalculateScaleDownLimitWithBehaviors: selectPolicy Min removes the fewest pods."""
    r = ScalingRules((ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)), "Min", 300)
    assert scale_down_limit(np.array([5.0]), (*slots([]), *slots([])), np.array([NOW]), r)[0] == 3


def recs(pairs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Recommendations ``(value, seconds ago)`` as ``(N=1, K)`` slots."""
    return slots([(NOW - ago, float(v)) for v, ago in pairs])


# (name in TestNormalizeDesiredReplicasWithBehavior, recommendations, current, desired, up and down windows, expected)
STABILIZE_WITH_BEHAVIOR = [
    ("empty recommendations for scaling down", [], 100, 5, 0, 0, 5),
    ("simple scale down stabilization", [(4, 120), (5, 60)], 100, 3, 0, 180, 5),
    ("simple scale up stabilization", [(4, 120), (5, 60)], 1, 7, 300, 0, 4),
    ("no scale down stabilization", [(1, 120), (2, 60)], 100, 3, 300, 0, 3),
    ("no scale up stabilization", [(4, 120), (5, 60)], 1, 3, 0, 300, 3),
    ("no scale down stabilization, reuse recommendation element", [(10, 600), (9, 540)], 100, 3, 0, 0, 3),
    ("no scale up stabilization, reuse recommendation element", [(10, 600), (9, 540)], 1, 100, 0, 0, 100),
    ("scale down stabilization, reuse one of obsolete recommendation element",
     [(10, 600), (4, 60), (5, 120), (9, 540)], 100, 3, 0, 180, 5),
    ("scale up stabilization, reuse one of obsolete recommendation element",
     [(10, 6000), (6, 60), (5, 120), (9, 180)], 1, 100, 300, 0, 5),
    ("scale up and down stabilization, do not scale up when prenormalized rec goes down",
     [(2, 6000), (3, 180)], 2, 1, 300, 300, 2),
    ("scale up and down stabilization, do not scale down when prenormalized rec goes up",
     [(2, 6000), (1, 180)], 2, 3, 300, 300, 2),
]  # fmt: skip


@pytest.mark.parametrize("case", STABILIZE_WITH_BEHAVIOR, ids=[c[0] for c in STABILIZE_WITH_BEHAVIOR])
def test_normalize_desired_replicas_with_behavior(case: tuple) -> None:  # type: ignore[type-arg]
    """TestNormalizeDesiredReplicasWithBehavior: ``stabilizeRecommendationWithBehaviors``."""
    _, history, current, desired, up_w, down_w, expected = case
    t, v = recs(history)
    out = stabilize_with_behavior(np.array([float(current)]), np.array([float(desired)]), t, v, np.array([NOW]),
                                  up_w, down_w)  # fmt: skip
    assert out[0] == expected


# (name in TestNormalizeDesiredReplicas, recommendations, desired, expected); window 5 min
STABILIZE_LEGACY = [
    ("empty log", [], 5, 5),
    ("stabilize", [(4, 120), (5, 60)], 3, 5),
    ("no stabilize", [(1, 120), (2, 60)], 3, 3),
    ("no stabilize - old recommendations", [(10, 600), (9, 540)], 3, 3),
    ("stabilize - old recommendations", [(10, 600), (4, 60), (5, 120), (9, 540)], 3, 5),
]


@pytest.mark.parametrize("case", STABILIZE_LEGACY, ids=[c[0] for c in STABILIZE_LEGACY])
def test_normalize_desired_replicas(case: tuple) -> None:  # type: ignore[type-arg]
    """TestNormalizeDesiredReplicas: ``stabilizeRecommendation`` without ``behavior``."""
    _, history, desired, expected = case
    t, v = recs(history)
    assert stabilize(np.array([float(desired)]), t, v, np.array([NOW]), 300.0)[0] == expected


# (annotation in TestConvertDesiredReplicasWithRules, current, desired, min, max, expected)
CONVERT_WITH_RULES = [
    ("prenormalized desired replicas within range", 5, 7, 3, 8, 7),
    ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2),
    ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 6),  # calculateScaleUpLimit(3)
]


@pytest.mark.parametrize("case", CONVERT_WITH_RULES, ids=[c[0] for c in CONVERT_WITH_RULES])
def test_convert_desired_replicas_with_rules(case: tuple) -> None:  # type: ignore[type-arg]
    """TestConvertDesiredReplicasWithRules: the legacy ``max(2 * current, 4)`` limit and the bounds."""
    _, current, desired, lo, hi, expected = case
    assert convert_with_rules(np.array([float(current)]), np.array([float(desired)]), lo, hi)[0] == expected


# ------------------------------------------- controller-level cases through HPAController


@dataclass
class Case:
    go_test: str
    min_replicas: int
    max_replicas: int
    spec: int
    target: float
    util: float  # mean of the Go test's reportedLevels over its requests
    expected: int


CONTROLLER_CASES = [
    Case("TestScaleUp", 2, 6, 3, 0.30, 0.50, 5),  # levels 300, 500, 700 of 1.0
    Case("TestScaleDownStabilizeInitialSize", 2, 6, 5, 0.50, 0.28, 5),  # the initial recommendation holds it
    Case("TestScaleUpRCImmediately", 2, 6, 1, 0.70, 0.0, 2),  # spec below minReplicas
    Case("TestScaleDownRCImmediately", 2, 5, 6, 0.50, 0.0, 5),  # spec above maxReplicas
]


@pytest.mark.parametrize("case", CONTROLLER_CASES, ids=[c.go_test for c in CONTROLLER_CASES])
def test_controller_first_sync(case: Case) -> None:
    """horizontal_test.go cases (HPA without ``behavior``): the first reconcile's answer."""
    cfg = HPAConfig(target_cpu=case.target, min_replicas=case.min_replicas, max_replicas=case.max_replicas,
                    behavior=False)  # fmt: skip
    c = HPAController(cfg)
    c.reset(1, KnobBounds(min_replicas=1, max_replicas=64), 5.0)
    w = np.zeros((1, DEFAULT_WINDOW, N_TELEMETRY))
    w[..., COL["timestamp_s"]] = 600.0 - 5.0 * np.arange(DEFAULT_WINDOW - 1, -1, -1)
    w[..., COL["cpu_util"]] = case.util
    w[..., COL["replicas"]] = case.spec
    out = c.decide(w, _knobs(case.spec))
    assert out[0, KNOB_COL["replicas"]] == case.expected


def _knobs(replicas: int) -> np.ndarray:
    k = Knobs().to_array()[None, :]
    k[0, KNOB_COL["replicas"]] = replicas
    return k
