"""A telemetry source that reads a Prometheus server's HTTP API instead of scraping ``/metrics``.

:class:`PrometheusSource` is called like :meth:`rlctl.telemetry.scrape.Scraper.scrape`: one
:class:`~rlctl.contract.TelemetrySample` per call (or :class:`~rlctl.errors.TelemetryError`).
Each field is one PromQL instant query (``GET /api/v1/query``); :meth:`PrometheusSource.range`
runs a field's query over a window (``GET /api/v1/query_range``).

The queries come from a small per-service YAML file (all keys optional)::

    service: gosvc
    selector: 'job="gosvc"'     # label matchers put into every default query ($sel)
    window: 30s                 # the rate/quantile window ($window)
    timeout_s: 2.0
    queries:                    # a TelemetrySample field -> PromQL ($sel and $window substituted)
      p99_ms: 1000 * histogram_quantile(0.99, sum(rate(my_latency_bucket{$sel}[$window])) by (le))

The defaults read gosvc's metric names (the ones :mod:`rlctl.telemetry.scrape` reads), summed
over every scraped replica, so the P99 is the quantile of all the service's requests. A query
with no result gives NaN (as a metric the service does not expose does when scraping).
"""

from __future__ import annotations

import contextlib
import json
import math
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlctl.contract import TELEMETRY_FIELDS, TelemetrySample
from rlctl.errors import ConfigError, TelemetryError
from rlctl.inputs import load_yaml_file

NAN = float("nan")
_UNLIMITED_MEMLIMIT = 2.0**63 - 1
_REQ = "http_requests_total"
_HIST = "http_request_duration_seconds"
_5XX = 'code=~"5..",'


def _rate(metric: str, extra: str = "") -> str:
    return f"sum(rate({metric}{{{extra}$sel}}[$window]))"


#: gosvc's metrics as PromQL; ``$sel`` is the selector's matchers, ``$window`` the rate window.
DEFAULT_QUERIES: dict[str, str] = {
    "offered_qps": _rate(_REQ),
    "served_qps": _rate(_REQ, 'code!~"5..",'),
    # No 5xx series at all means no failed request: 0, not an empty result.
    "error_rate": f"({_rate(_REQ, _5XX)} or vector(0)) / clamp_min({_rate(_REQ)}, 1e-12)",
    "p50_ms": f"1000 * histogram_quantile(0.5, sum(rate({_HIST}_bucket{{$sel}}[$window])) by (le))",
    "p99_ms": f"1000 * histogram_quantile(0.99, sum(rate({_HIST}_bucket{{$sel}}[$window])) by (le))",
    "goroutines": "sum(go_goroutines{$sel})",
    "gc_cycles_per_s": _rate("go_gc_cycles_total_gc_cycles_total"),
    "gc_cpu_fraction": f"{_rate('go_cpu_classes_gc_total_cpu_seconds_total')} / "
    f"{_rate('go_cpu_classes_total_cpu_seconds_total')}",
    "alloc_bytes_per_s": _rate("go_memstats_alloc_bytes_total"),
    "heap_bytes": "sum(go_memstats_heap_alloc_bytes{$sel})",
    "cpu_util": f"{_rate('process_cpu_seconds_total')} / "
    "(sum(gosvc_cpu_quota_cores{$sel} > 0) or sum(go_sched_gomaxprocs_threads{$sel}))",
    "cfs_throttled_fraction": f"{_rate('gosvc_cfs_throttled_periods_total')} / "
    f"clamp_min({_rate('gosvc_cfs_periods_total')}, 1e-12)",
    "replicas": "count(up{$sel} == 1)",
    "gomaxprocs": "max(go_sched_gomaxprocs_threads{$sel})",
    "gogc": "max(go_gc_gogc_percent{$sel})",
    "gomemlimit_bytes": "max(go_gc_gomemlimit_bytes{$sel})",
    "object_pool_size": "max(gosvc_knob_object_pool_size{$sel})",
    "conn_pool_size": "max(gosvc_knob_conn_pool_size{$sel})",
}

_CONFIG_KEYS = ("service", "selector", "window", "timeout_s", "queries")
#: Fields the source fills itself, never from a query.
_OWN_FIELDS = ("timestamp_s", "interval_s")


@dataclass(frozen=True)
class PrometheusConfig:
    """Which PromQL gives each :class:`~rlctl.contract.TelemetrySample` field."""

    service: str = "default"
    selector: str = 'job="gosvc"'
    window: str = "30s"
    timeout_s: float = 2.0
    queries: dict[str, str] = field(default_factory=dict)

    def query(self, name: str) -> str:
        """The PromQL of field ``name``, ``$sel`` and ``$window`` substituted."""
        text = self.queries.get(name, DEFAULT_QUERIES.get(name))
        if text is None:
            raise TelemetryError(f"no PromQL query for field {name!r}; add it under queries: in the config")
        promql = string.Template(text).safe_substitute(sel=self.selector, window=self.window)
        return promql.replace(",}", "}")  # an empty selector after other matchers

    def fields(self) -> list[str]:
        return [f for f in TELEMETRY_FIELDS if f in self.queries or f in DEFAULT_QUERIES]


