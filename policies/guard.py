"""An SLO guard around any controller: a reactive floor under the learned policy.

The learned policy trades SLO misses against replicas by what it saw in training. Faults
it has seen rarely — CPU stress that takes a share of every replica's cores, a bandwidth
cap that CPU utilisation does not show — leave it under-provisioned for minutes, or
oscillating: it scales up, P99 recovers, the CPU looks idle, it scales down again (the
simulator's ``fault-stress`` and ``fault-network`` validation scenarios). The guard is the
rule an SRE would put under any autoscaler:

1. **scale up on a sustained miss**: when P99 was over the SLO in the last ``after``
   samples, replicas go up by ``ceil(r x clip(p99 / slo - 1, 0.25, 1))`` (at least 1,
   at most ``max_up``), unless the controller already asks for more; then it waits
   ``cooldown_s`` (about one replica start) before it adds again, so replicas that are
   still starting are not double-counted;
2. **no scale-down while hot**: while the last P99 is over ``hold_frac`` x SLO the replica
   count does not fall;
3. **stabilisation after a miss**: for ``floor_s`` after the guard acted, replicas stay at
   least at what it set (the Kubernetes HPA's 300 s scale-down stabilisation window, for
   the same reason: the load that broke the SLO is likely to come back).

4. **scale with a surge of load**: when the last ``surge_after`` samples missed the SLO,
   replicas go at once to at least ``ceil(r_ok x load / load_ok)``, the count that serves
   the newest offered load at the per-replica load of the newest sample in the window that
   met the SLO (``r_ok`` replicas at ``load_ok``). The target is absolute, so unlike rule 1
   it needs no cool-down (replicas still starting are counted, not added again), and it
   asks for nothing when the load has not risen (a fault, which rules 1-3 handle). Rule 1's
   increments reach a five-fold step of load in minutes; this reaches it in one decision,
   and the misses that remain are the replicas' start-up time. Live, where the offered load
   is counted from the requests the service saw (``http_requests_total``, no load generator
   to ask), a saturated service reports about what it could take: rule 4 then asks for less
   than the surge needs and rule 1 adds the rest.

Everything else (runtime knobs, scale-down when calm) is the wrapped controller's. The
guard sees only what every controller sees (the telemetry window and the knobs), so it
runs the same in the simulator and on real services. Rules 1 and 2 and their constants
were set before the validation suite was run with the guard; rule 3 was added after that
run showed the policy oscillating under a bandwidth cap, with the HPA's default window.
None of them is tuned per scenario or swept on the validation suite. Rule 4 was added after
reading where the guarded policy missed on the validation suite's step and flash crowd (it
climbed two replicas a step while P99 sat at its ceiling); ``surge_after`` (0, 1 or 2) was
chosen on the ``train`` suite by a rule set before measuring: the fewest bursty and faulted
violation minutes at no more than 1 % more replica-seconds (1: bursty 2.42 -> 2.25 minutes,
replica-seconds +0.03 %; 2: no change). Two variants measured the same way and not taken:
rule 4 replacing rule 1 where it applies (bursty 2.36, faulted 16.83 against 16.81 minutes) and
rule 4 also setting rule 3's floor (the same violations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policies.base import Controller, FloatArray
from rlctl.contract import COL, DEFAULT_SLO_P99_MS, KNOB_COL, KnobBounds, clamp_array
from rlctl.errors import ConfigError

_R = KNOB_COL["replicas"]
_P99 = COL["p99_ms"]
_LOAD = COL["offered_qps"]
_REPS = COL["replicas"]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """The guard's rule (see the module docstring)."""

    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    after: int = 2
    """Samples in a row over the SLO before the guard adds replicas."""
    hold_frac: float = 0.75
    """No scale-down while the last P99 is over this fraction of the SLO."""
    cooldown_s: float = 30.0
    """Seconds between two guard scale-ups (about one replica start)."""
    floor_s: float = 300.0
    """Seconds the replicas the guard set stay the floor (HPA's scale-down stabilisation)."""
    max_up: int = 4
    """Replicas the guard adds at most per decision."""
    surge_after: int = 1
    """Samples in a row over the SLO before the load-proportional floor (rule 4) applies (0: never)."""

    def __post_init__(self) -> None:
        ok = self.slo_p99_ms > 0 and self.after >= 1 and 0 < self.hold_frac <= 1 and self.max_up >= 1
        if not ok or self.surge_after < 0:
            raise ConfigError(
                f"guard: need slo_p99_ms > 0, after >= 1, 0 < hold_frac <= 1, max_up >= 1, surge_after >= 0; got {self}"
            )
        if self.cooldown_s < 0 or self.floor_s < 0:
            raise ConfigError(f"guard: cooldown_s and floor_s must be >= 0; got {self}")


