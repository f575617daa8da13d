"""``rlctl probe``: URL and ramp handling, a scripted load generator, and the real gosvc test-bed."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlctl.boundary.probe import REPO_GOSVC, ProbeConfig, Ramp, resolve_loadgen, resolve_urls, run_probe
from rlctl.errors import ConfigError, TelemetryError
from rlctl.online.procs import GoService

FIXTURES = Path(__file__).parents[1] / "fixtures"
RLCTL = Path(sys.executable).parent / "rlctl"


# ------------------------------------------------------------------------ configuration


def test_bare_root_means_work_and_metrics_default_to_the_same_host() -> None:
    assert resolve_urls("http://127.0.0.1:8080") == (
        "http://127.0.0.1:8080/work",
        "http://127.0.0.1:8080/metrics",
        "http://127.0.0.1:8080/debug/pprof",
    )
    target, metrics, pprof = resolve_urls("http://h:1/api?x=1", "http://m:2/prom/metrics")
    assert (target, metrics, pprof) == ("http://h:1/api?x=1", "http://m:2/prom/metrics", "http://m:2/debug/pprof")
    with pytest.raises(ConfigError, match="not an http"):
        resolve_urls("127.0.0.1:8080")


def test_ramp_parsing() -> None:
    assert Ramp.parse("100,50,2s") == Ramp(100.0, 50.0, 2.0)
    assert Ramp(100, 50, 2).steps_to(300) == 5
    for bad in ("100,50", "a,b,c", "100,0,2", "100,50,0"):
        with pytest.raises(ConfigError, match="--ramp"):
            Ramp.parse(bad)


def test_config_rejects_a_ramp_too_short_to_detect_anything() -> None:
    with pytest.raises(ConfigError, match="fewer than the 3 warm-up plus 2 detection steps"):
        ProbeConfig("http://h/work", "http://h/metrics", None, ramp=Ramp(100, 100, 2), max_qps=300, loadgen="x")
    with pytest.raises(ConfigError, match="--interval-s 5"):
        ProbeConfig("http://h/work", "http://h/metrics", None, ramp=Ramp(100, 100, 2), interval_s=5, loadgen="x")


def test_config_rejects_an_unknown_knee_method() -> None:
    with pytest.raises(ConfigError, match=r"--knee-method 'hinge': use one of kneedle, two-segment, crossing"):
        ProbeConfig("http://h/work", "http://h/metrics", None, knee_method="hinge", loadgen="x")


def test_loadgen_resolution(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--loadgen \S+/gosvc: not an executable file; build it with `make gosvc`"):
        resolve_loadgen(str(tmp_path / "gosvc"))
    exe = tmp_path / "gosvc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert resolve_loadgen(str(exe)) == str(exe)


# --------------------------------------------------------------- scripted load generator

FAKE_LOADGEN = """\
import json, os, signal, sys, time
args = sys.argv[2:]
start, step, secs = (float(v) for v in args[args.index("--ramp") + 1].split(","))
steps = int((float(args[args.index("--max-rate") + 1]) - start) / step) + 1
knee = int(os.environ["FAKE_KNEE_STEP"])
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
t = 0.0
for k in range(steps):
    for _ in range(int(secs)):
        if stopped:
            break
        t += 1.0
        rate = start + k * step
        p99 = 2.0 + 0.01 * k if k < knee else 40.0
        print(json.dumps({"t_s": t, "interval_s": 1.0, "offered": rate, "offered_qps": rate, "completed": rate,
                          "errors": 0, "p50_ms": 1.0, "p90_ms": 1.5, "p99_ms": p99, "p999_ms": p99, "max_ms": p99,
                          "target_qps": rate, "inflight": 1}), flush=True)
        time.sleep(0.03)
if stopped:
    open(os.environ["FAKE_SIGTERM_FILE"], "w").write(str(t))
print(json.dumps({"summary": True, "t_s": t, "interval_s": t, "offered": 0, "completed": 0, "errors": 0,
                  "p50_ms": 0, "p99_ms": 0, "max_ms": 0}), flush=True)
