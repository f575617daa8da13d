"""Scrape a Go service's ``/metrics`` into :class:`rlctl.contract.TelemetrySample` records.

A sample describes a *window*, so it takes two scrapes: :class:`Scraper` keeps the
previous :class:`MetricsSnapshot` and :func:`compute_sample` turns the pair into rates
(counter deltas over the wall time between the scrapes) and latency quantiles (histogram
bucket deltas, interpolated linearly inside a bucket exactly as Prometheus's
``histogram_quantile`` does).

Counters are differenced per series; a series whose value went down is treated as
restarted from zero (the process restarted between scrapes), as Prometheus's ``rate``
does. A histogram series whose ``_count`` went down is taken whole from the new scrape.

Metric names, in the order tried (first found wins):

================================  ===================================================
field                             source
================================  ===================================================
offered_qps                       the load generator when given, else ``http_requests_total``
                                  (all codes), else the latency histogram's ``_count``
served_qps, error_rate            ``http_requests_total`` split on its ``code`` label (5xx = error)
p50_ms, p99_ms                    ``http_request_duration_seconds`` bucket deltas
goroutines                        ``go_goroutines``
gc_cycles_per_s                   ``go_gc_cycles_total_gc_cycles_total``, ``go_gc_duration_seconds_count``
gc_cpu_fraction                   ``go_cpu_classes_gc_total_cpu_seconds_total`` /
                                  ``go_cpu_classes_total_cpu_seconds_total``
alloc_bytes_per_s                 ``go_memstats_alloc_bytes_total``, ``go_gc_heap_allocs_bytes_total``
heap_bytes                        ``go_memstats_heap_alloc_bytes``, ``go_gc_heap_live_bytes``
cpu_util                          ``process_cpu_seconds_total`` / interval / quota (``gosvc_cpu_quota_cores``
                                  when limited, else GOMAXPROCS)
cfs_throttled_fraction            ``gosvc_cfs_throttled_periods_total`` / ``gosvc_cfs_periods_total``
gomaxprocs                        ``go_sched_gomaxprocs_threads``, ``gosvc_knob_gomaxprocs``
gogc                              ``go_gc_gogc_percent``, ``gosvc_knob_gogc``
gomemlimit_bytes                  ``go_gc_gomemlimit_bytes``, ``gosvc_knob_gomemlimit_bytes`` (unlimited = +inf)
object_pool_size, conn_pool_size  ``gosvc_knob_object_pool_size``, ``gosvc_knob_conn_pool_size``
================================  ===================================================

A service exposing only client_golang's default collectors gets NaN for what those do not
cover (GC CPU fraction, throttling, the pool knobs); nothing is estimated. An unlimited
GOMEMLIMIT is reported as ``+inf``, which :func:`rlctl.contract.featurize` maps to its
neutral "no practical limit" value.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlctl.contract import TELEMETRY_FIELDS, TelemetrySample
from rlctl.errors import TelemetryError

logger = logging.getLogger(__name__)

NAN = float("nan")

#: ``go_gc_gomemlimit_bytes`` reports math.MaxInt64 when no limit is set.
_UNLIMITED_MEMLIMIT = 2.0**63 - 1

LabelSet = frozenset[tuple[str, str]]
Series = dict[LabelSet, float]
LabelFilter = Mapping[str, str]


def _labels_match(labels: LabelSet, match: LabelFilter | None) -> bool:
    """A series matches when every filter label it carries has the wanted value.

    A series without the label at all also matches, so a ``handler`` filter does not hide
    services whose histogram has no ``handler`` label.
    """
    if not match:
        return True
    have = dict(labels)
    return all(have.get(k, v) == v for k, v in match.items())


@dataclass(frozen=True)
class MetricsSnapshot:
    """One parsed scrape: every sample by name, with its labels, and when it was taken.

    ``time_s`` is wall-clock (the sample's timestamp); ``monotonic_s`` measures the
    interval between two snapshots, immune to clock steps.
    """

    url: str
    time_s: float
    monotonic_s: float
    samples: dict[str, Series] = field(repr=False)

    def has(self, name: str) -> bool:
        return name in self.samples

    def first(self, names: Iterable[str], match: LabelFilter | None = None) -> tuple[str, float] | None:
        """The first of ``names`` present, and its value summed over matching series."""
        for name in names:
            total = self.total(name, match)
            if total is not None:
                return name, total
        return None

    def total(self, name: str, match: LabelFilter | None = None) -> float | None:
        """Sum over the matching series of ``name``; None when the metric is absent."""
        series = self.samples.get(name)
        if series is None:
            return None
        values = [v for labels, v in series.items() if _labels_match(labels, match)]
        return math.fsum(values) if values else None

    def gauge(self, *names: str) -> float:
        """The first present of ``names`` (summed over its series), NaN when none is."""
        found = self.first(names)
        return NAN if found is None else found[1]

    def label_value(self, name: str, label: str) -> str | None:
        """The value of ``label`` on the first series of ``name`` (e.g. go_info's version)."""
        for labels in self.samples.get(name, {}):
            value = dict(labels).get(label)
            if value is not None:
                return value
        return None

    def settings(self) -> dict[str, Any]:
        """The service's runtime settings, JSON-friendly (None where not exposed)."""
        quota = self.gauge("gosvc_cpu_quota_cores")
        memlimit = _memlimit(self)
        return {
            "go_version": self.label_value("go_info", "version"),
            "gomaxprocs": _int_or_none(self.gauge("go_sched_gomaxprocs_threads", "gosvc_knob_gomaxprocs")),
            "cpu_quota_cores": quota if math.isfinite(quota) and quota > 0 else None,
            "cpu_quota": ("unknown" if math.isnan(quota) else "unlimited" if quota <= 0 else f"{quota:g} cores"),
            "gogc": _int_or_none(self.gauge("go_gc_gogc_percent", "gosvc_knob_gogc")),
            "gomemlimit_bytes": _int_or_none(memlimit),
            "gomemlimit": "unknown" if math.isnan(memlimit) else "unlimited" if math.isinf(memlimit) else None,
            "object_pool_size": _int_or_none(self.gauge("gosvc_knob_object_pool_size")),
            "conn_pool_size": _int_or_none(self.gauge("gosvc_knob_conn_pool_size")),
        }


def _int_or_none(v: float) -> int | None:
    return int(v) if math.isfinite(v) else None


def _memlimit(snap: MetricsSnapshot) -> float:
    runtime = snap.gauge("go_gc_gomemlimit_bytes")
    if not math.isnan(runtime):
        return math.inf if runtime >= _UNLIMITED_MEMLIMIT else runtime
    knob = snap.gauge("gosvc_knob_gomemlimit_bytes")
    return math.inf if knob == 0 else knob


# ------------------------------------------------------------------------------ fetch/parse


def fetch_metrics(url: str, *, timeout_s: float = 2.0) -> str:
    """GET ``url`` and return the body; :class:`TelemetryError` on any failure."""
    req = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        raise TelemetryError(
            f"scrape {url}: HTTP {exc.code} {exc.reason}; check that the URL is the /metrics endpoint"
        ) from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TelemetryError(
            f"scrape {url}: {reason}; check that the service is running and --metrics-url is right"
        ) from exc
    return body.decode("utf-8", errors="replace")


def parse_metrics(text: str, *, url: str = "<text>", time_s: float | None = None) -> MetricsSnapshot:
    """Parse Prometheus text exposition with ``prometheus_client``'s parser.

    :class:`TelemetryError` names ``url`` when the text is not exposition format or
    holds no samples at all.
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, Series] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, {})[frozenset(s.labels.items())] = float(s.value)
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on bad input
        raise TelemetryError(f"scrape {url}: not Prometheus text format ({type(exc).__name__}: {exc})") from exc
    if not samples:
        raise TelemetryError(f"scrape {url}: no metric samples in the response; is this the /metrics endpoint?")
    return MetricsSnapshot(
        url=url,
        time_s=time.time() if time_s is None else time_s,
        monotonic_s=time.monotonic() if time_s is None else time_s,
        samples=samples,
    )


# ------------------------------------------------------------------------------ deltas


def series_deltas(prev: MetricsSnapshot, cur: MetricsSnapshot, name: str) -> dict[LabelSet, float]:
    """Increase of every series of counter ``name`` between two snapshots.

    ``cur - prev``, or ``cur`` when the counter went down (restarted from 0) or the
    series is new. Empty when the metric is absent from ``cur``.
    """
    before = prev.samples.get(name, {})
    out: dict[LabelSet, float] = {}
    for labels, value in cur.samples.get(name, {}).items():
        old = before.get(labels, 0.0)
        out[labels] = value - old if value >= old else value
    return out


def counter_delta(prev: MetricsSnapshot, cur: MetricsSnapshot, name: str, match: LabelFilter | None = None) -> float:
    """Increase of counter ``name`` summed over the matching series; NaN when absent."""
    if not cur.has(name):
        return NAN
    return math.fsum(d for labels, d in series_deltas(prev, cur, name).items() if _labels_match(labels, match))


def _first_delta(prev: MetricsSnapshot, cur: MetricsSnapshot, names: Iterable[str]) -> float:
    for name in names:
        if cur.has(name):
            return counter_delta(prev, cur, name)
    return NAN


def histogram_buckets(
    prev: MetricsSnapshot | None, cur: MetricsSnapshot, name: str, match: LabelFilter | None = None
) -> list[tuple[float, float]]:
    """Cumulative bucket counts ``(le, count)`` of histogram ``name`` over the window.

    Series are differenced one by one (a series whose ``_count`` went down is taken
    whole from ``cur``) and then summed per ``le``. Empty when the histogram is absent.
    """
    buckets = cur.samples.get(f"{name}_bucket")
    if not buckets:
        return []
    counts_now = cur.samples.get(f"{name}_count", {})
    counts_before = prev.samples.get(f"{name}_count", {}) if prev else {}
    before = prev.samples.get(f"{name}_bucket", {}) if prev else {}
    by_le: dict[float, float] = {}
    for labels, value in buckets.items():
        if not _labels_match(labels, match):
            continue
        label_map = dict(labels)
        le = float(label_map.pop("le"))
        base = frozenset(label_map.items())
        restarted = counts_now.get(base, math.inf) < counts_before.get(base, 0.0)
        old = 0.0 if restarted else before.get(labels, 0.0)
        by_le[le] = by_le.get(le, 0.0) + (value - old if value >= old else value)
    return sorted(by_le.items())


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` buckets.

    Linear interpolation inside the bucket holding rank ``q * total``; the first bucket's
    lower edge is 0; a rank in the ``+Inf`` bucket returns the highest finite bound. NaN
    with no observations, fewer than two buckets or no ``+Inf`` bucket.
    """
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return NAN
    # Bucket counts must be monotonic; a scrape racing observations can break that.
    bounds = [b for b, _ in buckets]
    counts: list[float] = []
    for _, c in buckets:
        counts.append(max(c, counts[-1]) if counts else c)
    observations = counts[-1]
    if observations == 0:
        return NAN
    rank = q * observations
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


# ------------------------------------------------------------------------------ samples


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den) or den <= 0:
        return NAN
    return num / den


def compute_sample(
    prev: MetricsSnapshot | None,
    cur: MetricsSnapshot,
    *,
    offered_qps: float | None = None,
    service: str = "default",
    replicas: float = 1.0,
    histogram: str = "http_request_duration_seconds",
    request_counter: str = "http_requests_total",
    handler: str | None = None,
    host: Mapping[str, float] | None = None,
) -> TelemetrySample:
    """The window between ``prev`` and ``cur`` as a :class:`TelemetrySample`.

    Without ``prev`` only the gauges (goroutines, heap, knobs) are known and every rate
    and quantile is NaN. ``offered_qps`` from a load generator overrides the server-side
    request rate (the server only counts requests it got to). ``handler`` restricts the
    request counter and histogram to series with that ``handler`` label. ``host`` adds
    host-sensor fields (``cpu_temp_c``, ``cpu_freq_ghz``, ``numa_remote_fraction``,
    ``turbo_on``, ``prefetch_on``).
    """
    values: dict[str, float] = dict.fromkeys(TELEMETRY_FIELDS, NAN)
    values["timestamp_s"] = cur.time_s
    values["replicas"] = replicas
    values["goroutines"] = cur.gauge("go_goroutines")
    values["heap_bytes"] = cur.gauge("go_memstats_heap_alloc_bytes", "go_gc_heap_live_bytes")
    values["gomaxprocs"] = cur.gauge("go_sched_gomaxprocs_threads", "gosvc_knob_gomaxprocs")
    values["gogc"] = cur.gauge("go_gc_gogc_percent", "gosvc_knob_gogc")
    values["gomemlimit_bytes"] = _memlimit(cur)
    values["object_pool_size"] = cur.gauge("gosvc_knob_object_pool_size")
    values["conn_pool_size"] = cur.gauge("gosvc_knob_conn_pool_size")
    if host:
        for key, value in host.items():
            if key not in values:
                raise TelemetryError(f"host sensor field {key!r} is not a telemetry field; see TELEMETRY_FIELDS")
            values[key] = float(value)

    interval = cur.monotonic_s - prev.monotonic_s if prev is not None else NAN
    if prev is not None and interval > 0:
        values["interval_s"] = interval
        values.update(_window_rates(prev, cur, interval, histogram, request_counter, handler))
    if offered_qps is not None:
        values["offered_qps"] = float(offered_qps)
    return TelemetrySample(**values, service=service)


def _window_rates(
    prev: MetricsSnapshot,
    cur: MetricsSnapshot,
    interval: float,
    histogram: str,
    request_counter: str,
    handler: str | None,
) -> dict[str, float]:
    match = {"handler": handler} if handler else None
    out: dict[str, float] = {}

    if cur.has(request_counter):
        deltas = {k: d for k, d in series_deltas(prev, cur, request_counter).items() if _labels_match(k, match)}
        total = math.fsum(deltas.values())
        out["offered_qps"] = total / interval
        codes = [dict(labels).get("code") for labels in deltas]
        if deltas and all(code is not None for code in codes):
            errors = math.fsum(d for (labels, d) in deltas.items() if dict(labels)["code"].startswith("5"))
            out["served_qps"] = (total - errors) / interval
            # No request in the window means no failed request: the rate is 0, not unknown.
            out["error_rate"] = errors / total if total > 0 else 0.0
    elif cur.has(f"{histogram}_count"):
        out["offered_qps"] = counter_delta(prev, cur, f"{histogram}_count", match) / interval

    buckets = histogram_buckets(prev, cur, histogram, match)
    if buckets:
        out["p50_ms"] = histogram_quantile(0.5, buckets) * 1e3
        out["p99_ms"] = histogram_quantile(0.99, buckets) * 1e3

    gc_cycles = _first_delta(prev, cur, ("go_gc_cycles_total_gc_cycles_total", "go_gc_duration_seconds_count"))
    out["gc_cycles_per_s"] = gc_cycles / interval
    allocated = _first_delta(prev, cur, ("go_memstats_alloc_bytes_total", "go_gc_heap_allocs_bytes_total"))
    out["alloc_bytes_per_s"] = allocated / interval
    out["gc_cpu_fraction"] = _ratio(
        counter_delta(prev, cur, "go_cpu_classes_gc_total_cpu_seconds_total"),
        counter_delta(prev, cur, "go_cpu_classes_total_cpu_seconds_total"),
    )

    periods = counter_delta(prev, cur, "gosvc_cfs_periods_total")
    throttled = counter_delta(prev, cur, "gosvc_cfs_throttled_periods_total")
    if not (math.isnan(periods) or math.isnan(throttled)):
        # No elapsed CFS period means no quota was enforced: nothing was throttled.
        out["cfs_throttled_fraction"] = throttled / periods if periods > 0 else 0.0

    quota = cur.gauge("gosvc_cpu_quota_cores")
    if not (quota > 0):
        quota = cur.gauge("go_sched_gomaxprocs_threads", "gosvc_knob_gomaxprocs")
    out["cpu_util"] = _ratio(counter_delta(prev, cur, "process_cpu_seconds_total") / interval, quota)
    return out


class Scraper:
    """Scrapes one ``/metrics`` URL and emits one :class:`TelemetrySample` per call.

    The first :meth:`scrape` has no previous snapshot, so its rates are NaN; call
    :meth:`prime` once before a measured window starts to avoid that.

    Args:
        url: the ``/metrics`` URL.
        timeout_s: HTTP timeout of one scrape.
        service: written into every sample's ``service``.
        histogram: the request-latency histogram's name.
        request_counter: the request counter's name (with a ``code`` label for errors).
        handler: only count series with this ``handler`` label (None: all).
        host: called on every scrape for host-sensor fields
            (see :meth:`rlctl.telemetry.sensors.HostSensors.fields`).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        service: str = "default",
        replicas: float = 1.0,
        histogram: str = "http_request_duration_seconds",
        request_counter: str = "http_requests_total",
        handler: str | None = None,
        host: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.service = service
        self.replicas = replicas
        self.histogram = histogram
        self.request_counter = request_counter
        self.handler = handler
        self.host = host
        self.previous: MetricsSnapshot | None = None

    def snapshot(self) -> MetricsSnapshot:
        """Fetch and parse one scrape without touching the scraper's state."""
        return parse_metrics(fetch_metrics(self.url, timeout_s=self.timeout_s), url=self.url)

    def prime(self) -> MetricsSnapshot:
        """Take a first snapshot so the next :meth:`scrape` has rates."""
        self.previous = self.snapshot()
        return self.previous

    def scrape(self, offered_qps: float | None = None) -> TelemetrySample:
        """Scrape now and return the window since the previous scrape."""
        cur = self.snapshot()
        sample = compute_sample(
            self.previous,
            cur,
            offered_qps=offered_qps,
            service=self.service,
            replicas=self.replicas,
            histogram=self.histogram,
            request_counter=self.request_counter,
            handler=self.handler,
            host=self.host() if self.host else None,
        )
        self.previous = cur
        return sample
