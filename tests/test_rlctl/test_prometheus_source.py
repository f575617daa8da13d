"""The Prometheus source against a real Prometheus (Debian's package) scraping a real gosvc.

Prometheus scrapes gosvc every second; under a steady load the source's offered/served rate
and P99 (PromQL over a 5 s window) must agree with a direct scrape of the same window.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from online_support import gosvc, wait_until

from rlctl.errors import ConfigError, TelemetryError
from rlctl.online.prometheus import PrometheusConfig, PrometheusSource, load_config, parse_config
from rlctl.telemetry.scrape import Scraper

PROMETHEUS = "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config_parsing_defaults_overrides_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "prom.yaml"
    path.write_text(
        "service: web\nselector: 'job=\"web\"'\nwindow: 10s\ntimeout_s: 1.5\n"
        "queries:\n  p99_ms: 1000 * histogram_quantile(0.99, sum(rate(lat_bucket{$sel}[$window])) by (le))\n"
    )
    config = load_config(path)
    assert config.service == "web" and config.timeout_s == 1.5
    assert config.query("p99_ms") == '1000 * histogram_quantile(0.99, sum(rate(lat_bucket{job="web"}[10s])) by (le))'
    assert config.query("offered_qps") == 'sum(rate(http_requests_total{job="web"}[10s]))'
    assert PrometheusConfig(selector="").query("served_qps") == 'sum(rate(http_requests_total{code!~"5.."}[30s]))'
    assert parse_config(None) == PrometheusConfig()
    with pytest.raises(ConfigError, match=r"unknown key.*windw"):
        parse_config({"windw": "5s"}, source="x.yaml")
    with pytest.raises(ConfigError, match=r"x\.yaml: queries: 'p999'"):
        parse_config({"queries": {"p999": "up"}}, source="x.yaml")
    with pytest.raises(ConfigError, match="timeout_s"):
        parse_config({"timeout_s": 0}, source="x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: web\nqueries: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+"):
        load_config(bad)


def test_a_dead_server_is_a_telemetry_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TelemetryError, match=url.replace(".", r"\.")):
        PrometheusSource(url, PrometheusConfig(timeout_s=1.0)).scrape()


@pytest.mark.real
def test_the_source_matches_direct_scraping_through_a_real_prometheus(tmp_path: Path) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus")
    with gosvc(tmp_path) as service:
        port = _free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: gosvc\n    static_configs: [{{targets: ['{service.addr}']}}]\n"
        )
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
        )  # fmt: skip
        stop = threading.Event()

        def load() -> None:  # about 200 requests/s, steady
            while not stop.is_set():
                urllib.request.urlopen(f"{service.url}/work", timeout=5).read()
                time.sleep(0.005)

        worker = threading.Thread(target=load, daemon=True)
        try:
            url = f"http://127.0.0.1:{port}"
            source = PrometheusSource(url, PrometheusConfig(window="5s", timeout_s=2.0), service="gosvc")
            scraper = Scraper(f"{service.url}/metrics", service="gosvc")
            worker.start()
            t0 = time.monotonic()

            def ready() -> bool:
                try:
                    return math.isfinite(source.query(source.config.query("p99_ms")))
                except TelemetryError:
                    return False

            wait_until(ready, timeout_s=25.0, interval_s=0.5)
            time.sleep(5.0)  # a full 5 s window of load in Prometheus
            scraper.prime()
            time.sleep(5.0)
            direct = scraper.scrape()
            sample = source.scrape()
            took = time.monotonic() - t0
            print(f"prometheus sample after {took:.1f} s: offered {sample.offered_qps:.1f} (direct "
                  f"{direct.offered_qps:.1f}), p99 {sample.p99_ms:.3f} ms (direct {direct.p99_ms:.3f})")  # fmt: skip
            for name in ("offered_qps", "served_qps", "p99_ms", "p50_ms"):
                assert math.isfinite(getattr(sample, name)), name
            assert sample.offered_qps > 10
            assert sample.offered_qps == pytest.approx(direct.offered_qps, rel=0.3)
            assert sample.served_qps == pytest.approx(direct.served_qps, rel=0.3)
            assert sample.p99_ms == pytest.approx(direct.p99_ms, rel=0.5)
            assert sample.error_rate == 0.0 and sample.replicas == 1.0
            assert sample.gomaxprocs == direct.gomaxprocs and sample.gogc == direct.gogc

            now = time.time()
            series = source.range("offered_qps", now - 10, now, 1.0)
            assert len(series) >= 5 and all(math.isfinite(v) and v > 0 for _, v in series[-3:])

            bad = PrometheusSource(url, PrometheusConfig(queries={"p99_ms": "sum(rate(x[5s]"}))
            with pytest.raises(TelemetryError, match=f"{url}.*sum\\(rate\\(x") as info:
                bad.scrape()
            assert "fix the PromQL" in str(info.value)
        finally:
            stop.set()
            prom.terminate()
            try:
                prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            worker.join(timeout=10)


def test_the_monitors_build_and_point_at_the_real_ports() -> None:
    """No Prometheus Operator CRD schema is vendored, so the two monitors are checked by structure:
    they build, sit in the base's namespace and select labels and port names the base defines."""
    import yaml

    k8s = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed for `kubectl kustomize`: install it (apt-get install kubectl) and rerun")

    def build(path: Path) -> list[dict[str, Any]]:
        proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    monitors = {d["kind"]: d for d in build(k8s / "monitoring")}
    assert sorted(monitors) == ["PodMonitor", "ServiceMonitor"]
    base = build(k8s / "base")
    for doc in monitors.values():
        assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["metadata"]["namespace"] == "rlctl"
        assert set(doc["spec"]) <= {"selector", "endpoints", "podMetricsEndpoints", "namespaceSelector"}

    sm = monitors["ServiceMonitor"]["spec"]
    services = [d for d in base if d["kind"] == "Service"
                and sm["selector"]["matchLabels"].items() <= d["metadata"].get("labels", {}).items()]  # fmt: skip
    assert sorted(s["metadata"]["name"] for s in services) == ["gosvc", "gosvc-admin"]
    (endpoint,) = sm["endpoints"]
    keep = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert keep == [{"sourceLabels": ["__meta_kubernetes_service_name"], "regex": "gosvc-admin", "action": "keep"}]
    headless = next(s for s in services if s["metadata"]["name"] == "gosvc-admin")
    assert headless["spec"]["clusterIP"] == "None"
    assert endpoint["port"] in {p["name"] for p in headless["spec"]["ports"]} and endpoint["path"] == "/metrics"

    pm = monitors["PodMonitor"]["spec"]
    (controller,) = [d for d in base if d["kind"] == "Deployment" and d["metadata"]["name"] == "rlctl-controller"]
    pod_labels = controller["spec"]["template"]["metadata"]["labels"]
    assert pm["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for c in controller["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert [e["port"] for e in pm["podMetricsEndpoints"]] == ["metrics"] and "metrics" in ports


def test_control_takes_either_metrics_or_prometheus(tmp_path: Path) -> None:
    from conftest import invoke_rlctl

    both = invoke_rlctl("control", "--service", "s", "--metrics", "http://127.0.0.1:1/metrics",
                        "--prometheus", "http://127.0.0.1:1", "--redis", "none", "--max-steps", "1")  # fmt: skip
    assert both.returncode != 0 and "not both" in both.stderr, both
    lone = invoke_rlctl("control", "--service", "s", "--prometheus-config", str(tmp_path / "p.yaml"),
                        "--redis", "none", "--max-steps", "1")  # fmt: skip
    assert lone.returncode != 0 and "--prometheus-config needs --prometheus" in lone.stderr, lone
