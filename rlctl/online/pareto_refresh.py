"""The knobs' Pareto front refreshed while controlling (``rlctl control --pareto-every SECONDS``): advisory.

Every ``every_s`` seconds a daemon thread reads the service's current load from the live
telemetry the control loop holds (the mean ``offered_qps`` of its samples of the last
:data:`LOAD_WINDOW_S` seconds), computes the knobs' Pareto front for that load in the
simulator's physics (:mod:`policies.pareto`: NSGA-II when pymoo is installed, else every
setting of the space, which is exact and, with turbo and prefetch held, about a quarter of
a million settings), and exports its called-out points on the controller's ``/metrics``
(the registry of :class:`rlctl.online.loop.ControllerMetrics`):

=============================================  =================================================
``rlctl_pareto_knob{service,point,knob}``      the point's knob values (replicas, GOMAXPROCS, ...)
``rlctl_pareto_predicted_p99_seconds``         its P99 as the simulator predicts it
``rlctl_pareto_predicted_cores``               its cores used
``rlctl_pareto_predicted_heap_bytes``          its peak heap (GC heap goals summed)
``rlctl_pareto_load_requests_per_second``      the load the front was computed for
``rlctl_pareto_front_points``                  how many settings the front holds
``rlctl_pareto_refresh_duration_seconds``      how long the last refresh took
``rlctl_pareto_last_refresh_timestamp_seconds`` when the last front was published
``rlctl_pareto_refreshes_total{outcome}``      refreshes by outcome: ``ok``, ``no-load`` (no
                                               fresh telemetry), ``infeasible`` (no setting
                                               meets the SLO at this load), ``error``
=============================================  =================================================

``point`` is ``knee`` (the chosen point: closest to the ideal after normalising the
objectives; :func:`policies.pareto.knee_points`), ``cheapest`` (fewest cores meeting the SLO)
and ``lowest_p99``. A refresh that finds no front keeps the last published values (their
timestamp says how old they are).

**Advisory only.** The refresher holds no actuator and writes nothing the loop reads: it only
reads the loop's window and known knobs and sets its own gauges, so the loop's decisions
and actuation are the same with and without it (``tests/test_rlctl/test_pareto_refresh.py``
checks that). Knobs outside the controller's ``allow`` (turbo and prefetch unless
``--allow-msr-writes``) are held at the value the service reports.

Production path: :mod:`policies.pareto` scores settings in the physics (``envs.model``,
``envs.profile``, ``envs.loads``), which the production-path contract allows; it imports no
simulator environment, rollout or trainer.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from envs.profile import ServiceProfile
from policies import pareto as P
from rlctl.contract import COL, DEFAULT_SLO_P99_MS, KNOB_FIELDS, KnobBounds, Knobs
from rlctl.errors import ConfigError

log = logging.getLogger(__name__)

#: The called-out points exported; the first is the chosen one.
POINTS: tuple[str, ...] = ("knee", "cheapest", "lowest_p99")
#: Telemetry this recent (seconds, by the samples' timestamps) makes the load.
LOAD_WINDOW_S = 60.0
#: Seconds to the next try when no load was known (the loop's first samples arrive within an interval).
NO_LOAD_RETRY_S = 5.0
#: The shipped, calibrated test-bed profile: the default when no profile is given.
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "envs" / "profiles" / "testbed.yaml"

Method = Literal["auto", "nsga2", "exhaustive"]


@dataclass(frozen=True)
class RefreshConfig:
    """What the refresher computes and how often."""

    service: str
    every_s: float = 90.0
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    bounds: KnobBounds = field(default_factory=KnobBounds)
    """The controller's knob bounds: the search space (knobs outside ``allow`` are held)."""
    method: Method = "auto"
    """``auto``: NSGA-II when pymoo is installed (the ``train`` extra), else every setting."""
    population: int = 40
    generations: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.every_s) and self.every_s > 0):
            raise ConfigError(f"--pareto-every {self.every_s!r}: give a positive number of seconds, e.g. 90")
        if not (math.isfinite(self.slo_p99_ms) and self.slo_p99_ms > 0):
            raise ConfigError(f"SLO P99 {self.slo_p99_ms!r} ms must be a positive number")


