"""Baselines with the policy's interface: Kubernetes HPA, the seed's threshold rule, static.

The tuned HPA (per-scenario hindsight sweep of its CPU target) and the oracle need the
simulator and live in :mod:`policies.evaluate`; everything here runs online too.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.base import Controller, FloatArray
from rlctl.contract import COL, KNOB_COL, KnobBounds, Knobs, clamp_array
from rlctl.errors import ConfigError

# ------------------------------------------------------------------- Kubernetes HPA
#
# A port of the HorizontalPodAutoscaler controller for a CPU-utilisation target, from
# kubernetes/kubernetes pkg/controller/podautoscaler: replica_calculator.go
# (GetResourceReplicas, groupPods), metrics/utilization.go (GetResourceUtilizationRatio) and
# horizontal.go (reconcileAutoscaler, recordInitialRecommendation, stabilizeRecommendation,
# stabilizeRecommendationWithBehaviors, convertDesiredReplicasWithRules,
# convertDesiredReplicasWithBehaviorRate, calculateScaleUpLimitWithScalingRules,
# calculateScaleDownLimitWithBehaviors, getReplicasChangePerPeriod). The functions below take
# arrays (one entry per service) so one call decides a whole evaluation batch;
# tests/test_policies/test_hpa_kubernetes.py runs Kubernetes' own test cases through them.

ScalingPolicyKind = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """One ``HPAScalingPolicy``: at most ``value`` pods (``Pods``) or percent (``Percent``) per ``period_s``."""

    kind: ScalingPolicyKind
    value: float
    period_s: float


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``HPAScalingRules`` of one direction (``spec.behavior.scaleUp`` or ``scaleDown``)."""

    policies: tuple[ScalingPolicy, ...]
    select: SelectPolicy = "Max"
    stabilization_s: float = 0.0

    @property
    def longest_period_s(self) -> float:
        return max((p.period_s for p in self.policies), default=0.0)


@dataclass(frozen=True, slots=True)
class HPAConfig:
    """A Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation, with its defaults.

    ``behavior=True`` (default) is an HPA with ``spec.behavior`` set, as
    ``deploy/k8s/base/gosvc-hpa.yaml`` deploys it: the scale-up and scale-down policies
    below (Kubernetes' defaults from pkg/apis/autoscaling/v2/defaults.go:
    ``GenerateHPAScaleUpRules``/``GenerateHPAScaleDownRules``). ``behavior=False`` is one
    without it: the legacy limit ``max(2 * current, 4)`` per sync and the
    ``--horizontal-pod-autoscaler-downscale-stabilization`` window.
    Source: kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale and
    pkg/controller/podautoscaler/horizontal.go.
    """

    #: Target average CPU utilisation (fraction of the CPU request; Kubernetes takes whole percents).
    target_cpu: float = 0.7
    #: No scaling while ``|usage ratio - 1| <= tolerance`` (``--horizontal-pod-autoscaler-tolerance``).
    tolerance: float = 0.1
    #: Sync period (``--horizontal-pod-autoscaler-sync-period``), s of telemetry time.
    sync_s: float = 15.0
    #: Scale-down stabilisation window: the highest recommendation in it wins, s.
    downscale_window_s: float = 300.0
    #: Scale-up stabilisation window (``behavior.scaleUp.stabilizationWindowSeconds``), s.
    upscale_window_s: float = 0.0
    #: Default scale-up policies: +100 % or +4 pods per 15 s, whichever allows more (``selectPolicy: Max``).
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_s: float = 15.0
    #: Default scale-down policy: -100 % per 15 s (so only the stabilisation window holds it back).
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0
    min_replicas: int = 1
    max_replicas: int = 16
    #: ``spec.behavior`` set (the v2 rate policies) or not (the legacy rule).
    behavior: bool = True
    #: Seconds of CPU usage one metric averages (metrics-server's ``--metric-resolution``, 15 s).
    metric_window_s: float = 15.0
    #: Age of the newest usage the HPA sees, s: metrics-server scrapes every 15 s and the HPA
    #: reads its latest value at its own 15 s sync, so it acts on usage 15-30 s old.
    metric_lag_s: float = 15.0
    #: Seconds from a pod's creation until it is Ready (the simulator's ``replica_start_s``).
    pod_ready_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_cpu <= 1.5:
            raise ConfigError(f"HPA target_cpu={self.target_cpu} must be a utilisation in (0, 1.5], e.g. 0.7")
        if not (math.isfinite(self.sync_s) and self.sync_s > 0):
            raise ConfigError(f"HPA sync_s={self.sync_s} must be a positive number of seconds, e.g. 15")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                f"HPA min_replicas={self.min_replicas}, max_replicas={self.max_replicas}: "
                "need 1 <= min_replicas <= max_replicas"
            )
        for name in ("tolerance", "downscale_window_s", "upscale_window_s", "scale_up_percent", "scale_up_pods",
                     "scale_up_period_s", "scale_down_percent", "scale_down_period_s", "metric_window_s",
                     "metric_lag_s", "pod_ready_s"):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"HPA {name}={value} must be a finite number >= 0")

    @property
    def scale_up_rules(self) -> ScalingRules:
        """``behavior.scaleUp`` as Kubernetes defaults it (with this config's numbers)."""
        return ScalingRules(
            (
                ScalingPolicy("Pods", self.scale_up_pods, self.scale_up_period_s),
                ScalingPolicy("Percent", self.scale_up_percent, self.scale_up_period_s),
            ),
            "Max",
            self.upscale_window_s,
        )

    @property
    def scale_down_rules(self) -> ScalingRules:
        """``behavior.scaleDown`` as Kubernetes defaults it (with this config's numbers)."""
        return ScalingRules(
            (ScalingPolicy("Percent", self.scale_down_percent, self.scale_down_period_s),), "Max",
            self.downscale_window_s,
        )  # fmt: skip


