"""Calibration: the fit recovers known parameters, reads probe reports, scores holdouts; one real run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, invoke_rlctl

from envs.calibrate import (
    NAN,
    CalibrationData,
    FitConfig,
    Point,
    ServerStats,
    Setting,
    calibration_report,
    choose_params,
    direct_estimates,
    fit_profile,
    holdout_report,
    load_probe_report,
    profile_yaml,
    simulate_points,
)
from envs.profile import ServiceProfile
from rlctl.errors import ConfigError
from rlctl.harness.testbed import Baseline, parse_loadgen, saturated

TRUE = ServiceProfile(s_cpu_ms=0.8, s_mem_ms=0.24, cs2=0.6, rtt_ms=0.9, rtt_std_ms=0.8, usl_sigma=0.1,
                      gc_assist_ms=2.0, cpu_quota_cores=2.0, cores_free=2.0)  # fmt: skip
SETTINGS = (Setting(1, 50, 1024), Setting(1, 200, 0), Setting(2, 50, 0), Setting(2, 200, 1024))
FRACTIONS = (0.2, 0.4, 0.55, 0.7, 0.8, 0.9, 0.97, 1.05)


def _capacity(profile: ServiceProfile, procs: int) -> float:
    s_ms = profile.s_cpu_ms * profile.f_base_ghz / profile.f_turbo_ghz + profile.s_mem_ms * 1.03
    return 1000.0 / s_ms * procs / (1 + profile.usl_sigma * (procs - 1))


def synthetic(profile: ServiceProfile = TRUE, noise: float = 0.0, seed: int = 0, role: str = "fit",
              settings: tuple[Setting, ...] = SETTINGS) -> CalibrationData:  # fmt: skip
    """Points whose latency the simulator itself produced from ``profile`` (times log-normal noise)."""
    pts = [Point(s, f * _capacity(profile, s.gomaxprocs), NAN, NAN, role=role) for s in settings for f in FRACTIONS]
    p50, p99 = simulate_points(profile, pts, cpu_quota_cores=2.0)
    rng = np.random.default_rng(seed)

    def noisy(v: float) -> float:
        return float(v * math.exp(rng.normal(0, noise)))

    pts = [dataclasses.replace(p, p99_ms=noisy(a), p50_ms=noisy(b)) for p, a, b in zip(pts, p99, p50, strict=True)]
    return CalibrationData(pts, 2.0, {"synthetic": True})


def test_fit_recovers_known_parameters_exactly_without_noise() -> None:
    result = fit_profile(synthetic(), ServiceProfile(gc_assist_ms=0.5))
    for name in ("s_cpu_ms", "cs2", "rtt_ms", "rtt_std_ms", "usl_sigma", "gc_assist_ms"):
        assert result.fitted[name] == pytest.approx(getattr(TRUE, name), rel=1e-3, abs=1e-3), name
    assert result.quality["median_abs_rel_error_p99"] < 1e-4
    assert result.quality["n_points"] == len(SETTINGS) * len(FRACTIONS)


@pytest.mark.slow  # a multi-start fit
def test_fit_recovers_capacity_parameters_under_noise() -> None:
    """10 % log-normal noise on every point: service time and contention stay within a few per cent."""
    result = fit_profile(synthetic(noise=0.10, seed=3))
    assert result.fitted["s_cpu_ms"] == pytest.approx(TRUE.s_cpu_ms, rel=0.05)
    assert result.fitted["usl_sigma"] == pytest.approx(TRUE.usl_sigma, abs=0.03)
    assert result.quality["median_abs_rel_error_p99"] < 0.12
    assert result.stderr_rel["s_cpu_ms"] is not None and result.stderr_rel["s_cpu_ms"] < 0.1


@pytest.mark.slow  # a multi-start fit
def test_fit_is_deterministic() -> None:
    data = synthetic(noise=0.1, seed=5)
    a, b = fit_profile(data), fit_profile(data)
    assert a.fitted == b.fitted


def test_choose_params_follows_what_the_data_can_identify() -> None:
    data = synthetic()
    names, fixed = choose_params(data)
    assert {"s_cpu_ms", "cs2", "rtt_ms", "rtt_std_ms", "usl_sigma", "gc_assist_ms"} == set(names)
    assert "no setting has GOMAXPROCS above the quota" in fixed["sched_overhead"]
    # A one-core quota: GOMAXPROCS 2 adds no core (usl_sigma unidentifiable) but costs scheduling overhead.
    quota1 = CalibrationData([p for p in data.points if p.setting in (SETTINGS[0], SETTINGS[3])], 1.0)
    names1, _ = choose_params(quota1)
    assert "usl_sigma" not in names1 and "sched_overhead" in names1
    one = CalibrationData([p for p in data.points if p.setting == SETTINGS[0]], 2.0)
    assert "do not vary" in choose_params(one)[1]["gc_assist_ms"]


def test_unknown_fit_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"fit params \['s_cpu'\] unknown; choose from"):
        FitConfig(params=("s_cpu",))


def test_setting_parsing_and_errors() -> None:
    assert Setting.parse_list("1,50,0; 2,200,1024") == (Setting(1, 50, 0), Setting(2, 200, 1024))
    with pytest.raises(ConfigError, match=r"--settings '1,50': want GOMAXPROCS,GOGC,POOL as three integers"):
        Setting.parse("1,50")
    with pytest.raises(ConfigError, match="need GOMAXPROCS >= 1"):
        Setting.parse("0,50,0")


def test_direct_estimates_read_allocation_heap_and_gc_cost_from_counters() -> None:
    # 40 KB/request without the pool, 4 KB with it; pacer runway says live + roots = 3 MB;
    # GC CPU per cycle 1 ms + 2e-10 s/B x heap at two heap sizes.
    def stats(per_req: float, heap: float, gogc: int, requests: float = 10_000.0) -> ServerStats:
        alloc = per_req * requests
        cycles = alloc * 100.0 / (gogc * heap)
        per_cycle = (1e-3 + 2e-10 * heap) / (TRUE.f_turbo_ghz / TRUE.f_base_ghz)
        return ServerStats(10.0, requests, 5.0, cycles, cycles * per_cycle, alloc, 2.4e6)

    pts = [
        Point(Setting(1, 50, 0), 1000.0, 5.0, 1.0, server=stats(40_000.0, 3e6, 50)),
        Point(Setting(2, 200, 0), 1000.0, 5.0, 1.0, server=stats(40_000.0, 3e6, 200)),
        Point(Setting(2, 100, 1024), 1000.0, 5.0, 1.0, server=stats(4_000.0, 9e6, 100)),
    ]
    values, notes = direct_estimates(CalibrationData(pts, 2.0), TRUE)
    assert values["alloc_bytes_per_req"] == pytest.approx(40_000.0)
    assert values["pooled_fraction"] == pytest.approx(0.9)
    assert values["live_heap_bytes"] + values["roots_bytes"] == pytest.approx(3e6)
    assert values["live_heap_bytes"] == pytest.approx(2.4e6)
    assert values["gc_fixed_cpu_s"] == pytest.approx(1e-3, rel=1e-6)
    assert values["gc_cpu_s_per_byte"] == pytest.approx(2e-10, rel=1e-6)
    assert "non-negative least squares" in notes["gc_fixed_cpu_s"]


def test_holdout_report_of_the_true_profile_is_perfect() -> None:
    fit = synthetic()
    curves = synthetic(role="holdout_curve", settings=(Setting(2, 50, 1024),))
    levels = synthetic(role="holdout_level", settings=(Setting(2, 50, 1024),))
    data = CalibrationData(fit.points + curves.points + levels.points, 2.0)
    report = holdout_report(TRUE, data, slo_p99_ms=8.0)
    assert report is not None
    assert report["p99_median_abs_rel_error"] == pytest.approx(0.0, abs=1e-9)
    # both knees on one fine grid: the measured curve interpolated between its levels
    assert report["knee_rel_error"] < 0.03
    assert report["goal"] == {"p99_median_abs_rel_error": 0.25, "knee_rel_error": 0.10, "p99_met": True,
                              "knee_met": True}  # fmt: skip


@pytest.mark.slow  # a multi-start fit
def test_profile_yaml_round_trips_through_serviceprofile_load(tmp_path: Path) -> None:
    data = synthetic(noise=0.05)
    result = fit_profile(data)
    path = tmp_path / "p.yaml"
    path.write_text(profile_yaml(result, source={"command": "gosvc serve --cpu-us 500"}))
    loaded = ServiceProfile.load(path)
    for name, value in result.profile.to_dict().items():
        assert getattr(loaded, name) == pytest.approx(value, rel=1e-5), name
    text = path.read_text()
    assert "rmse_log_p99:" in text and "median_abs_rel_error_p99:" in text and "n_points: 32" in text


def _probe_report(tmp_path: Path, setting: Setting, profile: ServiceProfile = TRUE) -> Path:
    loads = [f * _capacity(profile, setting.gomaxprocs) for f in FRACTIONS]
    pts = [Point(setting, q, NAN, NAN, arrivals="uniform", overload_s=3.0) for q in loads]
    p50, p99 = simulate_points(profile, pts, cpu_quota_cores=2.0)
    curve = [{"step": i, "qps": q, "offered_qps": q, "served_qps": q, "p50_ms": float(a), "p99_ms": float(b),
              "error_rate": 0.0, "duration_s": 5.0, "alloc_bytes_per_s": 4e7, "gc_cycles_per_s": 10.0,
              "gc_cpu_fraction": 0.01, "cpu_util": 0.5}
             for i, (q, a, b) in enumerate(zip(loads, p50, p99, strict=True))]  # fmt: skip
    report = {"schema": "rlctl.probe/v1", "url": "http://127.0.0.1:1/work", "ramp": {"step_s": 5.0, "interval_s": 1.0},
              "settings": {"gomaxprocs": setting.gomaxprocs, "gogc": setting.gogc,
                           "object_pool_size": setting.object_pool_size, "cpu_quota_cores": 2.0},
              "curve": curve}  # fmt: skip
    path = tmp_path / f"probe-{setting.gomaxprocs}.json"
    path.write_text(json.dumps(report))
    return path


@pytest.mark.slow  # a multi-start fit
def test_fit_from_probe_reports(tmp_path: Path) -> None:
    data = load_probe_report(_probe_report(tmp_path, Setting(1, 100, 1024)))
    data = data.merge(load_probe_report(_probe_report(tmp_path, Setting(2, 100, 1024))))
    assert {p.arrivals for p in data.points} == {"uniform"} and data.cpu_quota_cores == 2.0
    result = fit_profile(data)
    assert result.fitted["s_cpu_ms"] == pytest.approx(TRUE.s_cpu_ms, rel=0.02)
    assert result.fitted["usl_sigma"] == pytest.approx(TRUE.usl_sigma, abs=0.02)


def test_probe_report_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something/v9"}))
    with pytest.raises(ConfigError, match=r"bad.json: not an rlctl probe report \(schema rlctl.probe/v1\)"):
        load_probe_report(bad)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"schema": "rlctl.probe/v1", "settings": {"gomaxprocs": 2}, "curve": []}))
    with pytest.raises(ConfigError, match=r"settings lack \['gogc', 'object_pool_size'\]"):
        load_probe_report(bare)


def test_parse_loadgen_lines_and_saturation() -> None:
    lines = [
        {"t_s": 0.5, "interval_s": 0.5, "offered": 100, "completed": 100, "errors": 0, "p50_ms": 1.0, "p99_ms": 4.0,
         "target_qps": 200, "max_ms": 5.0},
        {"t_s": 1.0, "interval_s": 0.5, "offered": 100, "completed": 100, "errors": 0, "p50_ms": 1.2, "p99_ms": 6.0,
         "target_qps": 200, "max_ms": 7.0},
        {"t_s": 1.1, "interval_s": 0.1, "offered": 0, "completed": 1, "errors": 0, "p50_ms": 1.0, "p99_ms": 90.0,
         "target_qps": 0, "max_ms": 90.0},
        {"summary": True, "offered": 200, "completed": 200, "errors": 0, "interval_s": 1.0},
    ]  # fmt: skip
    step = parse_loadgen("\n".join(json.dumps(x) for x in lines), 200.0)
    assert step.p99s == [4.0, 6.0] and step.p99_ms == 5.0 and step.offered_qps == 200.0
    base = Baseline(p99_ms=4.0, p50_ms=1.0)
    assert not saturated(step, base, 25.0)
    assert saturated(dataclasses.replace(step, error_rate=0.05), base, 25.0)
    assert not saturated(dataclasses.replace(step, p99s=[500.0]), base, 25.0)  # a tail spike: a neighbour's burst
    assert saturated(dataclasses.replace(step, p99s=[500.0], p50s=[50.0]), base, 25.0)  # the median rose too


@pytest.mark.slow  # a multi-start fit
def test_calibration_report_is_strict_json() -> None:
    data = synthetic(noise=0.05)
    report = calibration_report(fit_profile(data), data, slo_p99_ms=8.0)
    json.dumps(report, allow_nan=False)
    assert report["schema"] == "rlctl.calibration/v1" and report["holdout"] is None
    assert len(report["fit_knees"]) == len(SETTINGS)


@pytest.mark.slow  # a multi-start fit
def test_cli_fits_saved_data_and_writes_profile_and_report(tmp_path: Path) -> None:
    fit = synthetic(noise=0.05)
    hold = synthetic(role="holdout_curve", settings=(Setting(2, 50, 1024),))
    lvl = synthetic(role="holdout_level", settings=(Setting(2, 50, 1024),))
    data = CalibrationData(fit.points + hold.points + lvl.points, 2.0, {"synthetic": True})
    src = tmp_path / "data.json"
    src.write_text(json.dumps(data.to_dict()))
    out, prof = tmp_path / "report.json", tmp_path / "profile.yaml"
    proc = invoke_rlctl("calibrate", "--from-data", str(src), "--json", str(out), "--profile", str(prof))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["holdout"]["p99_median_abs_rel_error"] < 0.1
    assert ServiceProfile.load(prof).s_cpu_ms == pytest.approx(TRUE.s_cpu_ms, rel=0.05)
    assert "holdout" in proc.stderr


def test_cli_without_a_source_exits_2_with_the_fix(tmp_path: Path) -> None:
    proc = invoke_rlctl("calibrate", "--json", str(tmp_path / "r.json"), "--profile", str(tmp_path / "p.yaml"))
    assert proc.returncode == 2
    assert "ConfigError: nothing to fit: give --target URL" in proc.stderr


def test_shipped_testbed_profile_loads_and_reports_its_holdout() -> None:
    profile = ServiceProfile.load(REPO / "envs" / "profiles" / "testbed.yaml")
    assert 0.05 < profile.s_cpu_ms < 10.0
    report = json.loads((REPO / "envs" / "profiles" / "testbed.fit.json").read_text())
    hold = report["holdout"]
    assert {"p99_median_abs_rel_error", "knee_rel_error"} <= set(hold)
    assert len(hold["settings"]) >= 2 and not set(hold["settings"]) & set(report["fit"]["quality"]["settings"])


@pytest.mark.real  # gosvc
@pytest.mark.slow
def test_real_calibration_smoke_against_gosvc() -> None:
    """A short real run (<= 40 s): two settings, a 5-level ladder of 1 s steps, then the fit."""
    from rlctl.boundary.probe import REPO_GOSVC

    if not REPO_GOSVC.is_file():
        pytest.fail(f"{REPO_GOSVC} is missing: build it with `bash deploy/gosvc/build.sh --build-only`")
    from rlctl.harness.testbed import TESTBED_SERVE_FLAGS, TestBed, measure, measure_config_for

    with TestBed(TESTBED_SERVE_FLAGS) as bed:
        cfg = measure_config_for(bed, step_s=1.0, interval_s=0.25, repeats=1, fractions=(0.3, 0.55, 0.75, 0.9, 1.05),
                                 scout_start_qps=200.0, scout_factor=1.6, scout_step_s=0.75)  # fmt: skip
        data = measure(cfg, (Setting(1, 100, 1024), Setting(2, 100, 0)), (), source={"command": bed.command})
    assert {p.setting for p in data.points} == {Setting(1, 100, 1024), Setting(2, 100, 0)}
    assert all(p.server.requests > 0 for p in data.points)
    result = fit_profile(data, config=FitConfig(starts=2))
    # --cpu-us 500 spins 0.5 ms; with HTTP overhead and a shared host the service time is 0.3-5 ms at turbo speed.
    assert 0.2 < result.fitted["s_cpu_ms"] < 8.0
    assert result.quality["n_points"] >= 6 and math.isfinite(result.quality["rmse_log_p99"])
    assert result.direct["alloc_bytes_per_req"] > 32768  # the 32 KiB buffer plus HTTP machinery


@pytest.mark.skipif(not (Path("/sys/fs/cgroup/cpu/cgroup.procs").exists() and os.geteuid() == 0),
                    reason="needs root and the cgroup v1 CPU controller")  # fmt: skip
@pytest.mark.real  # gosvc in a cgroup
def test_testbed_runs_in_a_quota_cgroup_and_removes_it() -> None:
    from rlctl.boundary.probe import REPO_GOSVC

    if not REPO_GOSVC.is_file():
        pytest.fail(f"{REPO_GOSVC} is missing: build it with `bash deploy/gosvc/build.sh --build-only`")
    from rlctl.harness.testbed import TestBed, _service_quota

    with TestBed(["--cpu-us", "100"], cgroup_quota_cores=0.5) as bed:
        assert bed.cgroup is not None and bed.cgroup.is_dir()
        group = bed.cgroup
        assert _service_quota(bed.metrics_url) == pytest.approx(0.5)
    assert not group.exists()


POD_KILL = [{"fault": "kill", "kind": "pod-kill", "start_s": 100.0, "end_s": 110.0}]


def _suite_report(
    path: Path,
    repeat: int,
    p99: list[float],
    replicas: list[float],
    qps: list[float],
    *,
    p50: list[float] | None = None,
    faults: list[dict[str, object]] = POD_KILL,
) -> None:
    n = len(p99)
    series = {"t_s": [float(i + 1) for i in range(n)], "dt_s": [1.0] * n, "offered_qps": qps,
              "p50_ms": p50 or [2.0] * n, "p99_ms": p99, "error_rate": [0.0] * n, "replicas": replicas,
              "gomaxprocs": [1.0] * n, "gogc": [100.0] * n}  # fmt: skip
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps({"repeat": repeat, "faults": faults,
                                                  "results": {"hpa-tuned": {"series": series}}}))  # fmt: skip


def test_suite_reports_keep_only_steady_seconds_and_hold_out_later_repeats(tmp_path: Path) -> None:
    from envs.calibrate import SUITE_SETTLE_S, load_suite_reports

    n = 300
    # 2 replicas, then 3 from t=200; 100 req/s per replica throughout; P99 5 ms, except 50 ms in the
    # fault window and its settling time, and 40 ms in the seconds right after the scale-up.
    t = np.arange(1, n + 1)
    reps = np.where(t < 200, 2.0, 3.0)
    p99 = np.full(n, 5.0)
    p99[(t >= 100) & (t <= 110 + SUITE_SETTLE_S)] = 50.0
    p99[(t >= 200) & (t < 205)] = 40.0
    _suite_report(tmp_path / "a-r1", 1, p99.tolist(), reps.tolist(), (100.0 * reps).tolist())
    _suite_report(tmp_path / "a-r2", 2, p99.tolist(), reps.tolist(), (100.0 * reps).tolist())
    data = load_suite_reports(tmp_path, cpu_quota_cores=0.25)
    assert data.cpu_quota_cores == 0.25 and data.source["runs"] == ["a-r1", "a-r2"]
    fit, hold = data.select("fit"), data.select("holdout_level")
    assert len(fit) == len(hold) == 2  # one point per replica count
    assert all(p.p99_ms == 5.0 and p.qps == pytest.approx(100.0) for p in fit + hold)
    # warm-up, the fault and its settling, and 10 s after the scale-up are gone
    kept = sum(p.repeats for p in fit)
    assert kept == n - 15 - (110 + SUITE_SETTLE_S - 100 + 1) - 10 + 1


def test_cli_fits_a_real_suite_folder_and_names_missing_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = TRUE.replace(cpu_quota_cores=0.25, cores_free=0.25, s_cpu_ms=0.9, cs2=0.4, rtt_ms=1.5, rtt_std_ms=0.5)
    loads = np.repeat(np.linspace(20.0, 150.0, 14), 20)
    pts = [Point(Setting(1, 100, 256), float(q), NAN, NAN, duration_s=1.0, overload_s=1.0, arrivals="uniform")
           for q in loads]  # fmt: skip
    p50, p99 = simulate_points(truth, pts, cpu_quota_cores=0.25)
    for rep in (1, 2):
        noisy = (p99 * np.exp(rng.normal(0.0, 0.03, p99.size))).tolist()
        _suite_report(tmp_path / f"s-r{rep}", rep, noisy, [2.0] * loads.size, (2.0 * loads).tolist(),
                      p50=p50.tolist(), faults=[])  # fmt: skip
    out, prof = tmp_path / "fit.json", tmp_path / "p.yaml"
    base = tmp_path / "base.yaml"
    start = truth.replace(s_cpu_ms=0.5, cs2=1.0, rtt_ms=0.5, rtt_std_ms=0.1, s_mem_ms=0.5 * truth.s_mem_ms / 0.9)
    base.write_text(json.dumps({"profile": start.to_dict()}))  # YAML reads JSON
    args = ("calibrate", "--from-suite", str(tmp_path), "--json", str(out), "--profile", str(prof),
            "--base-profile", str(base), "--fit-params", "s_cpu_ms,cs2,rtt_ms,rtt_std_ms")  # fmt: skip
    missing = invoke_rlctl(*args)
    assert missing.returncode == 2 and "--cpu-quota-cores" in missing.stderr and not out.exists()
    proc = invoke_rlctl(*args, "--cpu-quota-cores", "0.25")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["holdout"]["p99_median_abs_rel_error"] < 0.1
    assert ServiceProfile.load(prof).s_cpu_ms == pytest.approx(0.9, rel=0.1)
    empty = invoke_rlctl("calibrate", "--from-suite", str(tmp_path / "none"), "--cpu-quota-cores", "0.25",
                      "--json", str(tmp_path / "x.json"), "--profile", str(tmp_path / "x.yaml"))  # fmt: skip
    assert empty.returncode == 2 and "no */report.json" in empty.stderr
