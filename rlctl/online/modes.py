"""Shadow mode's report: what the controller would have done against what the running autoscaler did.

A controller in ``shadow`` mode (``rlctl control --mode shadow``) decides every interval and
writes each decision to its audit stream (``rlctl:audit:<service>``), with the knobs in effect
when it decided (``current_knobs``, read from the Deployment's scale subresource and
``/admin/knobs``: what the running autoscaler set) and the knobs it would have set
(``safe_knobs``, after the safety limits). :func:`shadow_report` pairs them over a window:

- **would**: the replicas of decision *i* (``safe_knobs``). A hold (stale or missing telemetry,
  the kill switch) is no decision: it is counted in ``held`` and left out of the comparison, so
  a shadow that saw nothing is not scored as agreeing;
- **did**: the replicas the autoscaler ran one interval later (the next decision's
  ``current_knobs``), or, with ``observed`` (e.g. a Prometheus range query
  ``count(up{job="gosvc"} == 1)``), the observed count at that time;
- the P99 of the nearest telemetry sample at or before each decision (from
  ``rlctl:telemetry:<service>``), so the report can say whether the seconds over the SLO fell
  where the shadow wanted more replicas than ran.

The result (one JSON object, see :func:`shadow_report`) is what ``rlctl shadow-report`` prints.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any

from rlctl.contract import TelemetrySample
from rlctl.online.store import AuditRecord

#: Runtime knobs compared besides the replicas.
RUNTIME_KNOBS: tuple[str, ...] = ("gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")


def _num(knobs: dict[str, Any] | None, name: str) -> float:
    v = (knobs or {}).get(name)
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _at(series: Sequence[tuple[float, float]], times: list[float], t: float) -> float:
    """The value of ``series`` (sorted by time) at ``t``: the last point at or before it."""
    i = bisect.bisect_right(times, t) - 1
    return series[i][1] if i >= 0 else math.nan


def _r(v: float, nd: int = 3) -> float | None:
    return round(v, nd) if math.isfinite(v) else None


def shadow_report(
    records: Sequence[AuditRecord],
    *,
    telemetry: Sequence[TelemetrySample] = (),
    observed: Sequence[tuple[float, float]] | None = None,
    slo_p99_ms: float = 8.0,
    start_s: float | None = None,
    end_s: float | None = None,
    only_mode: str | None = "shadow",
) -> dict[str, Any]:
    """Would against did over ``[start_s, end_s]`` (wall-clock seconds; default: every record).

    :param records: the audit records, oldest first (``TelemetryStore.audit_records``).
    :param telemetry: samples of the same service (for the P99 at each decision).
    :param observed: ``(time_s, replicas)`` the autoscaler ran, from outside the audit
        (Prometheus); default: each next record's ``current_knobs``.
    :param only_mode: keep only records whose ``actuation["mode"]`` is this (``None``: all).

    Returns ``decisions``, ``compared``, ``held`` (holds: not compared), ``interval_s`` (median
    spacing), ``agree_share`` (compared decisions where the replicas would have been what ran),
    ``would_more`` / ``would_fewer`` (counts),
    ``mean_abs_diff_replicas``, ``max_abs_diff_replicas``, ``replica_seconds`` (would, did),
    ``over_slo`` (decisions whose P99 was over the SLO: all, and where the shadow wanted more
    replicas than ran), ``knob_disagreements`` (per runtime knob), ``reasons`` and ``timeline``.
    """
    rows = [r for r in records if only_mode is None or (r.actuation or {}).get("mode") == only_mode]
    rows = [r for r in rows if (start_s is None or r.time_s >= start_s) and (end_s is None or r.time_s <= end_s)]
    rows.sort(key=lambda r: r.time_s)
    gaps = sorted(b.time_s - a.time_s for a, b in itertools.pairwise(rows))
    interval = gaps[len(gaps) // 2] if gaps else math.nan
    obs = sorted(observed) if observed is not None else None
    obs_t = [t for t, _ in obs] if obs is not None else []
    tel = sorted(((s.timestamp_s, s.p99_ms) for s in telemetry if math.isfinite(s.timestamp_s)), key=lambda x: x[0])
    tel_t = [t for t, _ in tel]

    timeline: list[dict[str, Any]] = []
    knob_diff = dict.fromkeys(RUNTIME_KNOBS, 0)
    reasons: dict[str, int] = {}
    for i, r in enumerate(rows):
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
        held = r.reason in ("hold", "killswitch")
        would = _num(r.current_knobs if held else r.safe_knobs, "replicas")
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        if obs is not None:
            did = _at(obs, obs_t, r.time_s + (interval if math.isfinite(interval) else 0.0))
        else:
            did = _num(nxt.current_knobs, "replicas") if nxt is not None else math.nan
        if nxt is not None and not held:
            for k in RUNTIME_KNOBS:
                w, d = _num(r.safe_knobs, k), _num(nxt.current_knobs, k)
                if math.isfinite(w) and math.isfinite(d) and w != d:
                    knob_diff[k] += 1
        p99 = _at(tel, tel_t, r.time_s) if tel else math.nan
        timeline.append({"time_s": round(r.time_s, 3), "reason": r.reason, "controller": r.controller,
                         "ran": _num(r.current_knobs, "replicas"), "would": would, "did": did,
                         "p99_ms": _r(p99)})  # fmt: skip

    n_held = sum(1 for p in timeline if p["reason"] in ("hold", "killswitch"))
    pairs = [(p["would"], p["did"], p["p99_ms"]) for p in timeline
             if math.isfinite(p["would"] + p["did"]) and p["reason"] not in ("hold", "killswitch")]  # fmt: skip
    diffs = [w - d for w, d, _ in pairs]
    over = [(w, d) for w, d, p in pairs if p is not None and p > slo_p99_ms]
    step = interval if math.isfinite(interval) else 0.0
    replica_s = {"would": _r(sum(w for w, _, _ in pairs) * step, 1), "did": _r(sum(d for _, d, _ in pairs) * step, 1)}
    over_slo = {"slo_p99_ms": slo_p99_ms, "decisions": len(over), "where_would_more": sum(1 for w, d in over if w > d),
                "where_agree": sum(1 for w, d in over if w == d)}  # fmt: skip
    for p in timeline:  # JSON: no NaN
        for k in ("ran", "would", "did"):
            p[k] = _r(p[k], 1)
    return {
        "decisions": len(rows),
        "compared": len(pairs),
        "held": n_held,
        "window_s": [_r(rows[0].time_s), _r(rows[-1].time_s)] if rows else None,
        "interval_s": _r(interval),
        "did_from": "observed" if obs is not None else "audit (next decision's current_knobs)",
        "agree_share": _r(sum(1 for d in diffs if d == 0) / len(diffs)) if diffs else None,
        "would_more": sum(1 for d in diffs if d > 0),
        "would_fewer": sum(1 for d in diffs if d < 0),
        "mean_abs_diff_replicas": _r(sum(abs(d) for d in diffs) / len(diffs)) if diffs else None,
        "max_abs_diff_replicas": max((abs(d) for d in diffs), default=None),
        "replica_seconds": replica_s,
        "over_slo": over_slo,
        "knob_disagreements": knob_diff,
        "reasons": reasons,
        "timeline": timeline,
    }
