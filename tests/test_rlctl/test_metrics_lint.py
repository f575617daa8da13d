"""Both metric endpoints pass ``promtool check metrics``, Prometheus's own linter.

The real ``gosvc`` binary is started on a free port and its live ``/metrics`` is linted;
the controller's exposition is generated from :class:`ControllerMetrics`' real registry
after every metric has a sample. promtool comes with Debian's ``prometheus`` package
(``make system`` installs it): a missing promtool fails these tests, it does not skip them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from online_support import gosvc

from rlctl.online.loop import ControllerMetrics
from rlctl.online.procs import GoService

pytestmark = pytest.mark.real  # promtool, gosvc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: Families gosvc writes only where its cpu cgroup is readable.
CGROUP_FAMILIES = {
    "gosvc_cfs_periods_total",
    "gosvc_cfs_throttled_periods_total",
    "gosvc_cfs_throttled_seconds_total",
    "gosvc_cpu_quota_cores",
}


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` with ``text`` on stdin; a clear failure when promtool is missing."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run `make system` (it installs Debian's prometheus package, with promtool)")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )


def assert_lint_clean(text: str, what: str) -> None:
    result = promtool_check(text)
    complaints = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not complaints, (
        f"promtool check metrics on {what}: exit {result.returncode}\n{complaints}"
    )


def families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[GoService]:
    with gosvc(tmp_path, "--cpu-us", "20", "--gomaxprocs", "2") as svc:
        yield svc


@pytest.fixture
def gosvc_metrics(service: GoService) -> str:
    for path in ("/work", "/work", "/work?cpu_us=abc"):  # a 200 and a 400 series, histogram observations
        try:
            urllib.request.urlopen(service.url + path, timeout=10).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
    with urllib.request.urlopen(service.metrics_url, timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def test_promtool_fails_on_what_it_should() -> None:
    """The linter really lints: a non-base unit and a counter without ``_total`` are reported."""
    bad = (
        "# HELP demo_latency_ms Latency.\n# TYPE demo_latency_ms gauge\ndemo_latency_ms 1\n"
        "# HELP demo_requests Requests.\n# TYPE demo_requests counter\ndemo_requests 1\n"
    )
    result = promtool_check(bad)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "demo_latency_ms" in out and "demo_requests" in out, out


def test_gosvc_metrics_pass_promtool(gosvc_metrics: str) -> None:
    assert "http_request_duration_seconds_bucket" in gosvc_metrics  # a real, non-trivial scrape
    assert_lint_clean(gosvc_metrics, "gosvc /metrics")


def test_gosvc_fixtures_pass_promtool_and_match_the_live_families(gosvc_metrics: str) -> None:
    """The recorded scrapes the scraper tests use are still what gosvc writes (after any rename)."""
    live = families(gosvc_metrics)
    for name in ("gosvc_metrics_a.txt", "gosvc_metrics_b.txt"):
        text = (FIXTURES / name).read_text()
        assert_lint_clean(text, f"tests/fixtures/{name}")
        recorded = families(text)
        assert live - recorded == set(), f"{name} lacks families gosvc writes; re-record it"
        assert recorded - live <= CGROUP_FAMILIES, f"{name} has families gosvc no longer writes"


def test_controller_metrics_pass_promtool() -> None:
    from prometheus_client import generate_latest

    m = ControllerMetrics()
    m.decisions.labels("svc", "policy").inc()
    m.decisions.labels("svc", "hpa").inc(2)
    m.fallbacks.labels("svc", "policy-timeout").inc()
    m.actuation_errors.labels("svc", "admin").inc()
    m.last_p99.labels("svc").set(0.0123)
    m.saturation.labels("svc").set(0.8)
    m.replicas.labels("svc").set(3)
    m.redis_up.labels("svc").set(1)
    m.step_seconds.labels("svc").observe(0.05)
    m.policy_seconds.labels("svc").observe(0.002)
    m.desired_replicas.labels("svc").set(4)
    m.desired_knob.labels("svc", "gogc").set(200)
    m.mode.labels("svc", "advise").set(1)
    text = generate_latest(m.registry).decode()
    # Every metric of the controller is in the exposition with a sample, not only a header.
    for metric in m.registry.collect():
        assert metric.samples, f"{metric.name} has no sample"
    assert 'rlctl_last_p99_seconds{service="svc"} 0.0123' in text
    assert_lint_clean(text, "the controller's /metrics")
