"""The control loop: scrape -> XADD -> XREADGROUP -> window -> policy -> safety -> actuators -> audit -> XACK.

One :meth:`ControlLoop.step` per interval. It never raises because a dependency failed;
it decides what it safely can and says why, in the audit stream, the log and its metrics:

==========================  =============================================================
situation                   decision (``reason`` / ``cause``)
==========================  =============================================================
all parts up                ``policy`` (or ``hpa`` when the HPA rule is the controller)
policy server slow or down  ``fallback`` / ``policy-timeout`` or ``policy-error``: the HPA
                            rule on the same window, in the same interval
Redis down                  ``fallback`` / ``redis-down``: the HPA rule on directly scraped
                            telemetry; samples and audit records are buffered and written
                            when Redis is back; unacknowledged entries are re-read
telemetry stale, missing    ``hold`` (or ``fallback`` with ``stale_action=hpa``) /
or non-finite               ``telemetry-stale``, ``telemetry-missing``, ``telemetry-nonfinite``
Go service unreachable      ``hold`` / ``service-down``: nothing is actuated
kill switch set             ``killswitch``: nothing is actuated
dry run                     ``dry-run``: decided and audited, nothing is actuated
==========================  =============================================================

Who writes (``ControlConfig.mode``, ``rlctl control --mode``): in ``act`` the loop actuates its
decisions (it owns the Deployment's scale subresource); in ``advise`` and ``shadow`` it decides
and audits every interval as in ``act`` but writes nothing: ``advise`` publishes the decision
(``rlctl_desired_replicas``, ``rlctl_desired_knob``, the saturation forecast) for a KEDA
``ScaledObject`` or an HPA to carry out (``deploy/k8s/advise-*``), ``shadow`` only records it for
``rlctl shadow-report`` (:mod:`rlctl.online.modes`) to compare with what the running autoscaler
did. Their audit records say ``actuation["mode"]`` and, per knob, ``advised: A -> B`` or
``shadow: A -> B`` where ``act`` says ``ok: A -> B``. Safety limits apply to the advice too, from
the knobs in effect (read every step), so the advice is one safe step from what runs.

With ``ControlConfig.guard`` (``rlctl control --guard``) the policy's and the fallback's
decisions pass through the SLO guard (``policies.guard``) before the safety layer, as
``ppo+guard`` runs in evaluation; the controller is then audited as ``ppo+guard:NAME``
(``hpa+guard``) and the detail says when the guard raised the replicas.

Every part resumes on its own when it comes back. The loop exports Prometheus metrics
(:class:`ControllerMetrics`), among them ``rlctl_boundary_saturation_ratio``: the boundary
detector's forecast of how saturated the service will be 60 s ahead (1.0 = at its
boundary), for a plain HPA or KEDA to scale on.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from policies.baselines import HPAConfig, HPAController
from policies.guard import GuardConfig, SLOGuard
from rlctl.boundary.detector import BoundaryDetector, DetectorConfig
from rlctl.contract import COL, DEFAULT_SLO_P99_MS, DEFAULT_WINDOW, KNOB_COL, KNOB_FIELDS, TelemetrySample, featurize
from rlctl.errors import ConfigError
from rlctl.online.actuators import Actuators
from rlctl.online.policy import Decision, PolicyUnavailable, feature_hash, knobs_dict
from rlctl.online.safety import SafetyConfig, SafetyLayer
from rlctl.online.store import AuditRecord, Collector, StoreUnavailable, TelemetryStore

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


#: Who writes the decisions: see the module docstring.
MODES: tuple[str, ...] = ("act", "advise", "shadow")


class DecisionSink(Protocol):
    """Where each step's result goes besides the audit (``rlctl.online.events.DecisionEvents``).

    ``record`` must not raise for a failed dependency; ``flush`` writes what it held back.
    """

    def record(self, result: StepResult) -> None: ...

    def flush(self) -> None: ...


class PolicyClient(Protocol):
    """Anything that decides for one service: :class:`~rlctl.online.policy.InProcessPolicy`, ``HttpPolicy``."""

    name: str

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision: ...


@dataclass(frozen=True)
class ControlConfig:
    """Settings of one service's control loop."""

    service: str
    """The service's name: its Redis streams are ``rlctl:telemetry:<service>`` and ``rlctl:audit:<service>``."""
    interval_s: float = 5.0
    """Seconds between decisions (and scrapes)."""
    window: int = DEFAULT_WINDOW
    """Samples the policy sees (the artifact's window when the policy runs in-process)."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    hpa: HPAConfig | None = None
    """The fallback rule; default: the Kubernetes HPA defaults with the sync period set to the interval
    and no metric age (the loop acts on its own fresh scrape, not on metrics-server). Its clock is the
    telemetry's ``timestamp_s``, so a fallback after an hour of policy decisions sees an hour."""
    policy_timeout_s: float | None = None
    """Longest wait for the policy server; default 40 % of the interval (at most 2 s), so a dead
    server means the fallback in the same interval."""
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    """SLO used for the feature hash of fallback decisions and the status view."""
    read_count: int = 1000
    """Stream entries read per XREADGROUP call at most."""
    claim_idle_intervals: float = 10.0
    """Entries another consumer left unacknowledged this many intervals are taken over (XAUTOCLAIM)."""
    buffer: int = 10_000
    """Samples and audit records kept locally while Redis is down."""
    forecast_horizon_s: float = 60.0
    guard: GuardConfig | None = None
    """Run the decisions (the policy's and the fallback's) under the SLO guard
    (``policies.guard``), as ``ppo+guard`` runs in evaluation; ``None``: no guard."""
    mode: str = "act"
    """``act`` (actuate), ``advise`` (publish for an autoscaler, write nothing) or ``shadow``
    (record only); see the module docstring."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"control: mode {self.mode!r} is not one of {', '.join(MODES)}; act writes, "
                              "advise publishes for an autoscaler, shadow only records")  # fmt: skip
        if not self.service or any(c.isspace() for c in self.service):
            raise ConfigError(f"control: service name {self.service!r} must be non-empty without spaces")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ConfigError(f"control: interval_s={self.interval_s} must be a positive number of seconds")
        if self.window < 1:
            raise ConfigError(f"control: window={self.window} must be at least 1 sample")

    @property
    def effective_policy_timeout_s(self) -> float:
        return self.policy_timeout_s if self.policy_timeout_s is not None else min(0.4 * self.interval_s, 2.0)

    def hpa_config(self) -> HPAConfig:
        """The HPA rule's settings.

        In advise and shadow mode the rule's decisions are not applied by the loop, so two of its
        assumptions go: it syncs every step (``sync_s`` at most half the interval; between syncs it
        answers "what runs", which in act mode is its last decision but would make the advice
        flap with the telemetry clock), and it runs without ``behavior`` (the v2 rate limits
        count the rule's own scale events as done; the autoscaler that carries out the advice
        applies its own). The rule's legacy limit, ``max(2 * current, 4)`` per sync, still holds.
        """
        b = self.safety.bounds
        cfg = self.hpa or HPAConfig(
            # Half the interval: synced on every step even when a scraped sample's timestamp comes
            # a little early (with sync_s == interval the rule skipped every other step then).
            sync_s=0.5 * self.interval_s,
            min_replicas=b.min_replicas,
            max_replicas=b.max_replicas,
            metric_lag_s=0.0,
        )
        if self.mode != "act":
            cfg = dataclasses.replace(cfg, sync_s=min(cfg.sync_s, 0.5 * self.interval_s), behavior=False)
        return cfg


class ControllerMetrics:
    """The loop's own Prometheus metrics, in their own registry (serve them with :meth:`serve`)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter("rlctl_decisions", "Decisions by kind (reason).", ["service", "reason"], registry=r)
        self.fallbacks = Counter(
            "rlctl_fallback", "HPA fallbacks and holds by cause.", ["service", "cause"], registry=r
        )
        self.actuation_errors = Counter(
            "rlctl_actuation_errors", "Failed actuator calls.", ["service", "actuator"], registry=r
        )
        self.last_p99 = Gauge(
            "rlctl_last_p99_seconds", "P99 latency of the newest sample, in seconds.", ["service"], registry=r
        )
        self.saturation = Gauge(
            "rlctl_boundary_saturation_ratio",
            "Forecast saturation 60 s ahead (1.0 = at the performance boundary).",
            ["service"],
            registry=r,
        )
        self.replicas = Gauge("rlctl_replicas", "Replicas in effect.", ["service"], registry=r)
        self.redis_up = Gauge("rlctl_redis_up", "1 when the last Redis call succeeded.", ["service"], registry=r)
        self.step_seconds = Histogram("rlctl_step_seconds", "Duration of one control step.", ["service"], registry=r)
        self.desired_replicas = Gauge(
            "rlctl_desired_replicas",
            "Replicas the controller wants now (after its safety limits); what an advised autoscaler scales to.",
            ["service"],
            registry=r,
        )
        self.desired_knob = Gauge(
            "rlctl_desired_knob", "Runtime knob values the controller wants now.", ["service", "knob"], registry=r
        )
        self.mode = Gauge(
            "rlctl_controller_mode", "1 for the mode the controller runs in (act, advise, shadow).",
            ["service", "mode"], registry=r,
        )  # fmt: skip
        self.policy_seconds = Histogram(
            "rlctl_policy_latency_seconds", "Policy decision latency (successful calls).", ["service"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the server."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server


@dataclass
class StepResult:
    """What one step did (also kept in :attr:`ControlLoop.history`)."""

    time_s: float
    reason: str
    cause: str
    detail: str
    controller: str
    current: FloatArray
    target: FloatArray
    safe: FloatArray
    applied: FloatArray
    actuation: dict[str, str]
    notes: list[str]
    telemetry_ids: list[str]
    acked: int
    redis_ok: bool
    scraped: bool
    duration_s: float
    p99_ms: float = math.nan
    saturation: float = math.nan
    raw_action: list[int] | None = None


def _fmt_knob(v: float) -> str:
    return f"{v:g}" if math.isfinite(v) else "?"


def knobs_from_sample(row: FloatArray) -> FloatArray:
    """The knobs a telemetry sample reports (unknown ones NaN)."""
    out = np.full(len(KNOB_FIELDS), np.nan)
    out[KNOB_COL["replicas"]] = row[COL["replicas"]]
    for name in ("gomaxprocs", "gogc", "object_pool_size", "conn_pool_size"):
        out[KNOB_COL[name]] = row[COL[name]]
    mem = row[COL["gomemlimit_bytes"]]
    out[KNOB_COL["gomemlimit_mib"]] = 8192.0 if math.isinf(mem) else mem / 2**20
    out[KNOB_COL["prefetch"]] = row[COL["prefetch_on"]]
    out[KNOB_COL["turbo"]] = row[COL["turbo_on"]]
    return out


class ControlLoop:
    """The online controller of one service.

    :param config: loop settings (service, interval, safety limits, fallback rule).
    :param actuators: where decisions land (:class:`~rlctl.online.actuators.Actuators`).
    :param scrape: the telemetry source, called once per step (``None``: another process
        collects into Redis, and the loop only reads).
    :param store: the Redis store (``None``: no Redis; the loop works on directly scraped
        telemetry and audits to the log only).
    :param policy: the learned policy (``None``: the HPA rule is the controller).
    :param metrics: Prometheus metrics to update (default: a fresh registry).
    :param events: gets every step's result after the audit (Kubernetes Events on the
        Deployment: :class:`rlctl.online.events.DecisionEvents`); ``None``: none.
    """

    def __init__(
        self,
        config: ControlConfig,
        actuators: Actuators,
        *,
        scrape: Callable[[], TelemetrySample] | None = None,
        store: TelemetryStore | None = None,
        policy: PolicyClient | None = None,
        metrics: ControllerMetrics | None = None,
        events: DecisionSink | None = None,
    ) -> None:
        if scrape is None and store is None:
            raise ConfigError("control: with neither a scrape source nor Redis there is no telemetry to act on")
        allow = tuple(k for k in config.safety.bounds.allow if k in actuators.controllable())
        bounds = dataclasses.replace(config.safety.bounds, allow=allow)
        self.config = dataclasses.replace(config, safety=dataclasses.replace(config.safety, bounds=bounds))
        self.actuators = actuators
        self.store = store
        self.policy = policy
        self.metrics = metrics or ControllerMetrics()
        self.events = events
        self.collector = Collector(self._enriched(scrape), store, buffer=config.buffer) if scrape else None
        self.safety = SafetyLayer(self.config.safety, config.interval_s)
        self.hpa = HPAController(self.config.hpa_config(), name="hpa")
        self.hpa.reset(1, bounds, config.interval_s)
        self.guard = SLOGuard(None, config.guard) if config.guard is not None else None
        if self.guard is not None:
            self.guard.reset(1, bounds, config.interval_s)
        self.detector = BoundaryDetector(DetectorConfig(interval_s=config.interval_s))
        window = getattr(policy, "window", None) or config.window
        self.window: collections.deque[FloatArray] = collections.deque(maxlen=max(window, 1))
        self.known_knobs = np.full(len(KNOB_FIELDS), np.nan)
        self.audit_buffer: collections.deque[AuditRecord] = collections.deque(maxlen=config.buffer)
        self.history: collections.deque[StepResult] = collections.deque(maxlen=1000)
        self.killswitch: str | None = None
        self.redis_ok = store is not None
        self.steps = 0
        self._last_state: tuple[str, str] | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ telemetry

    def _enriched(self, scrape: Callable[[], TelemetrySample]) -> Callable[[], TelemetrySample]:
        """The source, with the replica count the actuator reports (a plain scrape cannot know it)."""

        def run() -> TelemetrySample:
            sample = scrape()
            replicas = self.known_knobs[KNOB_COL["replicas"]]
            if sample.service != self.config.service:
                sample = dataclasses.replace(sample, service=self.config.service)
            if self.actuators.replicas is not None and math.isfinite(replicas):
                sample = dataclasses.replace(sample, replicas=float(replicas))
            return sample

        return run

    def _append(self, sample: TelemetrySample) -> bool:
        """Add ``sample`` to the window unless it is not newer than the newest one (a re-delivery)."""
        row = sample.to_array()
        stamp = row[COL["timestamp_s"]]
        if self.window and math.isfinite(stamp) and stamp <= self.window[-1][COL["timestamp_s"]]:
            return False
        self.window.append(row)
        self.detector.update(sample)
        return True

    def window_array(self) -> FloatArray | None:
        return np.stack(list(self.window)) if self.window else None

    # ------------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """One decision. Never raises for a failed dependency."""
        t0 = time.monotonic()
        cfg = self.config
        service = cfg.service
        now_wall = time.time()
        redis_err: str | None = None if self.store is not None else "no Redis configured"

        current, read_errors = self.actuators.read(self.known_knobs)
        self.known_knobs = current

        sample, scrape_err = None, None
        if self.collector is not None:
            sample, err = self.collector.collect()
            if sample is None:
                scrape_err = err
            elif err is not None:
                redis_err = err

        entries = []
        if self.store is not None and redis_err is None:
            try:
                min_idle = int(cfg.claim_idle_intervals * cfg.interval_s * 1000)
                entries = self.store.read(service, count=cfg.read_count, min_idle_ms=min_idle)
            except StoreUnavailable as exc:
                redis_err = str(exc)
        for entry in entries:
            if entry.sample is not None:
                self._append(entry.sample)
            else:
                log.warning("%s: skipping telemetry entry %s: %s", service, entry.id, entry.error)
        if sample is not None and (redis_err is not None or self.store is None):
            self._append(sample)

        if self.store is not None and redis_err is None:
            try:
                self.killswitch = self.store.killswitch(service)
            except StoreUnavailable as exc:
                redis_err = str(exc)

        # Knobs nobody could read yet come from the telemetry, then from the contract defaults.
        window = self.window_array()
        if window is not None:
            self.known_knobs = np.where(np.isfinite(current), current, knobs_from_sample(window[-1]))
            current = self.known_knobs

        reason, cause, detail, controller, target, decision = self.decide(window, current, now_wall,
                                                                           scrape_err, redis_err)  # fmt: skip
        if self.guard is not None and window is not None and reason in ("policy", "fallback", "hpa"):
            target, controller, detail = self.shield(window, current, target, controller, detail)
        # Replicas that missed a knob change or became ready since get the current knobs (act mode only).
        writes = cfg.mode == "act" and not cfg.safety.dry_run and reason not in ("hold", "killswitch")
        reconcile = getattr(self.actuators, "reconcile", None)  # the chaos backend's actuators have none
        reconciled = reconcile() if writes and reconcile is not None else {}
        safe, notes, applied, actuation = self.actuate(reason, current, target, t0)
        actuation = {**reconciled, **actuation}
        if cfg.safety.dry_run and reason not in ("hold", "killswitch"):
            detail = f"would: {reason}{f' ({cause})' if cause else ''}: {detail}"
            reason = "dry-run"
        for name, value in actuation.items():
            if value.startswith("error"):
                self.metrics.actuation_errors.labels(service, name).inc()
        for name, why in read_errors.items():
            actuation.setdefault(f"read-{name}", f"error: {why}")
        if cfg.mode != "act":
            actuation["mode"] = cfg.mode

        ids = [e.id for e in entries]
        record = AuditRecord(
            service=service, time_s=now_wall, reason=reason, cause=cause, detail=detail, controller=controller,
            telemetry_ids=ids, feature_hash=decision.feature_hash if decision else self._feature_hash(window),
            raw_action=decision.action if decision else None, current_knobs=knobs_dict(current),
            target_knobs=knobs_dict(target), safe_knobs=knobs_dict(safe), safety_notes=notes,
            actuation=actuation, dry_run=cfg.safety.dry_run,
        )  # fmt: skip
        acked = 0
        self.audit_buffer.append(record)
        if self.store is not None and redis_err is None:
            try:
                self.store.audit_many(list(self.audit_buffer))
                self.audit_buffer.clear()
                acked = self.store.ack(service, ids)
            except StoreUnavailable as exc:
                redis_err = str(exc)
        elif self.store is None:
            self.audit_buffer.clear()
        self.redis_ok = self.store is not None and redis_err is None

        last = window[-1] if window is not None else None
        result = StepResult(
            time_s=now_wall, reason=reason, cause=cause, detail=detail, controller=controller, current=current,
            target=target, safe=safe, applied=applied, actuation=actuation, notes=notes, telemetry_ids=ids,
            acked=acked, redis_ok=self.redis_ok, scraped=sample is not None, duration_s=time.monotonic() - t0,
            p99_ms=float(last[COL["p99_ms"]]) if last is not None else math.nan,
            saturation=self.detector.forecast(cfg.forecast_horizon_s),
            raw_action=decision.action if decision else None,
        )  # fmt: skip
        self._observe(result)
        if self.events is not None:
            try:
                self.events.record(result)
            except Exception:  # Events explain decisions; they must never stop one
                log.exception("%s: recording the decision as an Event failed", service)
        return result

    def decide(
        self,
        window: FloatArray | None,
        current: FloatArray,
        now_wall: float,
        scrape_err: str | None,
        redis_err: str | None,
    ) -> tuple[str, str, str, str, FloatArray, Decision | None]:
        """One step's decision, without I/O (the fleet calls it per service).

        Returns ``(reason, cause, detail, controller, target, policy decision or None)``.
        """
        cfg = self.config
        hold = current.copy()

        def fallback(cause: str, detail: str) -> tuple[str, str, str, str, FloatArray, Decision | None]:
            assert window is not None
            return "fallback", cause, detail, self.hpa.name, self._hpa(window, current), None

        if scrape_err is not None:
            return "hold", "service-down", scrape_err, "none", hold, None
        if self.killswitch is not None:
            return "killswitch", "killswitch", self.killswitch, "none", hold, None
        bad = self.safety.check_telemetry(window, now_wall)
        if bad is not None:
            if cfg.safety.stale_action == "hpa" and window is not None:
                return fallback(*bad)
            return "hold", bad[0], bad[1], "none", hold, None
        assert window is not None
        if redis_err is not None and self.store is not None:
            return fallback("redis-down", redis_err)
        if self.policy is None:
            return "hpa", "", "the HPA rule is the controller", self.hpa.name, self._hpa(window, current), None
        t = time.monotonic()
        try:
            decision = self.policy.act(cfg.service, window, current)
        except PolicyUnavailable as exc:
            return fallback(exc.cause, str(exc))
        except Exception as exc:  # a broken policy must not take the loop down
            return fallback("policy-error", f"{type(exc).__name__}: {exc}")
        self.metrics.policy_seconds.labels(cfg.service).observe(time.monotonic() - t)
        return "policy", "", f"action {decision.action}", decision.policy, decision.target_knobs, decision

    def shield(
        self, window: FloatArray, current: FloatArray, target: FloatArray, controller: str, detail: str
    ) -> tuple[FloatArray, str, str]:
        """The decision under the SLO guard; the audit says when the guard raised the replicas."""
        assert self.guard is not None
        r = KNOB_COL["replicas"]
        if not math.isfinite(current[r]):  # the guard reasons about replicas it can read
            return target, controller, detail
        guarded = self.guard.shield(target[None], window[None], current[None])[0]
        guarded = np.where(np.isfinite(target), guarded, target)  # knobs nobody decided stay undecided
        name = controller.replace("ppo:", "ppo+guard:", 1) if controller.startswith("ppo:") else f"{controller}+guard"
        if guarded[r] > target[r]:
            p99 = window[-1, COL["p99_ms"]]
            detail = f"{detail}; SLO guard: replicas {target[r]:g} -> {guarded[r]:g} (P99 {p99:g} ms)"
        return guarded, name, detail

    def _hpa(self, window: FloatArray, current: FloatArray) -> FloatArray:
        return self.hpa.decide(window[None], current[None])[0]

    def actuate(
        self, reason: str, current: FloatArray, target: FloatArray, t0: float
    ) -> tuple[FloatArray, list[str], FloatArray, dict[str, str]]:
        """Safety-limit ``target`` and actuate it; returns (safe, notes, knobs now, results)."""
        if reason in ("hold", "killswitch"):
            return current.copy(), [], current.copy(), {}
        safe, notes = self.safety.limit(current, target, t0)
        changed = [n for i, n in enumerate(KNOB_FIELDS) if safe[i] != current[i] and math.isfinite(safe[i])]
        if not changed:
            return safe, notes, current.copy(), {}
        if self.config.safety.dry_run:
            return safe, notes, current.copy(), {"all": f"skipped (dry-run): would change {', '.join(changed)}"}
        if self.config.mode != "act":  # advise / shadow: the decision is the output, nothing is written
            word = "advised" if self.config.mode == "advise" else "shadow"
            results = {n: f"{word}: {_fmt_knob(current[KNOB_COL[n]])} -> {_fmt_knob(safe[KNOB_COL[n]])}"
                       for n in changed}  # fmt: skip
            return safe, notes, current.copy(), results
        applied, results = self.actuators.apply(current, safe)
        self.safety.commit(current, applied, t0)
        self.known_knobs = applied
        return safe, notes, applied, results

    def _feature_hash(self, window: FloatArray | None) -> str:
        if window is None:
            return ""
        return feature_hash(featurize(window, slo_p99_ms=self.config.slo_p99_ms))

    # ------------------------------------------------------------------ bookkeeping

    def _observe(self, r: StepResult) -> None:
        service = self.config.service
        m = self.metrics
        m.decisions.labels(service, r.reason).inc()
        if r.cause:
            m.fallbacks.labels(service, r.cause).inc()
        if math.isfinite(r.p99_ms):
            m.last_p99.labels(service).set(r.p99_ms / 1e3)  # Prometheus base unit: seconds
        m.saturation.labels(service).set(r.saturation)
        if math.isfinite(r.applied[KNOB_COL["replicas"]]):
            m.replicas.labels(service).set(r.applied[KNOB_COL["replicas"]])
        m.redis_up.labels(service).set(1.0 if r.redis_ok else 0.0)
        m.step_seconds.labels(service).observe(r.duration_s)
        self._publish_desired(r)
        self.steps += 1
        self.history.append(r)
        state = (r.reason, r.cause)
        if state != self._last_state:
            level = logging.INFO if r.reason in ("policy", "hpa", "dry-run") and not r.cause else logging.WARNING
            log.log(level, "%s: %s%s: %s", service, r.reason, f" ({r.cause})" if r.cause else "", r.detail)
            self._last_state = state
        if any(v.startswith("error") for v in r.actuation.values()):
            log.warning("%s: actuation: %s", service, r.actuation)

    def _publish_desired(self, r: StepResult) -> None:
        """What the controller wants now, for an advised autoscaler (a hold or kill switch wants what runs)."""
        m, service = self.metrics, self.config.service
        m.mode.labels(service, self.config.mode).set(1.0)
        want = r.safe if r.reason not in ("hold", "killswitch") else r.current
        replicas = want[KNOB_COL["replicas"]]
        if math.isfinite(replicas):
            m.desired_replicas.labels(service).set(replicas)
        for name in ("gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size"):
            value = want[KNOB_COL[name]]
            if math.isfinite(value):
                m.desired_knob.labels(service, name).set(value)

    def status(self) -> dict[str, Any]:
        """The newest state, for the live view."""
        r = self.history[-1] if self.history else None
        last = self.window[-1] if self.window else None
        return {
            "service": self.config.service,
            "mode": self.config.mode,
            "steps": self.steps,
            "reason": r.reason if r else "-",
            "cause": r.cause if r else "",
            "detail": r.detail if r else "",
            "controller": r.controller if r else "-",
            "p99_ms": float(last[COL["p99_ms"]]) if last is not None else math.nan,
            "offered_qps": float(last[COL["offered_qps"]]) if last is not None else math.nan,
            "cpu_util": float(last[COL["cpu_util"]]) if last is not None else math.nan,
            "sample_age_s": time.time() - float(last[COL["timestamp_s"]]) if last is not None else math.nan,
            "knobs": knobs_dict(self.known_knobs),
            "saturation": r.saturation if r else math.nan,
            "redis_ok": self.redis_ok,
            "buffered_samples": len(self.collector.pending) if self.collector else 0,
            "buffered_audit": len(self.audit_buffer),
            "actuation": r.actuation if r else {},
        }

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        self._stop.set()

    def flush(self) -> str | None:
        """Write what is still buffered (samples, audit records); ``None``, or why some stayed unwritten.

        A step whose Redis call timed out keeps its audit record for the next step; the
        last step has no next one, so :meth:`run` calls this before it returns.
        """
        if self.store is None:
            return None
        try:
            if self.collector is not None:
                self.collector.flush()
            if self.audit_buffer:
                self.store.audit_many(list(self.audit_buffer))
                self.audit_buffer.clear()
        except StoreUnavailable as exc:
            n_samples = len(self.collector.pending) if self.collector is not None else 0
            return f"{n_samples} samples and {len(self.audit_buffer)} audit records not written: {exc}"
        return None

    def run(
        self,
        *,
        max_steps: int | None = None,
        on_step: Callable[[StepResult], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Step every ``interval_s`` (on a fixed schedule) until :meth:`stop`, ``stop`` or ``max_steps``."""
        stop_event = stop or self._stop
        interval = self.config.interval_s
        next_t = time.monotonic()
        n = 0
        try:
            while not stop_event.is_set() and not self._stop.is_set() and (max_steps is None or n < max_steps):
                try:
                    result = self.step()
                    if on_step is not None:
                        on_step(result)
                except Exception:  # the loop outlives any single failure; the next step starts clean
                    log.exception("%s: control step failed; holding until the next interval", self.config.service)
                n += 1
                next_t += interval
                delay = next_t - time.monotonic()
                if delay < 0:  # a step overran: start the next one now, do not try to catch up
                    next_t = time.monotonic()
                    delay = 0.0
                stop_event.wait(delay)
        finally:  # also on Ctrl-C
            if self.events is not None:
                try:
                    self.events.flush()
                except Exception:
                    log.exception("%s: writing the held-back Events failed", self.config.service)
            unwritten = self.flush()
            if unwritten is not None:
                log.warning("%s: on stopping, %s", self.config.service, unwritten)


def run_in_thread(loop: ControlLoop, **kwargs: Any) -> threading.Thread:
    """Run ``loop`` in a daemon thread (tests, the end-to-end run); stop it with ``loop.stop()``."""
    t = threading.Thread(target=loop.run, kwargs=kwargs, daemon=True, name=f"rlctl-control-{loop.config.service}")
    t.start()
    return t


def summarize(history: Sequence[StepResult]) -> dict[str, Any]:
    """Counts of decisions by reason and cause."""
    reasons = collections.Counter(r.reason for r in history)
    causes = collections.Counter(r.cause for r in history if r.cause)
    return {"steps": len(history), "reasons": dict(reasons), "causes": dict(causes)}
