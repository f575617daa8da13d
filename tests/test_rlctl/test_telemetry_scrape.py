"""Scraping /metrics into TelemetrySample: rates, resets, quantiles, missing metrics, errors."""

from __future__ import annotations

import http.server
import math
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from rlctl.errors import TelemetryError
from rlctl.telemetry.scrape import (
    Scraper,
    compute_sample,
    counter_delta,
    fetch_metrics,
    histogram_buckets,
    histogram_quantile,
    parse_metrics,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def hist_text(buckets: dict[str, float], *, handler: str = "/work", codes: dict[str, float] | None = None) -> str:
    """A latency histogram and request counter in exposition format."""
    lines = ["# TYPE http_request_duration_seconds histogram"]
    for le, count in buckets.items():
        lines.append(f'http_request_duration_seconds_bucket{{handler="{handler}",le="{le}"}} {count}')
    lines.append(f'http_request_duration_seconds_sum{{handler="{handler}"}} 1')
    lines.append(f'http_request_duration_seconds_count{{handler="{handler}"}} {buckets["+Inf"]}')
    lines.append("# TYPE http_requests_total counter")
    for code, count in (codes or {"200": buckets["+Inf"]}).items():
        lines.append(f'http_requests_total{{handler="{handler}",code="{code}"}} {count}')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- quantiles


def test_histogram_quantile_interpolates_linearly_inside_the_bucket() -> None:
    buckets = [(0.001, 10.0), (0.002, 60.0), (0.005, 100.0), (math.inf, 100.0)]
    # rank 50 lies in (1 ms, 2 ms], 40 of its 50 observations in: 1 + 1 * 40/50 ms
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0018)
    # rank 99 lies in (2 ms, 5 ms]: 2 + 3 * 39/40 ms
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.004925)
    # the first bucket starts at 0
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.0005)


