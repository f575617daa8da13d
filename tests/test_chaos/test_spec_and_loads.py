"""Scenario specs, load generators and trace files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from chaos.spec import FaultKind, FaultSpec, LoadSpec, Scenario, load_scenario
from envs.loads import load_qps, read_trace
from envs.model.faults import E, effects_table
from rlctl.errors import ConfigError


def test_every_load_kind_has_the_documented_shape() -> None:
    dt, n = 5.0, 720
    assert np.all(load_qps(LoadSpec(kind="constant", qps=300, noise=False), n, dt) == 300)
    d = load_qps(LoadSpec(kind="diurnal", base_qps=100, peak_qps=900, period_s=3600, noise=False), n, dt)
    assert d[0] == pytest.approx(100) and d.max() == pytest.approx(900, rel=1e-3)
    r = load_qps(LoadSpec(kind="ramp", start_qps=0, end_qps=1000, noise=False), n, dt)
    assert r[0] == 0 and r[-1] == pytest.approx(1000) and np.all(np.diff(r) >= 0)
    s = load_qps(LoadSpec(kind="step", base_qps=100, step_qps=500, at_s=600, noise=False), n, dt)
    assert s[119] == 100 and s[120] == 500
    f = load_qps(
        LoadSpec(kind="flash", base_qps=100, peak_qps=1000, at_s=600, rise_s=10, decay_s=60, noise=False), n, dt
    )
    assert f[100] == 100 and f.max() == pytest.approx(1000) and f[-1] < 110


def test_poisson_noise_is_seeded() -> None:
    spec = LoadSpec(kind="constant", qps=100)
    a = load_qps(spec, 100, 5.0, np.random.default_rng(1))
    b = load_qps(spec, 100, 5.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.std() > 0 and abs(a.mean() - 100) < 5


def test_trace_files_allow_comments_and_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "t.txt"
    plain.write_text("# requests per minute\n10\n20 # peak\n\n5\n")
    np.testing.assert_array_equal(read_trace(plain), [10, 20, 5])
    gz = tmp_path / "t.txt.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("1\n2\n")
    np.testing.assert_array_equal(read_trace(gz), [1, 2])
    q = load_qps(LoadSpec(kind="trace", path=str(plain), peak_qps=200, interval_s=60, noise=False), 24, 5.0)
    assert q[0] == pytest.approx(100) and q[12] == pytest.approx(200)


def test_bad_trace_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1\nlots\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2: 'lots' is not a number"):
        read_trace(bad)


def test_bad_scenario_names_file_field_and_fix(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nduration_s: 60\nfaults:\n  - kind: network-delay\n    start_s: 1\n    duration_s: 5\n"
                 "    params: {latency: 10}\n")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert str(p) in msg and "faults.0" in msg and "latency_ms" in msg
    p.write_text("name: x\nduration_s: -5\n")
    with pytest.raises(ConfigError, match="duration_s"):
        load_scenario(p)
    p.write_text("name: [x\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:2: not valid YAML"):
        load_scenario(p)


def test_repeats_and_sequences_expand_into_windows() -> None:
    s = Scenario.model_validate({
        "name": "r", "duration_s": 1000,
        "faults": [{"kind": "pod-kill", "start_s": 100, "duration_s": 10, "repeat": {"every_s": 300, "count": 3}}],
        "sequences": [{"start_s": 50, "gap_s": 10, "steps": [
            {"kind": "cpu-stress", "start_s": 0, "duration_s": 100},
            {"kind": "network-delay", "start_s": 0, "duration_s": 50}]}],
    })  # fmt: skip
    spans = [(w.kind, w.start_s, w.end_s) for w in s.windows()]
    assert (FaultKind.POD_KILL, 700.0, 710.0) in spans
    assert (FaultKind.CPU_STRESS, 50.0, 150.0) in spans
    assert (FaultKind.NETWORK_DELAY, 160.0, 210.0) in spans


def test_effects_table_maps_each_fault() -> None:
    s = Scenario(name="e", duration_s=100, faults=[
        FaultSpec(kind=FaultKind.NETWORK_DELAY, start_s=10, duration_s=20, params={"latency_ms": 30, "jitter_ms": 4}),
        FaultSpec(kind=FaultKind.CPU_STRESS, start_s=0, duration_s=5, params={"workers": 2, "load_percent": 50}),
    ])  # fmt: skip
    t = effects_table(s.windows(), 20, 5.0)
    assert t[2, E["delay_ms"]] == 30 and t[5, E["jitter_ms"]] == 4 and t[6, E["delay_ms"]] == 0
    assert t[0, E["cpu_stress_cores"]] == 1.0 and t[1, E["cpu_stress_cores"]] == 0


def test_a_builtin_trace_resolves_to_the_file_shipped_in_the_package() -> None:
    import chaos.spec

    spec = LoadSpec(kind="trace", path="builtin:nasa-1995-requests-per-minute.txt.gz")
    assert spec.path is not None
    path = Path(spec.path)
    assert path.parent == Path(chaos.spec.__file__).resolve().parent / "traces" and path.is_file()
    # 84,332 minutes of July and August 1995: the trace itself, not a stand-in.
    assert read_trace(path).size == 84_332


def test_an_unknown_builtin_trace_names_the_shipped_ones(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nload:\n  kind: trace\n  path: builtin:nasa.txt\n")
    with pytest.raises(ConfigError, match=r"builtin:nasa\.txt: no such shipped trace .*shipped: nasa-1995"):
        load_scenario(bad)


def test_a_missing_trace_file_is_refused_when_the_scenario_is_read(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nload:\n  kind: trace\n  path: traces/gone.txt\n")
    with pytest.raises(ConfigError, match=r"load.path 'traces/gone.txt': no such file .*builtin:"):
        load_scenario(bad)


def test_the_real_nasa_replay_reads_the_shipped_trace() -> None:
    import chaos

    scenario = load_scenario(Path(chaos.__file__).parent / "scenarios" / "real" / "nasa-replay.yaml")
    assert scenario.load.path is not None
    assert scenario.load.path.endswith("chaos/traces/nasa-1995-requests-per-minute.txt.gz")


def test_a_suite_without_its_trace_fails_instead_of_swapping_the_scenario(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import chaos.spec
    from envs.profile import ServiceProfile
    from envs.scenarios import default_trace_path
    from policies.suites import validation_suite

    by_name = {s.name: s for s in validation_suite(ServiceProfile())}
    assert by_name["bursty-nasa-replay"].load.kind == "trace"
    monkeypatch.setattr(chaos.spec, "TRACES_DIR", tmp_path)
    default_trace_path.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"builtin:nasa-1995-requests-per-minute\.txt\.gz: no such shipped trace"):
            validation_suite(ServiceProfile())
    finally:
        default_trace_path.cache_clear()