"""


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = (FIXTURES / "gosvc_metrics_b.txt").read_bytes()

    def do_GET(self) -> None:
        if self.path.startswith("/debug/pprof/"):
            payload = b"profile"
        elif self.path == "/metrics":
            payload = self.body
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_service() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fake_loadgen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The scripted load generator, its P99 jumping at step 6; SIGTERM is recorded in tmp_path/sigterm."""
    script = tmp_path / "fake-gosvc"
    script.write_text(f"#!{sys.executable}\n{FAKE_LOADGEN}")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_KNEE_STEP", "6")
    monkeypatch.setenv("FAKE_SIGTERM_FILE", str(tmp_path / "sigterm"))
    return script


@pytest.mark.parametrize(("confirm_intervals", "last_step", "confirmed_by"), [(2, 6, "intervals"), (0, 7, "steps")])
def test_probe_stops_the_load_generator_when_the_detector_fires(
    fake_service: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    confirm_intervals: int,
    last_step: int,
    confirmed_by: str,
) -> None:
    script = fake_loadgen(tmp_path, monkeypatch)
    config = ProbeConfig.from_cli(
        fake_service, loadgen=str(script), ramp=Ramp(100, 100, 2), max_qps=3000, profile_dir=str(tmp_path / "prof"),
        confirm_intervals=confirm_intervals,
    )  # fmt: skip
    report = run_probe(config)
    # The rule holds from step 6 (700 qps): two 1 s intervals over confirm it inside that step;
    # confirming on whole steps (consecutive=2) stops the ramp after step 7.
    assert report["stopped_by"] == "detector" and report["confirmed_by"] == confirmed_by
    assert report["stopped_at_step"] == last_step and report["stopped_at_qps"] == 100.0 * (last_step + 1)
    assert [p["qps"] for p in report["curve"]] == [100.0 * (i + 1) for i in range(last_step + 1)]
    assert {s["name"] for s in report["stop_reason"]} == {"p99_rise", "p99_mad"}
    assert (tmp_path / "sigterm").exists(), "the load generator was not sent SIGTERM"
    assert float((tmp_path / "sigterm").read_text()) < 3000 / 100 * 2  # it stopped before the ramp's end
    assert report["knee_qps"] is not None and 500 <= report["knee_qps"] <= 700
    assert report["settings"]["go_version"] == "go1.27.3"
    assert set(report["boundary_event"]["profiles"]) == {"goroutine", "heap"}
    json.dumps(report, allow_nan=False)  # strict JSON