def _within(ratio: FloatArray, tolerance: float) -> npt.NDArray[np.bool_]:
    """``Tolerances.isWithin``: ``1 - tolerance <= ratio <= 1 + tolerance``."""
    return (1.0 - tolerance <= ratio) & (ratio <= 1.0 + tolerance)


def _utilization_percent(usage: FloatArray, requests: FloatArray) -> FloatArray:
    """``GetResourceUtilizationRatio``'s ``int32(usage * 100 / requests)``: whole percents, rounded down."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.floor(usage * 100.0 / requests + 1e-9)


def resource_replicas(
    current: npt.ArrayLike,
    target_percent: npt.ArrayLike,
    ready_usage: npt.ArrayLike,
    ready_requests: npt.ArrayLike,
    ready_pods: npt.ArrayLike,
    unready_requests: npt.ArrayLike = 0.0,
    unready_pods: npt.ArrayLike = 0.0,
    missing_requests: npt.ArrayLike = 0.0,
    missing_pods: npt.ArrayLike = 0.0,
    tolerance: float = 0.1,
) -> FloatArray:
    """Kubernetes' replica count for a CPU-utilisation target (``GetResourceReplicas``).

    Per service: the summed usage and requests of the ready pods with metrics, their count,
    and the requests and counts of the unready pods (pending, not Ready, or Ready for less
    than one metric window) and of the pods without metrics (``groupPods``). Whole-percent
    utilisation over the ready pods gives the usage ratio; within the tolerance the answer is
    ``current``; otherwise ``ceil(ratio * ready pods)`` — the ready pods, not ``current``,
    because a starting pod serves nothing yet. With missing pods, or unready pods on a
    scale-up, the ratio is recomputed with missing pods at 100 % (or the target, if higher)
    on a scale-down and 0 % on a scale-up, and unready pods at 0 % on a scale-up (ignored
    on a scale-down), and a result that would reverse the direction keeps ``current``.
    NaN where there is no ready pod with a metric (Kubernetes: an error, no scaling).
    """
    cur = np.asarray(current, dtype=np.float64)
    tgt = np.asarray(target_percent, dtype=np.float64)
    r_use, r_req, r_n = (np.asarray(a, dtype=np.float64) for a in (ready_usage, ready_requests, ready_pods))
    u_req, u_n = np.asarray(unready_requests, dtype=np.float64), np.asarray(unready_pods, dtype=np.float64)
    m_req, m_n = np.asarray(missing_requests, dtype=np.float64), np.asarray(missing_pods, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _utilization_percent(r_use, r_req) / tgt
        up_unready = (u_n > 0) & (ratio > 1.0)
        plain = ~up_unready & (m_n == 0)
        simple = np.where(_within(ratio, tolerance), cur, np.ceil(ratio * r_n))
        # Missing pods: 100 % (or the target) of their request on a scale-down, 0 % on a scale-up.
        has_missing = (m_n > 0) & (ratio != 1.0)
        fallback = np.maximum(100.0, tgt) / 100.0
        usage = r_use + np.where(has_missing & (ratio < 1.0), m_req * fallback, 0.0)
        requests = r_req + np.where(has_missing, m_req, 0.0) + np.where(up_unready, u_req, 0.0)
        counted = r_n + np.where(has_missing, m_n, 0.0) + np.where(up_unready, u_n, 0.0)
        new_ratio = _utilization_percent(usage, requests) / tgt
        new = np.ceil(new_ratio * counted)
        keep = (
            _within(new_ratio, tolerance)
            | ((ratio < 1.0) & (new_ratio > 1.0))
            | ((ratio > 1.0) & (new_ratio < 1.0))
            | ((new_ratio < 1.0) & (new > cur))
            | ((new_ratio > 1.0) & (new < cur))
        )
        out = np.where(plain, simple, np.where(keep, cur, new))
    return np.where((r_n > 0) & (r_req > 0) & np.isfinite(ratio), out, np.nan)


def replicas_change_in_period(times: FloatArray, changes: FloatArray, now: FloatArray, period_s: float) -> FloatArray:
    """``getReplicasChangePerPeriod``: replicas added (or removed) by events after ``now - period_s``.

    ``times``/``changes`` are ``(N, K)`` event slots (``-inf`` time: empty).
    """
    inside = times > (now - period_s)[:, None]
    return np.sum(np.where(inside, changes, 0.0), axis=1)


def _period_start(
    current: FloatArray, events: tuple[FloatArray, FloatArray, FloatArray, FloatArray], now: FloatArray, period_s: float
) -> FloatArray:
    up_t, up_v, down_t, down_v = events
    added = replicas_change_in_period(up_t, up_v, now, period_s)
    removed = replicas_change_in_period(down_t, down_v, now, period_s)
    return current - added + removed


def scale_up_limit(
    current: FloatArray,
    events: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    now: FloatArray,
    rules: ScalingRules,
) -> FloatArray:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the scale-up policies allow.

    ``events`` is ``(up times, up changes, down times, down changes)``. Each policy counts from
    the replicas at the start of its period (``current`` minus what its period added, plus
    what it removed); ``select`` Max takes the most permissive policy, Min the strictest.
    """
    if rules.select == "Disabled" or not rules.policies:
        return current.copy()
    pick = np.maximum if rules.select == "Max" else np.minimum
    result: FloatArray | None = None
    for p in rules.policies:
        start = _period_start(current, events, now, p.period_s)
        proposed = start + p.value if p.kind == "Pods" else np.ceil(start * (1.0 + p.value / 100.0))
        result = proposed if result is None else pick(result, proposed)
    assert result is not None
    return result


