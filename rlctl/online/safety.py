"""The safety layer between any controller's wish and the actuators.

Whatever the policy (or a fallback) asks for, :meth:`SafetyLayer.limit` lets through only:

1. knobs inside the contract's :class:`~rlctl.contract.KnobBounds` (ladder knobs on their
   ladders, :func:`~rlctl.contract.clamp_array`); a knob not in ``bounds.allow`` keeps its
   current value. Bounds come first: a knob found outside them is brought inside at once.
2. at most one step per knob per interval: ``max_step_replicas`` replicas,
   ``max_step_gomaxprocs`` procs, ``max_rungs`` ladder rungs (GOGC, GOMEMLIMIT, pools);
3. no change of a knob within its cooldown of its last change (``cooldown_s``), and no
   scale-down within ``scale_down_after_up_s`` of a scale-up (so a policy cannot flap).

:meth:`SafetyLayer.check_telemetry` says why a window must not be acted on: no sample,
the newest older than ``stale_after_intervals`` intervals, or a required field that is
NaN, infinite or negative. The control loop then holds or falls back to the HPA rule
(``stale_action``).

4. with boundary rules (``SafetyConfig.rules``, compiled from a rule library by
   :func:`rlctl.rules.compile_rules`; ``rlctl control --rules FILE``): while a rule's fault
   is detected in the newest telemetry sample that :meth:`SafetyLayer.check_telemetry`
   accepted, knob settings inside the rule's region are forbidden. A move into it is undone
   (the knobs the controller changed keep their values); knobs already inside are moved to the
   nearest allowed value outside it, at once, as out-of-bounds knobs are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from rlctl.contract import COL, KNOB_COL, KNOB_FIELDS, LADDERS, TELEMETRY_FIELDS, KnobBounds, clamp_array
from rlctl.errors import ConfigError
from rlctl.rules import FEATURES, Condition, SafetyRule, feature_values

FloatArray = npt.NDArray[np.float64]

StaleAction = Literal["hold", "hpa"]


def _default_cooldowns() -> dict[str, float]:
    # Flipping turbo or the prefetchers changes the whole host: not more often than every 5 min.
    return {"prefetch": 300.0, "turbo": 300.0}


@dataclass(frozen=True)
class SafetyConfig:
    """Limits on what the controller may do per interval. Every field has a safe default."""

    bounds: KnobBounds = field(default_factory=KnobBounds)
    """Hard bounds on every knob, and which knobs may move at all (``allow``)."""
    max_step_replicas: int = 2
    """Replicas added or removed per interval at most."""
    max_step_gomaxprocs: int = 1
    """GOMAXPROCS change per interval at most."""
    max_rungs: int = 1
    """Ladder rungs (GOGC, GOMEMLIMIT, object pool, connection pool) moved per interval at most."""
    cooldown_s: Mapping[str, float] = field(default_factory=_default_cooldowns)
    """Seconds a knob stays untouched after it changed (knobs not listed: none)."""
    scale_down_after_up_s: float = 60.0
    """No scale-down within this many seconds of a scale-up: replicas need time to warm up."""
    stale_after_intervals: float = 3.0
    """Telemetry whose newest sample is older than this many intervals is stale."""
    stale_action: StaleAction = "hold"
    """What to do on stale, missing or non-finite telemetry: ``hold`` (no action) or ``hpa``."""
    required_fields: tuple[str, ...] = ("offered_qps", "p99_ms", "cpu_util")
    """Telemetry fields whose newest value must be a finite, non-negative number to act on it
    (P50/P99 may be missing when no request came in: there was no latency to measure)."""
    dry_run: bool = False
    """Decide and audit, but change nothing (audit reason ``dry-run``)."""
    rules: tuple[SafetyRule, ...] = ()
    """Boundary rules learned from chaos runs (:func:`rlctl.rules.compile_rules`): knob regions
    forbidden while the rule's fault is detected in the telemetry."""

    def __post_init__(self) -> None:
        for name in ("max_step_replicas", "max_step_gomaxprocs", "max_rungs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"safety: {name}={getattr(self, name)} must be at least 1, or nothing could move")
        unknown = set(self.cooldown_s) - set(KNOB_FIELDS)
        if unknown:
            raise ConfigError(f"safety: cooldown_s names unknown knob(s) {sorted(unknown)}; knobs: {list(KNOB_FIELDS)}")
        if any(v < 0 for v in self.cooldown_s.values()) or self.scale_down_after_up_s < 0:
            raise ConfigError("safety: cooldowns must be >= 0 seconds")
        if self.stale_action not in ("hold", "hpa"):
            raise ConfigError(f"safety: stale_action={self.stale_action!r}; choose 'hold' or 'hpa'")
        if not self.stale_after_intervals > 0:
            raise ConfigError(f"safety: stale_after_intervals={self.stale_after_intervals} must be positive")
        bad = set(self.required_fields) - set(COL)
        if bad:
            raise ConfigError(f"safety: required_fields has unknown telemetry field(s) {sorted(bad)}")

    def step_limits(self) -> FloatArray:
        """Largest change per interval of each knob, in knob units (ladder knobs: in rungs)."""
        limits = np.ones(len(KNOB_FIELDS))
        limits[KNOB_COL["replicas"]] = self.max_step_replicas
        limits[KNOB_COL["gomaxprocs"]] = self.max_step_gomaxprocs
        for name in LADDERS:
            limits[KNOB_COL[name]] = self.max_rungs
        return limits


def ladder_index(value: float, ladder: npt.ArrayLike) -> int:
    """Index of the rung nearest ``value`` (ties go to the lower rung)."""
    rungs = np.asarray(ladder, dtype=np.float64)
    return int(np.argmin(np.abs(rungs - value)))


def allowed_ladder(name: str, bounds: KnobBounds) -> FloatArray:
    """The rungs of ladder knob ``name`` inside ``bounds`` (what :func:`clamp_array` snaps to)."""
    col = KNOB_COL[name]
    ladder = np.asarray(LADDERS[name], dtype=np.float64)
    lo, hi = bounds.lows()[col], bounds.highs()[col]
    inside = ladder[(ladder >= lo) & (ladder <= hi)]
    return inside if inside.size else np.array([lo])


class SafetyLayer:
    """Bounds, step limits and cooldowns, with the memory of when each knob last changed.

    :param config: the limits.
    :param interval_s: the control interval (staleness is measured in intervals).
    """

    def __init__(self, config: SafetyConfig, interval_s: float) -> None:
        if not interval_s > 0:
            raise ConfigError(f"safety: interval_s={interval_s} must be positive")
        self.config = config
        self.interval_s = interval_s
        self.last_change_s: dict[str, float] = {}
        self.last_scale_up_s: float = -math.inf
        self._limits = config.step_limits()
        self._allowed = config.bounds.allowed_mask()
        self._ladders = {name: allowed_ladder(name, config.bounds) for name in LADDERS}
        self.sample: dict[str, float] = {}
        """The newest telemetry sample :meth:`check_telemetry` accepted: what the rules' detectors read."""

    # ------------------------------------------------------------------ telemetry

    def check_telemetry(self, window: npt.ArrayLike | None, now_s: float) -> tuple[str, str] | None:
        """``(cause, detail)`` when ``window`` must not be acted on, else None.

        Causes: ``telemetry-missing`` (no sample), ``telemetry-stale`` (newest sample older
        than ``stale_after_intervals`` intervals), ``telemetry-nonfinite`` (a required field
        of the newest sample is NaN, infinite or negative).
        """
        if window is None:
            return "telemetry-missing", "no telemetry sample yet"
        arr = np.asarray(window, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            return "telemetry-missing", "no telemetry sample yet"
        last = arr[-1]
        limit = self.config.stale_after_intervals * self.interval_s
        stamp = last[COL["timestamp_s"]]
        age = now_s - stamp
        if not math.isfinite(stamp) or not math.isfinite(age):
            return "telemetry-stale", f"newest sample has no usable timestamp ({float(stamp)!r})"
        if age > limit:
            n = self.config.stale_after_intervals
            return "telemetry-stale", f"newest sample is {age:.1f} s old (limit {limit:g} s = {n:g} intervals)"
        idle = last[COL["offered_qps"]] == 0.0  # no request in the window: no latency to measure
        bad = [
            f"{name}={float(last[COL[name]])!r}"
            for name in self.config.required_fields
            if not (math.isfinite(last[COL[name]]) and last[COL[name]] >= 0)
            and not (idle and name in ("p50_ms", "p99_ms") and math.isnan(last[COL[name]]))
        ]
        if bad:
            return "telemetry-nonfinite", "newest sample has unusable " + ", ".join(bad)
        self.sample = {name: float(last[i]) for i, name in enumerate(TELEMETRY_FIELDS)}
        return None

    # ------------------------------------------------------------------ knobs

    def limit(self, current: npt.ArrayLike, target: npt.ArrayLike, now_s: float) -> tuple[FloatArray, list[str]]:
        """The knobs to actuate: ``target`` within bounds, step limits and cooldowns of ``current``.

        Returns the safe knob row and notes on every limit that bit (for the audit).
        Non-finite entries of ``target`` mean "keep"; a non-finite ``current`` is taken as
        the knob's lower bound (the contract's rule for an unreadable knob).
        """
        cfg = self.config
        cur_raw = np.asarray(current, dtype=np.float64).reshape(len(KNOB_FIELDS))
        tgt_raw = np.asarray(target, dtype=np.float64).reshape(len(KNOB_FIELDS))
        cur = clamp_array(cur_raw, cfg.bounds)
        tgt = clamp_array(np.where(np.isfinite(tgt_raw), tgt_raw, cur), cfg.bounds)
        out = cur.copy()
        notes: list[str] = []
        for i, name in enumerate(KNOB_FIELDS):
            if not self._allowed[i]:
                out[i] = cur_raw[i]
                if tgt[i] != cur[i]:
                    notes.append(f"{name}: not in bounds.allow, kept at {_fmt(cur_raw[i])}")
                continue
            if cur_raw[i] != cur[i]:
                notes.append(f"{name}: {_fmt(cur_raw[i])} is out of bounds or off its ladder, taken as {_fmt(cur[i])}")
            want = self._step(name, i, cur[i], tgt[i], notes)
            if want != cur[i]:
                want = self._cooldown(name, cur[i], want, now_s, notes)
            out[i] = want
        if cfg.rules:
            out = self._rules(cur, out, notes)
        return out, notes

    # ------------------------------------------------------------------ boundary rules

    def _rules(self, cur: FloatArray, out: FloatArray, notes: list[str]) -> FloatArray:
        """``out`` outside the region of every rule whose fault the newest sample shows."""
        offered = self.sample.get("offered_qps", math.nan)
        for rule in self.config.rules:
            seen = rule.detected(self.sample)
            if seen is None or not self._inside(rule, out, offered):
                continue
            why = f"rule {rule.id} ({rule.fault} detected: {seen}) forbids {' and '.join(c.text() for c in rule.when)}"
            before = out.copy()
            for c in rule.when:  # first undo the controller's move into the region
                k = KNOB_COL[FEATURES[c.feature]]
                if out[k] != cur[k] and self._allowed[k]:
                    out[k] = cur[k]
            for c in rule.when:  # then leave it, if the knobs were already inside
                if not self._inside(rule, out, offered):
                    break
                out = self._leave(c, out, offered)
            moved = ", ".join(
                f"{n} {_fmt(before[i])} -> {_fmt(out[i])}"
                for i, n in enumerate(KNOB_FIELDS)
                if before[i] != out[i] and not (math.isnan(before[i]) and math.isnan(out[i]))
            )
            if self._inside(rule, out, offered):
                notes.append(f"{why}: cannot leave it within bounds and allow ({moved or 'nothing moved'})")
            else:
                notes.append(f"{why}: {moved}")
        return out

    @staticmethod
    def _inside(rule: SafetyRule, knobs: FloatArray, offered: float) -> bool:
        values = feature_values({n: float(knobs[i]) for i, n in enumerate(KNOB_FIELDS)}, offered)
        return all(c.holds(values) for c in rule.when)

    def _leave(self, c: Condition, knobs: FloatArray, offered: float) -> FloatArray:
        """``knobs`` with ``c``'s knob at the allowed value nearest its current one where ``c`` is false."""
        name = FEATURES[c.feature]
        k = KNOB_COL[name]
        if not self._allowed[k]:
            return knobs
        if name in self._ladders:
            options = self._ladders[name]
        else:
            lo, hi = self.config.bounds.lows()[k], self.config.bounds.highs()[k]
            options = np.arange(lo, hi + 1, dtype=np.float64)
        trial = knobs.copy()
        best: float | None = None
        for v in sorted(options, key=lambda v: (abs(v - knobs[k]), v)):
            trial[k] = v
            values = feature_values({n: float(trial[i]) for i, n in enumerate(KNOB_FIELDS)}, offered)
            if not c.holds(values):
                best = float(v)
                break
        if best is not None:
            knobs = knobs.copy()
            knobs[k] = best
        return knobs

    def _step(self, name: str, i: int, cur: float, tgt: float, notes: list[str]) -> float:
        limit = self._limits[i]
        if name in self._ladders:
            rungs = self._ladders[name]
            a, b = ladder_index(cur, rungs), ladder_index(tgt, rungs)
            if abs(b - a) > limit:
                b = a + int(math.copysign(limit, b - a))
                notes.append(f"{name}: step limited to {int(limit)} rung(s), {_fmt(tgt)} -> {_fmt(rungs[b])}")
            return float(rungs[b])
        if abs(tgt - cur) > limit:
            limited = cur + math.copysign(limit, tgt - cur)
            notes.append(f"{name}: step limited to {_fmt(limit)}, {_fmt(tgt)} -> {_fmt(limited)}")
            return limited
        return tgt

    def _cooldown(self, name: str, cur: float, want: float, now_s: float, notes: list[str]) -> float:
        cfg = self.config
        since = now_s - self.last_change_s.get(name, -math.inf)
        cool = cfg.cooldown_s.get(name, 0.0)
        if since < cool:
            notes.append(f"{name}: held by its {cool:g} s cooldown ({since:.1f} s since the last change)")
            return cur
        if name == "replicas" and want < cur:
            since_up = now_s - self.last_scale_up_s
            if since_up < cfg.scale_down_after_up_s:
                notes.append(
                    f"replicas: scale-down held, {since_up:.1f} s after a scale-up "
                    f"(scale_down_after_up_s={cfg.scale_down_after_up_s:g})"
                )
                return cur
        return want

    def commit(self, before: npt.ArrayLike, after: npt.ArrayLike, now_s: float) -> None:
        """Record that the knobs changed from ``before`` to ``after`` at ``now_s`` (after actuation)."""
        b = np.asarray(before, dtype=np.float64)
        a = np.asarray(after, dtype=np.float64)
        for i, name in enumerate(KNOB_FIELDS):
            if a[i] != b[i] and math.isfinite(a[i]):
                self.last_change_s[name] = now_s
                if name == "replicas" and a[i] > b[i]:
                    self.last_scale_up_s = now_s


def _fmt(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and float(v).is_integer() else repr(float(v))
