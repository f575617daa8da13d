"""The production decision path inside a live chaos run.

With ``rlctl chaos run --backend local --online``, every controller decides through the same
path it has in production (:mod:`rlctl.online.loop`), not as a Python call inside the run:

    interval sample --XADD--> Redis stream --XREADGROUP--> window --> policy on Ray Serve
    (``ppo:*`` and ``ppo+guard:*``, ``POST /act``; the guard in the loop) or the controller's
    rule (``hpa-tuned``, ``static``, ...)
    --> safety layer (bounds, step limits, cooldowns, stale telemetry) --> audit stream
    --> the backend's actuators (replica processes in their cgroups, ``/admin/knobs``)

:class:`OnlinePath` owns a ``redis-server`` and, when a ``ppo:`` controller runs, Ray Serve
with that policy, for the whole experiment. :class:`OnlineController` is the
:class:`~policies.base.Controller` the live run calls each interval: it hands the interval's
sample to a :class:`~rlctl.online.loop.ControlLoop` as its scrape source, lets the loop
read it back from Redis, decide, limit and audit, and returns the knobs the loop actuated;
the live backend then carries them out on the real processes (the loop's actuators stand in
for it, :class:`BackendActuators`). Each run gets its own service name, so its streams and
audit trail stay apart and are kept in the report (``extra.online``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from policies import registry
from policies.base import Controller, FloatArray
from policies.guard import GuardConfig, SLOGuard
from rlctl.contract import COL, KNOB_FIELDS, KnobBounds, TelemetrySample
from rlctl.errors import ConfigError
from rlctl.online.loop import ControlConfig, ControlLoop
from rlctl.online.policy import Decision, HttpPolicy
from rlctl.online.procs import RedisServer, free_port
from rlctl.online.safety import SafetyConfig
from rlctl.online.store import TelemetryStore
from rlctl.rules import SafetyRule

log = logging.getLogger(__name__)

#: Knobs the local backend can carry out (no MSR writes on a shared host).
LOCAL_KNOBS: tuple[str, ...] = (
    "replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size",
)  # fmt: skip


class RulePolicy:
    """A baseline :class:`Controller` behind the control loop's policy interface (no server)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.name = controller.name
        self.window: int | None = None

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision:
        w = np.asarray(window, dtype=np.float64)[None]
        k = np.asarray(knobs, dtype=np.float64)[None]
        target = self.controller.decide(w, k.copy())[0]
        return Decision([], target, self.name, "", "")


class BackendActuators:
    """The control loop's actuators for a live chaos run: the backend carries the change out.

    ``read`` reports the knobs the run has in effect; ``apply`` accepts the safe target (the
    run actuates it right after :meth:`OnlineController.decide` returns).
    """

    def __init__(self, knobs: tuple[str, ...] = LOCAL_KNOBS) -> None:
        self.knobs = knobs
        self.current = np.full(len(KNOB_FIELDS), np.nan)
        self.replicas: object | None = self if "replicas" in knobs else None

    def controllable(self) -> tuple[str, ...]:
        return tuple(k for k in KNOB_FIELDS if k in self.knobs)

    def read(self, known: npt.ArrayLike) -> tuple[FloatArray, dict[str, str]]:
        out = np.asarray(known, dtype=np.float64).reshape(len(KNOB_FIELDS)).copy()
        have = np.isfinite(self.current)
        out[have] = self.current[have]
        return out, {}

    def apply(self, current: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, dict[str, str]]:
        cur = np.asarray(current, dtype=np.float64).reshape(len(KNOB_FIELDS))
        tgt = np.asarray(target, dtype=np.float64).reshape(len(KNOB_FIELDS))
        now = np.where(np.isfinite(tgt), tgt, cur)
        changed = [n for i, n in enumerate(KNOB_FIELDS) if now[i] != cur[i]]
        self.current = now.copy()
        return now, {n: "ok: handed to the backend" for n in changed}


class OnlinePath:
    """Redis (and Ray Serve, for ``ppo:`` controllers) for one experiment; use as a context manager.

    :param policies: artifacts to serve (``default`` or folders); Ray Serve serves the first.
    :param num_cpus: CPUs Ray may use.
    :param rules: boundary rules the safety layer enforces (``rlctl chaos run --rules``).
    """

    def __init__(
        self,
        policies: list[str],
        *,
        num_cpus: int = 1,
        serve_port: int | None = None,
        rules: tuple[SafetyRule, ...] = (),
    ) -> None:
        if len(set(policies)) > 1:
            raise ConfigError(
                f"--online serves one policy per experiment, got {sorted(set(policies))}; run them one at a time"
            )
        self.policies = policies
        self.num_cpus = num_cpus
        self.serve_port = serve_port
        self.rules = rules
        self.redis: Any = None
        self.serve: Any = None
        self.store_url = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> OnlinePath:

        try:
            self.redis = RedisServer().start()
            self._stack.callback(self.redis.cleanup)
            self.store_url = self.redis.url
            if self.policies:
                from rlctl.online.serve import LocalServe  # local: Ray Serve (the serve extra) is heavy

                t = time.monotonic()
                self.serve = LocalServe(self.policies[0], port=self.serve_port or free_port(), num_cpus=self.num_cpus)
                self.serve.start()
                self._stack.callback(self.serve.stop)
                log.info("Ray Serve up with %s at %s in %.0f s", self.policies[0], self.serve.url, time.monotonic() - t)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def controller(self, inner: Controller, spec: str, *, bounds: KnobBounds, interval_s: float) -> OnlineController:
        """Wrap ``inner`` (the resolved ``spec``) so it decides through this path.

        ``ppo+guard:NAME`` runs as in production: the policy on Ray Serve, the SLO guard in
        the control loop (``rlctl control --guard``)."""
        policy: Any
        guard = None
        parsed = registry.parse(spec)
        if parsed.kind == "ppo":
            if self.serve is None:
                raise ConfigError(f"--controller {spec}: Ray Serve is not running for this experiment")

            policy = HttpPolicy(self.serve.url, timeout_s=min(0.4 * interval_s, 2.0))
            if parsed.guard:
                if not isinstance(inner, SLOGuard):
                    raise ConfigError(f"--controller {spec}: expected the policy under the SLO guard, got {inner.name}")
                guard = inner.config
        else:
            policy = RulePolicy(inner)
        return OnlineController(
            inner, policy, self.store_url, bounds=bounds, interval_s=interval_s, guard=guard, rules=self.rules
        )