class SLOGuard(Controller):
    """``inner``'s decisions with the SLO guard's floor on replicas."""

    def __init__(self, inner: Controller | None, config: GuardConfig | None = None, name: str | None = None) -> None:
        """``inner`` is the wrapped controller; ``None`` for a guard used only through :meth:`shield`
        (the training environment's, which applies it to the learner's actions)."""
        self.inner = inner
        self.config = config or GuardConfig()
        base = inner.name if inner is not None else ""
        self.name = name or (base.replace("ppo:", "ppo+guard:", 1) if base.startswith("ppo:") else f"{base}+guard")
        if inner is None and name is None:
            self.name = "guard"
        self._since = np.zeros(0)
        self._floor = np.zeros(0)
        self._floor_left = np.zeros(0)

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        if self.inner is not None:
            self.inner.reset(n, bounds, interval_s)
        self._since = np.full(n, np.inf)  # seconds since the guard last added replicas
        self._floor = np.zeros(n)
        self._floor_left = np.zeros(n)  # seconds the floor still holds

    def reset_rows(self, rows: npt.ArrayLike) -> None:
        """Forget the guard's state for ``rows`` (their services started new episodes)."""
        idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        self._since[idx] = np.inf
        self._floor[idx] = 0.0
        self._floor_left[idx] = 0.0

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        if self.inner is None:
            raise TypeError("this SLOGuard wraps no controller; call shield(target, windows, knobs)")
        return self.shield(np.array(self.inner.decide(windows, knobs), dtype=np.float64), windows, knobs)

    def shield(self, target: FloatArray, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        """``target`` knobs (one row per service) with the guard's floor on replicas, clamped."""
        cfg = self.config
        target = np.array(target, dtype=np.float64)
        r = knobs[:, _R]
        p99 = windows[:, -1, _P99]
        recent = windows[:, -cfg.after :, _P99]
        self._since = self._since + self.interval_s
        full = recent.shape[1] >= cfg.after
        over = full & (recent > cfg.slo_p99_ms).all(axis=1) & (self._since >= cfg.cooldown_s)
        with np.errstate(invalid="ignore"):
            up = np.clip(np.ceil(r * np.clip(p99 / cfg.slo_p99_ms - 1.0, 0.25, 1.0)), 1, cfg.max_up)
        target[over, _R] = np.maximum(target[over, _R], r[over] + up[over])
        hot = p99 > cfg.hold_frac * cfg.slo_p99_ms  # NaN is not hot
        target[hot, _R] = np.maximum(target[hot, _R], r[hot])
        self._floor = np.where(over, np.maximum(self._floor * (self._floor_left > 0), r + up), self._floor)
        self._floor_left = np.where(over, cfg.floor_s, self._floor_left - self.interval_s)
        held = self._floor_left > 0
        target[held, _R] = np.maximum(target[held, _R], self._floor[held])
        self._since = np.where(over, 0.0, self._since)
        if cfg.surge_after > 0:  # rule 4, next to rule 1: the larger of the two targets wins
            target[:, _R] = np.maximum(target[:, _R], self._surge_need(windows, cfg))
        return clamp_array(target, self.bounds)

    @staticmethod
    def _surge_need(windows: FloatArray, cfg: GuardConfig) -> FloatArray:
        """Rule 4: replicas that serve the newest load at the per-replica load of the newest sample
        that met the SLO (0 where the last ``surge_after`` samples did not all miss it)."""
        p99 = windows[:, :, _P99]
        n = windows.shape[1]
        miss = (p99[:, -cfg.surge_after :] > cfg.slo_p99_ms).all(axis=1) & (n >= cfg.surge_after)
        met = p99 <= cfg.slo_p99_ms  # NaN meets nothing
        has = met.any(axis=1)
        last = n - 1 - np.argmax(met[:, ::-1], axis=1)
        rows = np.arange(len(windows))
        load_ok = windows[rows, last, _LOAD]
        reps_ok = windows[rows, last, _REPS]
        ok = miss & has & (load_ok > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            need = np.ceil(reps_ok * windows[:, -1, _LOAD] / load_ok - 1e-9)
        return np.where(ok & np.isfinite(need), need, 0.0)