def _has_pymoo() -> bool:
    try:
        import pymoo  # noqa: F401
    except ImportError:
        return False
    return True


class ParetoMetrics:
    """The refresher's gauges, in the controller's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        r = registry
        self.knob = Gauge("rlctl_pareto_knob", "Knob values of a called-out point of the Pareto front (advisory).",
                          ["service", "point", "knob"], registry=r)  # fmt: skip
        self.p99 = Gauge("rlctl_pareto_predicted_p99_seconds", "The point's P99 as the simulator predicts it.",
                         ["service", "point"], registry=r)  # fmt: skip
        self.cores = Gauge("rlctl_pareto_predicted_cores", "The point's CPU cores used, predicted.",
                           ["service", "point"], registry=r)  # fmt: skip
        self.heap = Gauge("rlctl_pareto_predicted_heap_bytes", "The point's peak heap, predicted.",
                          ["service", "point"], registry=r)  # fmt: skip
        self.load = Gauge("rlctl_pareto_load_requests_per_second", "The load the published front was computed for.",
                          ["service"], registry=r)  # fmt: skip
        self.size = Gauge("rlctl_pareto_front_points", "Settings on the published Pareto front.", ["service"],
                          registry=r)  # fmt: skip
        self.duration = Gauge("rlctl_pareto_refresh_duration_seconds", "How long the last refresh took.",
                              ["service"], registry=r)  # fmt: skip
        self.stamp = Gauge("rlctl_pareto_last_refresh_timestamp_seconds", "When the published front was computed.",
                           ["service"], registry=r)  # fmt: skip
        self.refreshes = Counter("rlctl_pareto_refreshes", "Refreshes of the Pareto front by outcome.",
                                 ["service", "outcome"], registry=r)  # fmt: skip


def recent_load(rows: list[npt.NDArray[np.float64]], window_s: float = LOAD_WINDOW_S) -> float:
    """Mean ``offered_qps`` of the samples within ``window_s`` of the newest one (NaN: none usable)."""
    if not rows:
        return math.nan
    stamps = np.array([r[COL["timestamp_s"]] for r in rows])
    qps = np.array([r[COL["offered_qps"]] for r in rows])
    newest = np.nanmax(stamps) if np.isfinite(stamps).any() else math.nan
    recent = stamps >= newest - window_s if math.isfinite(newest) else np.ones(len(rows), dtype=bool)
    ok = recent & np.isfinite(qps) & (qps >= 0)
    return float(qps[ok].mean()) if ok.any() else math.nan


def loop_source(loop: Any) -> tuple[Callable[[], float], Callable[[], npt.NDArray[np.float64]]]:
    """Read-only views of a :class:`~rlctl.online.loop.ControlLoop`: the recent load and its known knobs."""

    def load() -> float:
        for _ in range(5):  # the loop's thread may append while we copy
            try:
                return recent_load(list(loop.window))
            except RuntimeError:
                time.sleep(0.01)
        return math.nan

    def knobs() -> npt.NDArray[np.float64]:
        return np.array(loop.known_knobs, dtype=np.float64, copy=True)

    return load, knobs


class ParetoRefresher:
    """Refreshes the front every ``config.every_s`` in a daemon thread and publishes it (advisory).

    :param load: the service's current load, requests/s (NaN or negative: none known yet).
    :param knobs: the knobs in effect in contract order (NaN: unknown); held knobs keep these.
    :param registry: the Prometheus registry to publish in (the controller's).
    :param profile: the service's calibrated profile (default: the shipped test-bed's).
    """

    def __init__(
        self,
        config: RefreshConfig,
        *,
        load: Callable[[], float],
        knobs: Callable[[], npt.NDArray[np.float64]] | None = None,
        registry: Any = None,
        profile: ServiceProfile | str | Path | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.config = config
        self.load = load
        self.knobs = knobs
        if not isinstance(profile, ServiceProfile):
            profile = ServiceProfile.load(profile or DEFAULT_PROFILE)
        self.prof: Mapping[str, npt.NDArray[np.float64]] = P.profile_arrays(profile)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ParetoMetrics(self.registry)
        self.method = (
            "nsga2" if config.method == "nsga2" or (config.method == "auto" and _has_pymoo()) else "exhaustive"
        )
        self.last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _space(self) -> P.KnobSpace:
        base = Knobs().to_array()
        if self.knobs is not None:
            now = self.knobs()
            base = np.where(np.isfinite(now), now, base)
        return P.KnobSpace(bounds=self.config.bounds, base=Knobs.from_array(base))

    def refresh_once(self) -> dict[str, Any] | None:
        """Compute and publish one front; returns what was published (None: nothing, and why in the counter)."""
        cfg, m = self.config, self.metrics
        qps = self.load()
        if not (math.isfinite(qps) and qps >= 0):
            m.refreshes.labels(cfg.service, "no-load").inc()
            return None
        start = time.monotonic()
        loads = np.array([qps])
        space = self._space()
        if self.method == "nsga2":
            front = P.nsga2_front(self.prof, space, loads, cfg.slo_p99_ms, population=cfg.population,
                                  generations=cfg.generations, seed=cfg.seed)  # fmt: skip
        else:
            front = P.exhaustive_front(self.prof, space, loads, cfg.slo_p99_ms)
        took = time.monotonic() - start
        m.duration.labels(cfg.service).set(took)
        if front.objectives.shape[0] == 0:
            m.refreshes.labels(cfg.service, "infeasible").inc()
            log.warning("%s: no knob setting meets P99 <= %g ms at %.0f req/s; the Pareto metrics keep the last front",
                        cfg.service, cfg.slo_p99_ms, qps)  # fmt: skip
            return None
        report = P.front_report(front, slo_p99_ms=cfg.slo_p99_ms)
        published = {"load_qps": qps, "method": self.method, "wall_s": took, "front_points": len(report["front"]),
                     "points": {name: report["knees"][name] for name in POINTS if name in report["knees"]}}  # fmt: skip
        self._publish(published)
        m.refreshes.labels(cfg.service, "ok").inc()
        self.last = published
        knee = report["knees"].get(POINTS[0])
        if knee is not None:
            log.info("%s: Pareto front at %.0f req/s (%d points, %.1f s): knee %s", cfg.service, qps,
                     published["front_points"], took, knee["knobs"])  # fmt: skip
        return published

    def _publish(self, published: Mapping[str, Any]) -> None:
        m, service = self.metrics, self.config.service
        for name, point in published["points"].items():
            for knob in KNOB_FIELDS:
                m.knob.labels(service, name, knob).set(float(point["knobs"][knob]))
            o = point["objectives"]
            m.p99.labels(service, name).set(o["p99_ms"] / 1e3)
            m.cores.labels(service, name).set(o["cores_used"])
            m.heap.labels(service, name).set(o["peak_heap_mib"] * 2**20)
        m.load.labels(service).set(published["load_qps"])
        m.size.labels(service).set(published["front_points"])
        m.stamp.labels(service).set(time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.config.every_s
            try:
                if self.refresh_once() is None and not math.isfinite(self.load()):
                    wait = min(wait, NO_LOAD_RETRY_S)  # at start the loop has no telemetry yet: look again soon
            except Exception:  # advisory: a failed refresh must never reach the controller
                self.metrics.refreshes.labels(self.config.service, "error").inc()
                log.exception("%s: refreshing the Pareto front failed; trying again in %g s", self.config.service,
                              self.config.every_s)  # fmt: skip
            self._stop.wait(wait)

    def start(self) -> ParetoRefresher:
        """Refresh now and then every ``every_s``, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rlctl-pareto-{self.config.service}")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def start_for_loop(loop: Any, config: RefreshConfig, *, profile: str | Path | None = None) -> ParetoRefresher:
    """A started refresher reading ``loop`` (a :class:`~rlctl.online.loop.ControlLoop`), publishing in its metrics."""
    load, knobs = loop_source(loop)
    return ParetoRefresher(config, load=load, knobs=knobs, registry=loop.metrics.registry, profile=profile).start()


__all__ = ["POINTS", "ParetoRefresher", "RefreshConfig", "loop_source", "recent_load", "start_for_loop"]
