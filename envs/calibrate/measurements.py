"""Reading measurements into :class:`~envs.calibrate.data.CalibrationData`: ``rlctl probe`` reports
(:func:`load_probe_report`) and the real test-bed suite's reports (:func:`load_suite_reports`).
Part of :mod:`envs.calibrate`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from envs.calibrate.data import (
    CalibrationData,
    Point,
    ServerStats,
    Setting,
    _num,
    host_cores,
)
from rlctl.contract import Knobs
from rlctl.errors import ConfigError
from rlctl.scoring import STEADY_MARGIN_S

# ------------------------------------------------------------------------------ probe reports


def load_probe_report(path: str | Path, *, cpu_quota_cores: float | None = None) -> CalibrationData:
    """Points from an ``rlctl probe`` report (schema ``rlctl.probe/v1``).

    The probe's load generator spaces requests uniformly, its steps follow each other
    without a pause, and every step row carries the server's rates, which are turned back
    into counters here. Steps with an error rate over 50 % are dropped (the service was
    down, not slow).
    """
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"--from-probe {p}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--from-probe {p}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict) or report.get("schema") != "rlctl.probe/v1":
        raise ConfigError(
            f"--from-probe {p}: not an rlctl probe report (schema rlctl.probe/v1); write one with `rlctl probe`"
        )
    settings = report.get("settings") or {}
    missing = [k for k in ("gomaxprocs", "gogc", "object_pool_size") if settings.get(k) is None]
    if missing:
        raise ConfigError(
            f"--from-probe {p}: the report's settings lack {missing}; probe a service whose /metrics exposes the "
            "knobs (go_sched_gomaxprocs_threads, go_gc_gogc_percent, gosvc_knob_object_pool_size)"
        )
    setting = Setting(int(settings["gomaxprocs"]), int(settings["gogc"]), int(settings["object_pool_size"]))
    quota = cpu_quota_cores or settings.get("cpu_quota_cores") or host_cores()
    ramp = report.get("ramp") or {}
    step_s, interval_s = float(ramp.get("step_s", 5.0)), float(ramp.get("interval_s", 1.0))
    points = []
    for row in report.get("curve") or []:
        qps, p99 = _num(row.get("offered_qps", row.get("qps"))), _num(row.get("p99_ms"))
        err = _num(row.get("error_rate"))
        if not (math.isfinite(qps) and math.isfinite(p99) and qps > 0) or err > 0.5:
            continue
        duration = _num(row.get("duration_s")) if row.get("duration_s") else step_s
        served = _num(row.get("served_qps"))
        gomaxprocs = float(setting.gomaxprocs)
        stats = ServerStats(
            duration_s=duration,
            requests=served * duration,
            cpu_s=_num(row.get("cpu_util")) * quota * duration,
            gc_cycles=_num(row.get("gc_cycles_per_s")) * duration,
            gc_cpu_s=_num(row.get("gc_cpu_fraction")) * gomaxprocs * duration,
            alloc_bytes=_num(row.get("alloc_bytes_per_s")) * duration,
        )
        points.append(
            Point(setting, qps, p99, _num(row.get("p50_ms")), error_rate=0.0 if math.isnan(err) else err,
                  served_qps=served, duration_s=duration, overload_s=(step_s + interval_s) / 2,
                  arrivals="uniform", server=stats)
        )  # fmt: skip
    if not points:
        raise ConfigError(f"--from-probe {p}: its curve has no step with a finite load and P99")
    return CalibrationData(points, float(quota), {"probe_report": str(p), "url": report.get("url")})


#: Seconds after a fault ends, and after a replica-count change, whose latency is not steady state.
#: (The margin :mod:`rlctl.scoring` leaves out of a run's steady part.)
SUITE_SETTLE_S = STEADY_MARGIN_S
SUITE_REPLICA_SETTLE_S = 10.0
#: Seconds at the start of a run (warm-up) left out.
SUITE_WARMUP_S = 15.0
#: Width of the per-replica load bins a suite's seconds are grouped into, req/s.
SUITE_BIN_QPS = 10.0
#: Fewest seconds in a bin for it to become a point.
SUITE_MIN_SECONDS = 5


def load_suite_reports(path: str | Path, *, cpu_quota_cores: float, holdout_from_repeat: int = 2) -> CalibrationData:
    """Points from a real chaos suite (``rlctl validate-real --out DIR``: ``DIR/*/report.json``).

    Every controller's one-second series counts. Seconds are kept only in steady state: past
    the warm-up, outside every fault window and the :data:`SUITE_SETTLE_S` after it, with the
    replica count unchanged for :data:`SUITE_REPLICA_SETTLE_S` and no errors. The balancer
    spreads the load evenly, so one second is one replica at ``offered / replicas``; seconds
    are grouped by runtime knobs, replica count and a :data:`SUITE_BIN_QPS` bin of that load,
    and a group of at least :data:`SUITE_MIN_SECONDS` becomes a point (its P99 the median of
    the seconds' P99s, like the ramps'). Runs of repeat ``holdout_from_repeat`` and later
    become ``holdout_level`` points: the profile fitted on the first repeat is scored on runs
    it has not seen. The object-pool size is not in the series; the suite's is the default.
    """
    root = Path(path)
    files = sorted(root.glob("*/report.json"))
    if not files:
        raise ConfigError(
            f"--from-suite {root}: no */report.json under it; give the --out folder of rlctl validate-real"
        )
    default_pool = Knobs().object_pool_size
    groups: dict[tuple[str, Setting, int, int], list[tuple[float, float, float]]] = {}
    runs: list[str] = []
    for f in files:
        try:
            report = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--from-suite {f}: not a readable report ({exc})") from None
        repeat = int(report.get("repeat") or 1)
        role = "fit" if repeat < holdout_from_repeat else "holdout_level"
        windows = [(float(w["start_s"]), float(w["end_s"]) + SUITE_SETTLE_S) for w in report.get("faults") or []]
        runs.append(f.parent.name)
        for result in (report.get("results") or {}).values():
            s = result.get("series") or {}
            t = np.asarray(s.get("t_s", []), dtype=np.float64)
            if t.size == 0:
                continue
            reps = np.asarray(s["replicas"], dtype=np.float64)
            changed = np.concatenate([[t[0]], t[1:][np.diff(reps) != 0]])
            for i in range(t.size):
                ti = float(t[i])
                since = ti - float(changed[changed <= ti].max())
                if ti < SUITE_WARMUP_S or since < SUITE_REPLICA_SETTLE_S or any(a <= ti <= b for a, b in windows):
                    continue
                qps, p99, p50 = _num(s["offered_qps"][i]), _num(s["p99_ms"][i]), _num(s["p50_ms"][i])
                ok = reps[i] >= 1 and qps > 0 and math.isfinite(p99) and math.isfinite(p50)
                if not ok or float(s["error_rate"][i] or 0.0) > 0:
                    continue
                per = qps / reps[i]
                setting = Setting(int(s["gomaxprocs"][i]), int(s["gogc"][i]), default_pool)
                key = (role, setting, int(reps[i]), int(per // SUITE_BIN_QPS))
                groups.setdefault(key, []).append((per, p99, p50))
    points = []
    for (role, setting, _, _), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        if len(rows) < SUITE_MIN_SECONDS:
            continue
        points.append(
            Point(setting, statistics.fmean(r[0] for r in rows), statistics.median(r[1] for r in rows),
                  statistics.median(r[2] for r in rows), duration_s=1.0, overload_s=1.0, repeats=len(rows),
                  arrivals="uniform", role=role, p99_intervals_ms=tuple(r[1] for r in rows))
        )  # fmt: skip
    if not any(p.role == "fit" for p in points):
        raise ConfigError(
            f"--from-suite {root}: no steady seconds of a first repeat to fit (runs: {', '.join(runs)}); "
            "run the suite for longer or with fewer faults"
        )
    source = {"suite": str(root), "runs": runs, "holdout_from_repeat": holdout_from_repeat,
              "steady_state": {"warmup_s": SUITE_WARMUP_S, "after_fault_s": SUITE_SETTLE_S,
                               "after_replica_change_s": SUITE_REPLICA_SETTLE_S, "bin_qps": SUITE_BIN_QPS,
                               "min_seconds": SUITE_MIN_SECONDS}}  # fmt: skip
    return CalibrationData(points, float(cpu_quota_cores), source)