def test_the_crossing_knee_is_where_p99_crossed_the_detectors_threshold(
    fake_service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = fake_loadgen(tmp_path, monkeypatch)
    config = ProbeConfig.from_cli(
        fake_service, loadgen=str(script), ramp=Ramp(100, 100, 2), max_qps=3000, profile_dir=str(tmp_path / "prof"),
        confirm_intervals=2, knee_method="crossing",
    )  # fmt: skip
    report = run_probe(config)
    assert report["knee_method"] == "crossing"
    assert report["knee_methods"] == ["p99_threshold_crossing", "kneedle"]
    threshold = next(s["threshold"] for s in report["stop_reason"] if s["name"] == "p99_rise")
    # Step 5 (600 qps) is at 2.05 ms, step 6 (700 qps) at 40 ms: the crossing lies between, interpolated.
    assert 4 * 2.0 <= threshold < 40.0
    assert report["knee_qps"] == pytest.approx(600.0 + 100.0 * (threshold - 2.05) / (40.0 - 2.05))
    assert report["knee_p99_ms"] == pytest.approx(threshold)
    assert report["knee_qps_second_method"] is not None and 500 <= report["knee_qps_second_method"] <= 700


def test_probe_needs_a_running_service(tmp_path: Path) -> None:
    config = ProbeConfig.from_cli("http://127.0.0.1:9", loadgen=sys.executable, max_qps=3000)
    with pytest.raises(TelemetryError, match="start the service first"):
        run_probe(config)


# ------------------------------------------------------------------------ real test-bed


@pytest.fixture
def gosvc(tmp_path: Path) -> Iterator[GoService]:
    """A real gosvc on a free loopback port (admin token in ``tmp_path/token``), always stopped afterwards."""
    if not REPO_GOSVC.exists():
        pytest.fail(f"{REPO_GOSVC} does not exist: run `bash deploy/gosvc/build.sh` (make test builds it first)")
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    with GoService(["--cpu-us", "1000", "--gomaxprocs", "1"], token_file=token, binary=REPO_GOSVC) as svc:
        yield svc


@pytest.mark.real  # gosvc, the load generator, rlctl processes
@pytest.mark.slow
def test_probe_finds_the_knee_of_the_real_test_bed(gosvc: GoService, tmp_path: Path) -> None:
    out, png = tmp_path / "probe.json", tmp_path / "probe.png"
    max_qps = 4000
    proc = subprocess.run(
        [
            str(RLCTL),
            "probe",
            gosvc.url,
            "--ramp",
            "100,100,2",
            "--max-qps",
            str(max_qps),
            "--json",
            str(out),
            "--plot",
            str(png),
            "--profile-dir",
            str(tmp_path / "prof"),
            "--pprof-url",
            gosvc.pprof_url,
            "--pprof-token-file",
            str(gosvc.token_file),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["stopped_by"] == "detector", report["curve"]
    assert report["stopped_at_qps"] < max_qps
    assert "p99_rise" in {s["name"] for s in report["stop_reason"]}
    assert report["knee_qps"] is not None and 0 < report["knee_qps"] <= report["stopped_at_qps"]
    assert report["knee_qps_second_method"] is not None
    assert report["knee_method"] == "kneedle" and report["knee_methods"] == ["kneedle", "two_segment_least_squares"]
    assert len(report["curve"]) == report["stopped_at_step"] + 1 >= 5
    point = report["curve"][-1]
    for key in (
        "qps",
        "p50_ms",
        "p99_ms",
        "goroutines",
        "alloc_bytes_per_s",
        "gc_cpu_fraction",
        "cfs_throttled_fraction",
    ):
        assert key in point
    assert point["p99_ms"] > 4 * report["curve"][0]["p99_ms"] / 2  # the last step is well above the start
    assert report["settings"]["gomaxprocs"] == 1
    assert report["settings"]["go_version"].startswith("go")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # pprof is on gosvc's admin listener, behind the token: both profiles were captured with it.
    assert set(report["boundary_event"]["profiles"]) == {"goroutine", "heap"}, report["boundary_event"]
    assert all(Path(p).exists() for p in report["boundary_event"]["profiles"].values())

    # The knee gate on synthetic shifts of this report: 10 % down passes, 20 % down fails.
    def shifted(factor: float) -> Path:
        path = tmp_path / f"shift-{factor}.json"
        path.write_text(json.dumps({**report, "knee_qps": report["knee_qps"] * factor}))
        return path

    def guard(new: Path) -> int:
        return subprocess.run([str(RLCTL), "knee-gate", str(out), str(new)], capture_output=True, timeout=60).returncode

    assert guard(shifted(0.9)) == 0
    assert guard(shifted(0.8)) == 1
    assert guard(out) == 0


def test_gosvc_binary_is_built() -> None:
    assert os.access(REPO_GOSVC, os.X_OK), f"{REPO_GOSVC} is missing: run `bash deploy/gosvc/build.sh`"


def test_min_steps_holds_the_stop_until_enough_levels(
    fake_service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = fake_loadgen(tmp_path, monkeypatch)
    config = ProbeConfig.from_cli(
        fake_service, loadgen=str(script), ramp=Ramp(100, 100, 2), max_qps=3000, min_steps=10,
        profile_dir=str(tmp_path / "prof"),
    )  # fmt: skip
    report = run_probe(config)
    assert report["stopped_by"] == "detector"
    assert len(report["curve"]) == 10 and report["stopped_at_qps"] == 1000.0
    assert report["boundary_event"]["sample"]["offered_qps"] == 800.0  # the event itself came at step 7