def parse_config(data: Any, *, source: str = "<config>") -> PrometheusConfig:
    """A :class:`PrometheusConfig` from parsed YAML; :class:`ConfigError` naming ``source`` otherwise."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with keys {', '.join(_CONFIG_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(_CONFIG_KEYS)}")
    kw: dict[str, Any] = {}
    for key in ("service", "selector", "window"):
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"{source}: {key} must be a string, got {data[key]!r}")
            kw[key] = data[key]
    if "timeout_s" in data:
        t = data["timeout_s"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not (0 < t <= 60):
            raise ConfigError(f"{source}: timeout_s={t!r}; give seconds in (0, 60]")
        kw["timeout_s"] = float(t)
    queries = data.get("queries") or {}
    if not isinstance(queries, dict):
        raise ConfigError(f"{source}: queries must map telemetry fields to PromQL strings")
    for name, promql in queries.items():
        if name not in TELEMETRY_FIELDS or name in _OWN_FIELDS:
            raise ConfigError(
                f"{source}: queries: {name!r} is not a telemetry field a query can give; "
                f"one of {', '.join(f for f in TELEMETRY_FIELDS if f not in _OWN_FIELDS)}"
            )
        if not isinstance(promql, str) or not promql.strip():
            raise ConfigError(f"{source}: queries: {name} must be a non-empty PromQL string")
    kw["queries"] = {str(k): str(v) for k, v in queries.items()}
    return PrometheusConfig(**kw)


def load_config(path: str | Path) -> PrometheusConfig:
    """Read a per-service Prometheus source config (errors name the file and line)."""
    return parse_config(load_yaml_file(path, what="Prometheus source config"), source=str(path))


class PrometheusSource:
    """One :class:`TelemetrySample` per call, from PromQL instant queries against ``url``.

    :param url: the Prometheus server's base URL (``http://prometheus:9090``).
    :param config: the queries (default: gosvc's metrics under ``job="gosvc"``).
    """

    def __init__(self, url: str, config: PrometheusConfig | None = None, *, service: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.config = config or PrometheusConfig()
        self.service = service or self.config.service
        self._last: float | None = None

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        query = params.get("query", "")
        try:
            with urllib.request.urlopen(url, timeout=self.config.timeout_s) as resp:
                body = json.loads(resp.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as exc:
            detail = ""
            with contextlib.suppress(ValueError, AttributeError, OSError):
                detail = json.loads(exc.read().decode("utf-8", errors="replace")).get("error", "")
            raise TelemetryError(
                f"prometheus {self.url}{path}: HTTP {exc.code} for query {query!r}: {detail or exc.reason}; "
                "fix the PromQL in the source config"
            ) from exc
        except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TelemetryError(
                f"prometheus {self.url}{path}: {reason} (query {query!r}); check that Prometheus runs "
                "and --prometheus is its base URL"
            ) from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise TelemetryError(
                f"prometheus {self.url}{path}: query {query!r} failed: {error}; fix the PromQL in the source config"
            )
        return body.get("data", {})

    def query(self, promql: str, at: float | None = None) -> float:
        """One instant query's value (NaN when it has no result)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return float(result[1])
        if kind != "vector" or not isinstance(result, list):
            raise TelemetryError(f"prometheus {self.url}: query {promql!r} gave a {kind}; give a vector query")
        if not result:
            return NAN
        if len(result) > 1:
            raise TelemetryError(
                f"prometheus {self.url}: query {promql!r} gave {len(result)} series; aggregate it (sum, max)"
            )
        return float(result[0]["value"][1])

    def scrape(self) -> TelemetrySample:
        now = time.time()
        values: dict[str, float] = dict.fromkeys(TELEMETRY_FIELDS, NAN)
        values["timestamp_s"] = now
        values["interval_s"] = now - self._last if self._last is not None else NAN
        for name in self.config.fields():
            values[name] = self.query(self.config.query(name), at=now)
        if values["gomemlimit_bytes"] >= _UNLIMITED_MEMLIMIT:
            values["gomemlimit_bytes"] = math.inf
        self._last = now
        return TelemetrySample(**values, service=self.service)

    __call__ = scrape

    def range(self, name: str, start: float, end: float, step: float) -> list[tuple[float, float]]:
        """Field ``name`` from ``start`` to ``end`` (Unix seconds) every ``step`` seconds: ``(t, value)``."""
        promql = self.config.query(name)
        data = self._get(
            "/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        result = data.get("result") or []
        if len(result) > 1:
            raise TelemetryError(
                f"prometheus {self.url}: query {promql!r} gave {len(result)} series; aggregate it (sum, max)"
            )
        return [(float(t), float(v)) for t, v in (result[0]["values"] if result else [])]
