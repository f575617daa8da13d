"""Decisions people can read: each decision that changes something, as a Kubernetes Event on the Deployment.

``kubectl describe deployment gosvc`` lists the Events whose ``involvedObject`` is the
Deployment (it asks the API server with a field selector on ``involvedObject.kind``, ``.name``,
``.namespace`` and ``.uid``). :class:`DecisionEvents` writes core/v1 Events there, so the
controller's decisions show up beside the Deployment's own::

    Type     Reason      From              Message
    Normal   ScaledUp    rlctl-controller  replicas 2 -> 4 by ppo:default (act): P99 12.3 ms over the 8 ms SLO, ...
    Normal   Advised     rlctl-controller  replicas 2 -> 4 by hpa (advise): ...; the autoscaler carries it out

===============  ========  ==============================================================
reason           type      when
===============  ========  ==============================================================
ScaledUp         Normal    ``act``: the replicas went up (other knobs may have changed too)
ScaledDown       Normal    ``act``: the replicas went down
KnobsChanged     Normal    ``act``: runtime or host knobs changed, the replicas did not
Advised          Normal    ``advise``: the advice (desired knobs) changed and differs from what runs
Fallback*        Warning   any of the above decided by the fallback rule (``FallbackScaledUp``, ...)
ActuationFailed  Warning   ``act``: an actuator refused a change (its error in the message)
===============  ========  ==============================================================

``shadow`` and dry runs write no Events: they change nothing, and a shadow controller must
not be mistaken for the one acting. Holds and kill-switch steps change nothing either.

**Rate limit** (like the kubelet's event aggregation, one Event per object and reason with a
``count``): per reason, at most one API write per ``min_interval_s`` (default 30 s). The first
decision of a reason creates an Event (``count`` 1); decisions of that reason within
``min_interval_s`` of the last write are held back and counted; the first one after it patches
the same Event (``count`` += held back + 1, ``lastTimestamp``, the newest message). After
``series_s`` (default 600 s) without that reason, or after a write failed (the Event expired),
the next one starts a new Event. :meth:`flush` (the loop calls it on stopping) writes what is
held back. So a controller flapping every 5 s
makes one write per 30 s per reason, and the count still says how many decisions there were.

The Events API needs ``create`` and ``patch`` on ``events`` (core group) in the Deployment's
namespace; the Deployment's uid comes from its ``scale`` subresource, which the controller may
already ``get``. A failing API never stops a decision: the failure is logged and counted.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlctl.contract import KNOB_COL, KNOB_FIELDS
from rlctl.errors import ConfigError
from rlctl.k8s_scale import MERGE_PATCH, api_message
from rlctl.online.loop import StepResult

log = logging.getLogger(__name__)

#: What ``reportingComponent`` and ``source.component`` say.
COMPONENT = "rlctl-controller"
#: The longest message written (events.k8s.io/v1 caps ``note`` at 1 kB; core/v1 is kept to it too).
MAX_MESSAGE = 1024


@dataclass
class _Series:
    """One Event being aggregated: its name, count so far and the held-back decisions."""

    name: str
    count: int
    first: str
    last_write: float
    last_seen: float
    pending: int = 0
    pending_message: str = ""
    pending_time: str = ""


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(v: float) -> str:
    return f"{v:g}" if math.isfinite(v) else "?"


def changes(before: Any, after: Any) -> list[str]:
    """``["replicas 2 -> 4", "gogc 100 -> 200"]`` for the knobs that differ (finite ``after`` only)."""
    out = []
    for name in KNOB_FIELDS:
        b, a = float(before[KNOB_COL[name]]), float(after[KNOB_COL[name]])
        if math.isfinite(a) and a != b:
            out.append(f"{name} {_fmt(b)} -> {_fmt(a)}")
    return out


def why(r: StepResult, slo_p99_ms: float) -> str:
    """The one-line why: the telemetry the decision saw, the fallback's cause, the safety layer's cut."""
    parts = []
    if math.isfinite(r.p99_ms):
        side = "over" if r.p99_ms > slo_p99_ms else "within"
        parts.append(f"P99 {r.p99_ms:.3g} ms {side} the {slo_p99_ms:g} ms SLO")
    if math.isfinite(r.saturation):
        parts.append(f"saturation in 60 s {r.saturation:.2f}")
    if r.cause:
        parts.append(f"{r.cause}: {r.detail}")
    elif r.reason != "policy" and r.detail:  # a policy's detail is its raw action: not for people
        parts.append(r.detail)
    elif "; " in r.detail:  # what the SLO guard added to a policy decision
        parts.append(r.detail.split("; ", 1)[1])
    if r.notes:
        parts.append("safety: " + "; ".join(r.notes))
    return ", ".join(parts) if parts else "no telemetry detail"


class DecisionEvents:
    """Kubernetes Events for the decisions of one controller on one Deployment.

    :param api_client: a ``kubernetes.client.ApiClient`` (:func:`rlctl.k8s_scale.kube_api_client`).
    :param deployment: ``NAMESPACE/NAME`` of the Deployment the Events are about.
    :param mode: the controller's mode (``act``, ``advise``, ``shadow``); ``shadow`` writes none.
    :param slo_p99_ms: the SLO the one-line why compares the P99 with.
    :param min_interval_s: at most one write per reason in this many seconds (see the module docstring).
    :param series_s: seconds without a reason after which its next decision starts a new Event.
    :param instance: ``reportingInstance`` (default ``$POD_NAME``, else the host name).
    :param clock: wall clock, seconds (tests pass their own).
    """

    def __init__(
        self,
        api_client: Any,
        deployment: str,
        *,
        mode: str = "act",
        slo_p99_ms: float = 8.0,
        min_interval_s: float = 30.0,
        series_s: float = 600.0,
        instance: str | None = None,
        request_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from kubernetes import client

        namespace, sep, name = deployment.partition("/")
        if not sep or not namespace or not name:
            raise ConfigError(f"events: deployment {deployment!r} is not NAMESPACE/NAME, e.g. default/gosvc")
        if not (min_interval_s >= 0 and series_s >= min_interval_s):
            raise ConfigError(
                f"events: min_interval_s={min_interval_s} and series_s={series_s}: need 0 <= min_interval_s <= series_s"
            )
        self.namespace, self.name, self.mode = namespace, name, mode
        self.slo_p99_ms = slo_p99_ms
        self.min_interval_s, self.series_s = min_interval_s, series_s
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._uid: str | None = None
        self._series: dict[str, _Series] = {}
        self._last_advice: tuple[float, ...] | None = None
        self.written = 0
        self.held_back = 0
        self.errors = 0

    # ------------------------------------------------------------------ what to say

    def event_for(self, r: StepResult) -> tuple[str, str, str] | None:
        """``(reason, type, message)`` for a step, or ``None`` when it changed nothing."""
        if self.mode == "shadow" or r.reason in ("hold", "killswitch", "dry-run"):
            return None
        warn = r.reason == "fallback"
        if self.mode == "advise":
            advice = tuple(float(x) for x in r.safe)
            diff = changes(r.current, r.safe)
            same = self._last_advice is not None and all(
                a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(advice, self._last_advice, strict=True)
            )
            self._last_advice = advice
            if not diff or same:
                return None
            reason, tail = "Advised", "; the autoscaler carries it out"
        else:
            failed = {k: v for k, v in r.actuation.items() if v.startswith("error") and not k.startswith("read-")}
            diff = changes(r.current, r.applied)
            if failed and not diff:
                text = "; ".join(f"{k}: {v}" for k, v in failed.items())
                return "ActuationFailed", "Warning", self._message(r, changes(r.current, r.safe), f"; {text}")
            if not diff:
                return None
            r_col = KNOB_COL["replicas"]
            if r.applied[r_col] > r.current[r_col]:
                reason = "ScaledUp"
            elif r.applied[r_col] < r.current[r_col]:
                reason = "ScaledDown"
            else:
                reason = "KnobsChanged"
            tail = f"; failed: {', '.join(failed)}" if failed else ""
        if warn:
            reason = f"Fallback{reason}"
        return reason, "Warning" if warn else "Normal", self._message(r, diff, tail)

    def _message(self, r: StepResult, diff: list[str], tail: str) -> str:
        text = f"{', '.join(diff) or 'no change'} by {r.controller} ({self.mode}): {why(r, self.slo_p99_ms)}{tail}"
        return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."

    # ------------------------------------------------------------------ writing

    def record(self, r: StepResult) -> None:
        """Write (or hold back and count) the Event of step ``r``; never raises for an API failure."""
        what = self.event_for(r)
        if what is None:
            return
        reason, kind, message = what
        now = self.clock()
        series = self._series.get(reason)
        if series is None or now - series.last_seen > self.series_s:
            self._create(reason, kind, message, now)
        elif now - series.last_write >= self.min_interval_s:
            self._patch(series, kind, message, now, series.pending + 1)
        else:
            series.pending += 1
            series.pending_message, series.pending_time = message, _iso(now)
            series.last_seen = now
            self.held_back += 1

    def flush(self) -> None:
        """Write the decisions held back by the rate limit (their count and newest message)."""
        now = self.clock()
        for series in self._series.values():
            if series.pending:
                self._patch(series, None, series.pending_message, now, series.pending)

    def _create(self, reason: str, kind: str, message: str, now: float) -> None:
        uid = self._deployment_uid()
        stamp = _iso(now)
        name = f"{self.name}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": self.namespace},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name,
                               "namespace": self.namespace, **({"uid": uid} if uid else {})},
            "reason": reason,
            "message": message,
            "type": kind,
            "action": {"act": "Actuate", "advise": "Advise"}.get(self.mode, self.mode.capitalize()),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }  # fmt: skip
        if self._call("create", self._core.create_namespaced_event, self.namespace, body):
            self._series[reason] = _Series(name, 1, stamp, now, now)

    def _patch(self, series: _Series, kind: str | None, message: str, now: float, add: int) -> None:
        stamp = series.pending_time if kind is None else _iso(now)
        body = {"count": series.count + add, "lastTimestamp": stamp, "message": message}
        ok = self._call("patch", self._core.patch_namespaced_event, series.name, self.namespace, body,
                        _content_type=MERGE_PATCH)  # fmt: skip
        if ok:
            series.count += add
            series.pending, series.pending_message = 0, ""
            series.last_write = now
            series.last_seen = now
        else:  # gone (an Event's TTL is an hour) or refused: the next decision starts a new Event
            self._series = {k: v for k, v in self._series.items() if v is not series}

    def _deployment_uid(self) -> str | None:
        """The Deployment's uid (``kubectl describe`` selects on it), from its scale subresource."""
        if self._uid is None:
            scale = self._call("get", self._apps.read_namespaced_deployment_scale, self.name, self.namespace)
            if scale is not None:
                self._uid = scale.metadata.uid or None
        return self._uid

    def _call(self, verb: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            out = fn(*args, _request_timeout=self.request_timeout_s, **kwargs)
        except ApiException as exc:
            self.errors += 1
            hint = " (RBAC: grant create and patch on events)" if exc.status == 403 else ""
            log.warning("events on deployment %s/%s: %s failed: HTTP %s %s%s", self.namespace, self.name, verb,
                        exc.status, api_message(exc), hint)  # fmt: skip
            return None
        except HTTPError as exc:
            self.errors += 1
            log.warning("events on deployment %s/%s: %s failed: %s", self.namespace, self.name, verb, exc)
            return None
        if verb != "get":
            self.written += 1
        return out if out is not None else True