def scale_down_limit(
    current: FloatArray,
    events: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    now: FloatArray,
    rules: ScalingRules,
) -> FloatArray:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the scale-down policies allow."""
    if rules.select == "Disabled" or not rules.policies:
        return current.copy()
    pick = np.minimum if rules.select == "Max" else np.maximum
    result: FloatArray | None = None
    for p in rules.policies:
        start = _period_start(current, events, now, p.period_s)
        proposed = start - p.value if p.kind == "Pods" else np.trunc(start * (1.0 - p.value / 100.0))
        result = proposed if result is None else pick(result, proposed)
    assert result is not None
    return result


def convert_with_behavior_rate(
    current: FloatArray,
    desired: FloatArray,
    min_replicas: float,
    max_replicas: float,
    up_limit: FloatArray,
    down_limit: FloatArray,
) -> FloatArray:
    """``convertDesiredReplicasWithBehaviorRate``: ``desired`` within the rate limits and the bounds.

    The scale-up limit is never below ``current`` and the scale-down limit never above it,
    so events of an earlier period can hold a scale up or down but never reverse it.
    """
    up = np.minimum(max_replicas, np.maximum(up_limit, current))
    down = np.maximum(min_replicas, np.minimum(down_limit, current))
    out = np.where((desired > current) & (desired > up), up, desired)
    return np.where((desired < current) & (desired < down), down, out)


def convert_with_rules(
    current: FloatArray, desired: FloatArray, min_replicas: float, max_replicas: float
) -> FloatArray:
    """``convertDesiredReplicasWithRules`` (no ``behavior``): at most ``max(2 * current, 4)``, within the bounds."""
    allowed = np.minimum(max_replicas, np.maximum(2.0 * current, 4.0))
    return np.where(desired < min_replicas, min_replicas, np.minimum(desired, allowed))


def stabilize_with_behavior(
    current: FloatArray,
    desired: FloatArray,
    rec_times: FloatArray,
    rec_values: FloatArray,
    now: FloatArray,
    up_window_s: float,
    down_window_s: float,
) -> FloatArray:
    """``stabilizeRecommendationWithBehaviors``: ``current`` moved towards ``desired`` no further
    than the lowest recommendation of the scale-up window (up) and the highest of the scale-down
    window (down). ``rec_*`` are ``(N, K)`` earlier recommendations (``-inf`` time: empty)."""
    up_in = rec_times > (now - up_window_s)[:, None]
    down_in = rec_times > (now - down_window_s)[:, None]
    up_rec = np.minimum(desired, np.min(np.where(up_in, rec_values, np.inf), axis=1))
    down_rec = np.maximum(desired, np.max(np.where(down_in, rec_values, -np.inf), axis=1))
    return np.minimum(np.maximum(current, up_rec), down_rec)


def stabilize(desired: FloatArray, rec_times: FloatArray, rec_values: FloatArray, now: FloatArray, window_s: float
              ) -> FloatArray:  # fmt: skip
    """``stabilizeRecommendation`` (no ``behavior``): the highest recommendation not older than the window."""
    inside = rec_times >= (now - window_s)[:, None]
    return np.maximum(desired, np.max(np.where(inside, rec_values, -np.inf), axis=1))


class HPAController(Controller):
    """The Kubernetes HPA on CPU utilisation, as Kubernetes runs it.

    Every ``sync_s`` of telemetry time (the samples' ``timestamp_s``, not calls: an online
    fallback that runs once an hour must not see an hour as one interval), per service:
    ``resource_replicas`` on the usage of the *ready* pods, the stabilisation (the initial
    recommendation, ``current``, is in the window from the first sync, as
    ``recordInitialRecommendation`` puts it there), then the behavior rate limits (or, with
    ``behavior=False``, ``max(2 * current, 4)``), clamped to ``[min, max]`` replicas.
    Runtime knobs are left alone.

    What it sees, and the approximations (the telemetry contract has no per-pod data):

    - *Usage*: the mean ``cpu_util`` (usage over the requests of the serving replicas) of the
      samples in ``(t - metric_lag_s - metric_window_s, t - metric_lag_s]``: metrics-server's
      15 s rate, as old as the HPA sees it. While the window holds no sample that old, the
      newest ``metric_window_s`` instead.
    - *Ready pods*: ``TelemetrySample.replicas`` is the requested (spec) count and the
      contract has no ready count, so the ready pods are inferred from it: a pod counts
      (``groupPods``: Ready for a whole metric window, inside the CPU initialisation period)
      once it has existed ``pod_ready_s + metric_window_s`` before the metric's end, i.e. the
      lowest spec count of the samples since then (a scale-down removes starting pods first,
      as a ReplicaSet does). The rest of ``current`` are unready: 0 % on a scale-up, ignored
      on a scale-down. Pods a fault killed are not seen (they would be unready in Kubernetes);
      no pod is ever "missing" a metric, and a sample without ``cpu_util`` means no scaling.
    - Under overload (usage above the target) the answer is never below ``current`` (Kubernetes'
      rules imply it; the guard makes it structural for the online fallback), except to
      bring ``current`` down to ``max_replicas``.

    ``row_targets`` gives each service its own ``target_cpu`` (one batch sweeps the targets).
    """

    def __init__(
        self, config: HPAConfig | None = None, name: str | None = None, row_targets: npt.ArrayLike | None = None
    ) -> None:
        self.config = config or HPAConfig()
        self.name = name or f"hpa-{self.config.target_cpu:.2f}"
        self.row_targets = None if row_targets is None else np.asarray(row_targets, dtype=np.float64).ravel()
        if self.row_targets is not None and not np.all((self.row_targets > 0) & (self.row_targets <= 1.5)):
            raise ConfigError(f"HPA row_targets {self.row_targets.tolist()} must be utilisations in (0, 1.5]")

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        cfg = self.config
        if self.row_targets is not None and len(self.row_targets) != n:
            raise ConfigError(
                f"HPA {self.name}: {len(self.row_targets)} row_targets for {n} services; give one target per service"
            )
        self._targets = self.row_targets.copy() if self.row_targets is not None else np.full(n, cfg.target_cpu)
        self._lo = float(max(cfg.min_replicas, bounds.min_replicas))
        self._hi = float(min(cfg.max_replicas, bounds.max_replicas))
        self._clock = np.full(n, np.nan)
        self._next_sync = np.full(n, -np.inf)
        self._started = np.zeros(n, dtype=bool)
        # Ring buffers of recommendations and scale events; entries are >= sync_s apart, so
        # these hold every entry of the longest window.
        k_rec = math.ceil(max(cfg.downscale_window_s, cfg.upscale_window_s) / cfg.sync_s) + 2
        self._rec = (np.full((n, k_rec), -np.inf), np.zeros((n, k_rec)), np.zeros(n, dtype=np.int64))
        longest = max(cfg.scale_up_rules.longest_period_s, cfg.scale_down_rules.longest_period_s)
        k_ev = math.ceil(longest / cfg.sync_s) + 2
        self._up = (np.full((n, k_ev), -np.inf), np.zeros((n, k_ev)), np.zeros(n, dtype=np.int64))
        self._down = (np.full((n, k_ev), -np.inf), np.zeros((n, k_ev)), np.zeros(n, dtype=np.int64))

    @staticmethod
    def _push(ring: tuple[FloatArray, FloatArray, npt.NDArray[np.int64]], rows: npt.NDArray[np.int64],
              t: FloatArray, v: FloatArray) -> None:  # fmt: skip
        times, values, idx = ring
        slot = idx[rows] % times.shape[1]
        times[rows, slot] = t
        values[rows, slot] = v
        idx[rows] += 1

    def _now(self, windows: FloatArray) -> FloatArray:
        """Telemetry time of each service's newest sample; without a stamp, the last one plus an interval."""
        stamp = windows[:, -1, COL["timestamp_s"]]
        prev = self._clock
        guess = np.where(np.isfinite(prev), prev + self.interval_s, 0.0)
        now = np.where(np.isfinite(stamp), stamp, guess)
        now = np.where(np.isfinite(prev), np.maximum(now, prev), now)  # never backwards
        self._clock = now
        return now

    def _observe(self, windows: FloatArray, now: FloatArray, current: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(usage the HPA sees, ready pods counted), per service (see the class docstring)."""
        cfg = self.config
        w = windows.shape[1]
        stamps = windows[:, :, COL["timestamp_s"]]
        spaced = now[:, None] - self.interval_s * np.arange(w - 1, -1, -1)[None, :]
        stamps = np.where(np.isfinite(stamps), stamps, spaced)
        util = windows[:, :, COL["cpu_util"]]
        ok = np.isfinite(util)
        end = now - cfg.metric_lag_s
        sel = ok & (stamps > (end - cfg.metric_window_s)[:, None]) & (stamps <= end[:, None])
        fresh: npt.NDArray[np.bool_] = ~np.any(sel, axis=1)
        if fresh.any():
            recent = ok & (stamps > (now - cfg.metric_window_s)[:, None]) & (stamps <= now[:, None])
            sel = np.where(fresh[:, None], recent, sel)
            end = np.where(fresh, now, end)
        count = sel.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            usage = np.where(count > 0, np.sum(np.where(sel, util, 0.0), axis=1) / count, np.nan)
        spec = windows[:, :, COL["replicas"]]
        since = end - cfg.metric_window_s - cfg.pod_ready_s
        seen = np.isfinite(spec) & (stamps > since[:, None])
        ready = np.minimum(current, np.min(np.where(seen, spec, np.inf), axis=1))
        return usage, np.maximum(ready, 0.0)

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        cfg = self.config
        out = knobs.copy()
        now = self._now(windows)
        due = now >= self._next_sync - 1e-9
        if not due.any():
            return out
        self._next_sync = np.where(due, now + cfg.sync_s, self._next_sync)
        col = KNOB_COL["replicas"]
        current = knobs[:, col].astype(np.float64)
        first = np.flatnonzero(due & ~self._started)
        if first.size:  # recordInitialRecommendation
            self._push(self._rec, first, now[first], current[first])
            self._started[first] = True
        usage, ready = self._observe(windows, now, current)
        unready = current - ready
        target_pct = 100.0 * self._targets
        desired = resource_replicas(current, target_pct, usage * ready, ready, ready, unready, unready,
                                    tolerance=cfg.tolerance)  # fmt: skip
        over_max, under_min = current > self._hi, current < self._lo
        normal = due & np.isfinite(desired) & ~over_max & ~under_min
        desired = np.where(np.isfinite(desired), desired, current)
        rec_t, rec_v, _ = self._rec
        if cfg.behavior:
            stable = stabilize_with_behavior(current, desired, rec_t, rec_v, now, cfg.upscale_window_s,
                                             cfg.downscale_window_s)  # fmt: skip
            events = (self._up[0], self._up[1], self._down[0], self._down[1])
            up = scale_up_limit(current, events, now, cfg.scale_up_rules)
            down = scale_down_limit(current, events, now, cfg.scale_down_rules)
            normalized = convert_with_behavior_rate(current, stable, self._lo, self._hi, up, down)
        else:
            stable = stabilize(desired, rec_t, rec_v, now, cfg.downscale_window_s)
            normalized = convert_with_rules(current, stable, self._lo, self._hi)
        rows = np.flatnonzero(normal)
        self._push(self._rec, rows, now[rows], desired[rows])  # the unstabilised recommendation
        final = np.where(over_max, self._hi, np.where(under_min, self._lo, normalized))
        final = np.where(normal | (due & (over_max | under_min)), final, current)
        overload = usage > self._targets  # NaN compares False
        final = np.where(overload & ~over_max, np.maximum(final, current), final)
        if cfg.behavior:  # storeScaleEvent
            grew, shrank = np.flatnonzero(final > current), np.flatnonzero(final < current)
            self._push(self._up, grew, now[grew], (final - current)[grew])
            self._push(self._down, shrank, now[shrank], (current - final)[shrank])
        out[:, col] = final
        return out


class StaticController(Controller):
    """Fixed knobs. Go's own runtime defaults unless told otherwise.

    GOMAXPROCS defaults to the CPU quota (what Go >= 1.25 sets in a container with a
    CPU limit), GOGC to 100, no memory limit.
    """

    def __init__(self, knobs: Knobs | None = None, name: str = "static") -> None:
        self.knobs = knobs
        self.name = name

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        if self.knobs is None:
            return knobs.copy()
        return np.tile(clamp_array(self.knobs.to_array(), self.bounds), (len(knobs), 1))


@dataclass(frozen=True, slots=True)
class ThresholdConfig:
    """The seed's rule: P99 up 300% on its baseline and goroutines over baseline + 2.5 sigma."""

    p99_rise: float = 3.0
    k_sigma: float = 2.5
    baseline_samples: int = 30
    step_up: int = 2
    cooldown_s: float = 120.0
    scale_down_util: float = 0.4


class ThresholdController(Controller):
    """Scale up when P99 > (1 + p99_rise) x its baseline and goroutines exceed their
    baseline mean + k sigma; scale down by one after a cool-down with low CPU.

    Baselines learn only from samples where the rule did not fire.
    """

    def __init__(self, config: ThresholdConfig | None = None, name: str = "threshold") -> None:
        self.config = config or ThresholdConfig()
        self.name = name

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        m = self.config.baseline_samples
        self._p99 = np.full((n, m), np.nan)
        self._gor = np.full((n, m), np.nan)
        self._i = np.zeros(n, dtype=np.int64)
        self._quiet_s = np.zeros(n)

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        cfg = self.config
        out = knobs.copy()
        last = windows[:, -1, :]
        replicas = np.maximum(last[:, COL["replicas"]], 1.0)
        p99 = last[:, COL["p99_ms"]]
        gor = last[:, COL["goroutines"]] / replicas
        have = np.sum(np.isfinite(self._p99), axis=1) >= 5
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            base_p99 = np.nanmedian(np.where(have[:, None], self._p99, np.nan), axis=1)
            mu, sd = np.nanmean(self._gor, axis=1), np.nanstd(self._gor, axis=1)
        fire = have & (p99 > (1 + cfg.p99_rise) * base_p99) & (gor > mu + cfg.k_sigma * np.maximum(sd, 1e-9))
        fire = fire & np.isfinite(p99)
        rows = np.arange(self.n)
        quiet = ~fire & np.isfinite(p99)
        slot = self._i % cfg.baseline_samples
        self._p99[rows[quiet], slot[quiet]] = p99[quiet]
        self._gor[rows[quiet], slot[quiet]] = gor[quiet]
        self._i += quiet
        self._quiet_s = np.where(fire, 0.0, self._quiet_s + self.interval_s)
        current = knobs[:, KNOB_COL["replicas"]]
        util = last[:, COL["cpu_util"]]
        down = (self._quiet_s >= cfg.cooldown_s) & (util < cfg.scale_down_util)
        target = np.where(fire, current + cfg.step_up, np.where(down, current - 1, current))
        self._quiet_s = np.where(down, 0.0, self._quiet_s)
        out[:, KNOB_COL["replicas"]] = np.clip(target, self.bounds.min_replicas, self.bounds.max_replicas)
        return out