def test_histogram_quantile_edges_follow_prometheus() -> None:
    in_inf = [(0.001, 10.0), (0.002, 20.0), (math.inf, 100.0)]
    assert histogram_quantile(0.99, in_inf) == 0.002  # rank in +Inf: highest finite bound
    assert math.isnan(histogram_quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]))  # no observations
    assert math.isnan(histogram_quantile(0.5, [(0.001, 5.0), (0.002, 5.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(math.inf, 5.0)]))  # fewer than two buckets
    assert histogram_quantile(-0.1, in_inf) == -math.inf
    assert histogram_quantile(1.1, in_inf) == math.inf


def test_quantiles_come_from_the_window_not_the_process_lifetime() -> None:
    # 10 000 fast requests before the window, then 100 slow ones in it.
    before = parse_metrics(hist_text({"0.001": 10_000, "0.01": 10_000, "0.1": 10_000, "+Inf": 10_000}), time_s=0)
    after = parse_metrics(hist_text({"0.001": 10_000, "0.01": 10_000, "0.1": 10_100, "+Inf": 10_100}), time_s=10)
    sample = compute_sample(before, after)
    assert sample.p50_ms == pytest.approx(55.0)  # 10 ms + 90 ms * 50/100
    assert sample.p99_ms == pytest.approx(99.1)
    assert sample.offered_qps == pytest.approx(10.0)


def test_histogram_restart_takes_the_new_series_whole() -> None:
    before = parse_metrics(hist_text({"0.001": 500, "0.01": 900, "+Inf": 1000}), time_s=0)
    after = parse_metrics(hist_text({"0.001": 0, "0.01": 40, "+Inf": 50}), time_s=5)
    assert histogram_buckets(before, after, "http_request_duration_seconds") == [
        (0.001, 0.0),
        (0.01, 40.0),
        (math.inf, 50.0),
    ]


# ----------------------------------------------------------------------------- counters


def test_counter_reset_counts_from_zero() -> None:
    before = parse_metrics("# TYPE x_total counter\nx_total 1000\n", time_s=0)
    after = parse_metrics("# TYPE x_total counter\nx_total 50\n", time_s=1)
    assert counter_delta(before, after, "x_total") == 50.0
    grown = parse_metrics("# TYPE x_total counter\nx_total 1200\n", time_s=1)
    assert counter_delta(before, grown, "x_total") == 200.0


def test_errors_and_served_split_on_the_code_label() -> None:
    before = parse_metrics(hist_text({"0.01": 0, "+Inf": 0}, codes={"200": 0}), time_s=0)
    after = parse_metrics(hist_text({"0.01": 100, "+Inf": 100}, codes={"200": 90, "503": 8, "429": 2}), time_s=2)
    s = compute_sample(before, after)
    assert s.offered_qps == pytest.approx(50.0)
    assert s.served_qps == pytest.approx(46.0)  # 429 is not a server error
    assert s.error_rate == pytest.approx(0.08)


def test_load_generator_offered_rate_overrides_server_count() -> None:
    before = parse_metrics(hist_text({"0.01": 0, "+Inf": 0}), time_s=0)
    after = parse_metrics(hist_text({"0.01": 100, "+Inf": 100}), time_s=1)
    s = compute_sample(before, after, offered_qps=250.0)
    assert s.offered_qps == 250.0
    assert s.served_qps == pytest.approx(100.0)


# ------------------------------------------------------------------------ recorded gosvc


def test_recorded_gosvc_scrapes() -> None:
    a = parse_metrics(fixture("gosvc_metrics_a.txt"), url="a", time_s=100.0)
    b = parse_metrics(fixture("gosvc_metrics_b.txt"), url="b", time_s=102.0)
    s = compute_sample(a, b, service="gosvc")
    requests = b.total("http_requests_total") - a.total("http_requests_total")  # type: ignore[operator]
    assert requests == 51
    assert s.offered_qps == pytest.approx(25.5)
    assert s.served_qps == pytest.approx(25.5)
    assert s.error_rate == 0.0
    assert s.goroutines == 13
    assert s.gomaxprocs == 2
    assert s.gogc == 100
    assert s.gomemlimit_bytes == math.inf  # runtime reports MaxInt64: no limit
    assert s.object_pool_size == 1024 and s.conn_pool_size == 64
    assert s.cfs_throttled_fraction == 0.0  # no quota: periods do not advance
    assert s.timestamp_s == 102.0 and s.interval_s == 2.0
    assert s.p99_ms > s.p50_ms > 0
    cpu = b.total("process_cpu_seconds_total") - a.total("process_cpu_seconds_total")  # type: ignore[operator]
    assert s.cpu_util == pytest.approx(cpu / 2.0 / 2)  # quota unlimited: against GOMAXPROCS=2
    alloc = b.total("go_memstats_alloc_bytes_total") - a.total("go_memstats_alloc_bytes_total")  # type: ignore[operator]
    assert s.alloc_bytes_per_s == pytest.approx(alloc / 2.0)
    assert math.isnan(s.cpu_temp_c)  # host sensors not requested


def test_settings_from_recorded_gosvc() -> None:
    settings = parse_metrics(fixture("gosvc_metrics_b.txt")).settings()
    assert settings["go_version"] == "go1.27.3"
    assert settings["gomaxprocs"] == 2
    assert settings["cpu_quota_cores"] is None and settings["cpu_quota"] == "unlimited"
    assert settings["gogc"] == 100
    assert settings["gomemlimit_bytes"] is None and settings["gomemlimit"] == "unlimited"


def test_first_scrape_has_gauges_but_no_rates() -> None:
    s = compute_sample(None, parse_metrics(fixture("gosvc_metrics_a.txt")))
    assert s.goroutines > 0 and s.gomaxprocs == 2
    for name in ("interval_s", "offered_qps", "p99_ms", "alloc_bytes_per_s", "cpu_util", "gc_cycles_per_s"):
        assert math.isnan(getattr(s, name)), name


# --------------------------------------------------------------- client_golang defaults


def test_client_golang_default_metrics_only() -> None:
    a = parse_metrics(fixture("client_golang_default_a.txt"), time_s=0.0)
    b = parse_metrics(fixture("client_golang_default_b.txt"), time_s=10.0)
    s = compute_sample(a, b)
    assert s.goroutines == 25
    assert s.gc_cycles_per_s == pytest.approx(0.3)  # from go_gc_duration_seconds_count
    assert s.alloc_bytes_per_s == pytest.approx(3.0e6)
    assert s.heap_bytes == pytest.approx(9.004112e6)
    # Not exposed by the default collectors: NaN, never a guess. promhttp's own scrape
    # counter is not the service's traffic.
    for name in ("gc_cpu_fraction", "cfs_throttled_fraction", "p99_ms", "offered_qps", "served_qps",
                 "cpu_util", "gomaxprocs", "gogc", "gomemlimit_bytes", "object_pool_size"):  # fmt: skip
        assert math.isnan(getattr(s, name)), name
    assert parse_metrics(fixture("client_golang_default_b.txt")).settings()["go_version"] == "go1.17.6"


def test_cpu_util_against_cgroup_quota_and_throttling() -> None:
    def text(cpu: float, periods: int, throttled: int) -> str:
        return (
            "# TYPE process_cpu_seconds_total counter\n"
            f"process_cpu_seconds_total {cpu}\n"
            "# TYPE go_sched_gomaxprocs_threads gauge\ngo_sched_gomaxprocs_threads 2\n"
            "# TYPE gosvc_cpu_quota_cores gauge\ngosvc_cpu_quota_cores 1\n"
            f"# TYPE gosvc_cfs_periods_total counter\ngosvc_cfs_periods_total {periods}\n"
            f"# TYPE gosvc_cfs_throttled_periods_total counter\ngosvc_cfs_throttled_periods_total {throttled}\n"
        )

    s = compute_sample(parse_metrics(text(10, 100, 10), time_s=0), parse_metrics(text(14.5, 150, 40), time_s=5))
    assert s.cpu_util == pytest.approx(0.9)  # 4.5 CPU-s in 5 s against 1 core, not against GOMAXPROCS 2
    assert s.cfs_throttled_fraction == pytest.approx(0.6)


def test_host_fields_are_merged_and_unknown_ones_rejected() -> None:
    snap = parse_metrics(fixture("gosvc_metrics_a.txt"))
    s = compute_sample(None, snap, host={"cpu_temp_c": 55.0, "turbo_on": 1.0})
    assert s.cpu_temp_c == 55.0 and s.turbo_on == 1.0
    with pytest.raises(TelemetryError, match="cpu_temperature"):
        compute_sample(None, snap, host={"cpu_temperature": 55.0})


# ---------------------------------------------------------------------------- errors


def test_parse_failure_names_the_url() -> None:
    with pytest.raises(TelemetryError, match=r"http://x/metrics: not Prometheus text format"):
        parse_metrics('metric{label="unterminated} 1\n', url="http://x/metrics")
    with pytest.raises(TelemetryError, match="no metric samples"):
        parse_metrics("# just a comment\n", url="http://x/metrics")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(TelemetryError) as info:
        fetch_metrics(url, timeout_s=1.0)
    assert url in str(info.value)
    assert "service is running" in str(info.value)


class _Handler(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = (self.bodies.pop(0) if len(self.bodies) > 1 else self.bodies[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_scraper_keeps_the_previous_scrape(metrics_server: tuple[str, type[_Handler]]) -> None:
    base, handler = metrics_server
    handler.bodies = [fixture("gosvc_metrics_a.txt"), fixture("gosvc_metrics_b.txt")]
    scraper = Scraper(f"{base}/metrics", service="svc")
    first = scraper.scrape()
    assert math.isnan(first.offered_qps) and first.goroutines > 0
    second = scraper.scrape()
    assert second.service == "svc"
    assert second.interval_s > 0
    assert second.offered_qps == pytest.approx(51 / second.interval_s)


def test_http_error_is_a_telemetry_error(metrics_server: tuple[str, type[_Handler]]) -> None:
    base, handler = metrics_server
    handler.bodies = ["x 1\n"]
    with pytest.raises(TelemetryError, match=r"HTTP 404.*/metrics endpoint"):
        fetch_metrics(f"{base}/nope")
