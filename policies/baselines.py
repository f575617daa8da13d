"""Baselines with the policy's interface: Kubernetes HPA, the seed's threshold rule, static.

The tuned HPA (per-scenario hindsight sweep of its CPU target) and the oracle need the
simulator and live in :mod:`policies.evaluate`; everything here runs online too.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np

from policies.base import Controller, FloatArray
from rlctl.contract import COL, KNOB_COL, KnobBounds, Knobs, clamp_array
from rlctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HPAConfig:
    """The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) defaults.

    Source: kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale and
    pkg/controller/podautoscaler/horizontal.go.
    """

    #: Target average CPU utilisation (fraction of the CPU request).
    target_cpu: float = 0.7
    #: No scaling while ``|metric / target - 1| <= tolerance`` (``--horizontal-pod-autoscaler-tolerance``).
    tolerance: float = 0.1
    #: Sync period (``--horizontal-pod-autoscaler-sync-period``), s.
    sync_s: float = 15.0
    #: Scale-down stabilisation window: the highest recommendation in it wins, s.
    downscale_window_s: float = 300.0
    #: Default scale-up policy: at most +100% or +4 pods (whichever is more) per 15 s.
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_s: float = 15.0
    min_replicas: int = 1
    max_replicas: int = 16
    #: Seconds of CPU samples averaged for the metric (metrics-server's resolution).
    metric_window_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_cpu <= 1.5:
            raise ConfigError(f"HPA target_cpu={self.target_cpu} must be a utilisation in (0, 1.5], e.g. 0.7")


class HPAController(Controller):
    """The Kubernetes HPA algorithm on CPU utilisation, faithfully.

    ``desired = ceil(current * metric / target)``, skipped inside the tolerance; every
    ``sync_s``; scale-up rate-limited to ``max(current * 2, current + 4)`` per 15 s;
    scale-down to the highest recommendation of the last 300 s; clamped to
    ``[min_replicas, max_replicas]``. Runtime knobs are left alone.
    """

    def __init__(self, config: HPAConfig | None = None, name: str | None = None) -> None:
        self.config = config or HPAConfig()
        self.name = name or f"hpa-{self.config.target_cpu:.2f}"

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        cfg = self.config
        self._t = 0.0
        self._next_sync = 0.0
        self._recs: deque[tuple[float, FloatArray]] = deque()
        self._ups: deque[tuple[float, FloatArray]] = deque()
        self._lo = max(cfg.min_replicas, bounds.min_replicas)
        self._hi = min(cfg.max_replicas, bounds.max_replicas)

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        cfg = self.config
        out = knobs.copy()
        t = self._t
        self._t += self.interval_s
        if t + 1e-9 < self._next_sync:
            return out
        self._next_sync = t + cfg.sync_s
        current = knobs[:, KNOB_COL["replicas"]]
        k = max(1, round(cfg.metric_window_s / self.interval_s))
        util = windows[:, -k:, COL["cpu_util"]]
        util = np.where(np.isfinite(util), util, np.nan)
        metric = np.nanmean(util, axis=1) if np.isfinite(util).any() else np.full(len(current), np.nan)
        ratio = metric / cfg.target_cpu
        desired = np.where(np.abs(ratio - 1.0) <= cfg.tolerance, current, np.ceil(current * ratio))
        desired = np.where(np.isfinite(desired), desired, current)  # no metric: hold
        desired = np.clip(desired, self._lo, self._hi)
        # Scale-down stabilisation: the highest recommendation of the window wins.
        self._recs.append((t, desired))
        while self._recs and self._recs[0][0] <= t - cfg.downscale_window_s:
            self._recs.popleft()
        stabilised = np.max(np.stack([r for _, r in self._recs]), axis=0)
        desired = np.where(desired < current, np.minimum(stabilised, current), desired)
        # Scale-up policy: +100% or +4 pods per period, whichever allows more.
        while self._ups and self._ups[0][0] <= t - cfg.scale_up_period_s:
            self._ups.popleft()
        base = np.min(np.stack([current, *[c for _, c in self._ups]]), axis=0)
        limit = np.maximum(base * (1 + cfg.scale_up_percent / 100.0), base + cfg.scale_up_pods)
        desired = np.where(desired > current, np.minimum(desired, limit), desired)
        self._ups.append((t, current.copy()))
        out[:, KNOB_COL["replicas"]] = np.clip(desired, self._lo, self._hi)
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