_SERIAL = itertools.count(1)


def served_policies(controllers: list[str]) -> list[str]:
    """The artifacts Ray Serve must serve for these controller specs (``ppo:X``, ``ppo+guard:X``)."""
    return [s.artifact for s in map(registry.parse, controllers) if s.kind == "ppo" and s.artifact]


class OnlineController(Controller):
    """``inner`` deciding through the production control loop (see the module docstring)."""

    def __init__(
        self,
        inner: Controller,
        policy: Any,
        redis_url: str,
        *,
        bounds: KnobBounds,
        interval_s: float,
        guard: GuardConfig | None = None,
        rules: tuple[SafetyRule, ...] = (),
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.rules = rules
        self.name = inner.name
        self.policy = policy
        self.redis_url = redis_url
        self.run_bounds = bounds
        self.interval_s = interval_s
        self.loop: Any = None
        self.actuators = BackendActuators()
        self.service = ""
        self._pending: TelemetrySample | None = None
        self.reasons: Counter[str] = Counter()
        self.decide_ms: list[float] = []

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:

        super().reset(n, bounds, interval_s)
        if n != 1:
            raise ConfigError("the online path controls one service per run")
        self.inner.reset(1, bounds, interval_s)
        safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.inner.name)
        # A process-wide serial: two controllers with one name reset in the same second get two streams.
        self.service = f"chaos-{safe_name}-{int(time.time())}-{next(_SERIAL)}"
        allow = tuple(k for k in bounds.allow if k in LOCAL_KNOBS)
        safety = SafetyConfig(bounds=dataclasses.replace(bounds, allow=allow), rules=self.rules)
        config = ControlConfig(service=self.service, interval_s=interval_s, safety=safety, guard=self.guard)
        store = TelemetryStore(self.redis_url, consumer=self.service)
        self.actuators = BackendActuators()
        self.loop = ControlLoop(config, self.actuators, scrape=self._scrape, store=store, policy=self.policy)  # type: ignore[arg-type]
        self.reasons.clear()
        self.decide_ms.clear()

    def _scrape(self) -> TelemetrySample:
        assert self._pending is not None
        return self._pending

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        assert self.loop is not None, "reset() first"
        row = np.array(windows[0, -1], dtype=np.float64)
        row[COL["timestamp_s"]] = time.time()  # the loop's staleness check works on wall time
        self._pending = TelemetrySample.from_array(row, service=self.service)
        self.actuators.current = np.asarray(knobs[0], dtype=np.float64).copy()
        t = time.monotonic()
        result = self.loop.step()
        self.decide_ms.append((time.monotonic() - t) * 1000)
        self.reasons[result.reason if not result.cause else f"{result.reason}/{result.cause}"] += 1
        out = np.asarray(result.applied, dtype=np.float64).reshape(len(KNOB_FIELDS))
        out = np.where(np.isfinite(out), out, knobs[0])
        return out[None]

    def summary(self) -> dict[str, Any]:
        """What the report keeps about the path: decisions by reason, decision latency, streams."""
        ms = np.asarray(self.decide_ms) if self.decide_ms else np.asarray([math.nan])
        return {
            "service": self.service,
            "redis": self.redis_url,
            "policy": getattr(self.policy, "url", None) or f"rule:{self.inner.name}",
            "decisions": dict(self.reasons),
            "decide_ms_p50": float(np.nanpercentile(ms, 50)),
            "decide_ms_p99": float(np.nanpercentile(ms, 99)),
            "streams": [f"rlctl:telemetry:{self.service}", f"rlctl:audit:{self.service}"],
        }


def audit_trail(redis_url: str, service: str, out: Path) -> int:
    """Copy one run's audit stream into ``out`` (JSON lines, oldest first); returns the records written."""
    import json

    records = TelemetryStore(redis_url).audit_records(service)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as fh:
        for r in records:
            fh.write(json.dumps(r.to_fields()) + "\n")
    tmp.replace(out)
    return len(records)
