"""The one input layer: size, encoding and YAML limits, and the scenario schema's bounds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chaos.spec import MAX_FAULTS, load_scenario
from rlctl.errors import ConfigError
from rlctl.inputs import MAX_YAML_ALIASES, load_yaml, read_text

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_bytes_that_are_not_utf8_name_the_offset(tmp_path: Path) -> None:
    p = write(tmp_path, b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: scenario file is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_scenario(p)


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    p = write(tmp_path, "x" * 2048)
    with pytest.raises(ConfigError, match=r"is 2,048 bytes, over the limit of 1,024"):
        read_text(p, what="file", max_bytes=1024)


def test_nested_aliases_are_refused_not_expanded() -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"more than {MAX_YAML_ALIASES} alias uses|more than 20,000 values"):
        load_yaml(BILLION_LAUGHS, source="bomb.yaml")
    assert time.monotonic() - start < 5


def test_a_few_aliases_still_work() -> None:
    assert load_yaml("a: &d {x: 1}\nb: *d\n", source="ok.yaml") == {"a": {"x": 1}, "b": {"x": 1}}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("duration_s: 1e300", r"duration_s: Input should be less than or equal to 604800"),
        ("duration_s: 100000000000000000000000000000", r"duration_s: Input should be less than or equal"),
        ("load: {kind: step, base_qps: .inf}", r"load\.base_qps: Input should be a finite number"),
        ("load: {kind: constant, qps: .nan}", r"load\.qps: Input should be a finite number"),
        (
            "faults: [{kind: cpu-stress, start_s: 0, duration_s: 10, params: {workers: 100000}}]",
            r"workers=100000 of 'cpu-stress' is out of range: at most 8192",
        ),
        (
            "faults: [{kind: cpu-stress, start_s: 0, duration_s: 10, params: {workers: 1.5}}]",
            r"workers=1\.5 of 'cpu-stress' must be a whole number",
        ),
        (
            "duration_s: 60\nfaults: [{kind: pod-kill, start_s: 120, duration_s: 10}]",
            r"faults\[0\] \(pod-kill\) starts at 120 s, at or after the scenario.s end \(60 s\)",
        ),
        ('name: "a\\x07b"', r"name: String should match pattern"),
        ('name: ""', r"name: String should have at least 1 character"),
        (
            "faults: [{kind: network-delay, start_s: 0, duration_s: 10, repeat: {every_s: 1, count: 10001}}]",
            r"count: Input should be less than or equal to 10000",
        ),
    ],
)
def test_the_scenario_schema_bounds_every_value(tmp_path: Path, body: str, match: str) -> None:
    text = body if body.startswith("name:") else f"name: x\n{body}\n"
    with pytest.raises(ConfigError, match=match):
        load_scenario(write(tmp_path, text))


@pytest.mark.parametrize(
    ("count", "match"),
    [(2_000, rf"faults: List should have at most {MAX_FAULTS} items"), (20_000, r"more than 20,000 values")],
)
def test_too_many_faults_are_refused_quickly(tmp_path: Path, count: int, match: str) -> None:
    fault = "  - {kind: pod-kill, start_s: 1, duration_s: 1}\n"
    p = write(tmp_path, "name: x\nfaults:\n" + fault * count)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=match):
        load_scenario(p)
    assert time.monotonic() - start < 10


def test_a_scenario_name_becomes_a_file_name_inside_the_output_folder() -> None:
    from chaos.spec import file_stem

    assert file_stem("steady-constant") == "steady-constant"
    assert file_stem("../../etc/passwd") == "etc-passwd"
    assert file_stem("Squeeze CPU / 2") == "Squeeze-CPU-2"
    assert file_stem("...") == "scenario" and len(file_stem("x" * 253)) == 100


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("profile: {s_cpu_ms: .inf}", r"s_cpu_ms=inf is not finite"),
        ("profile: {s_cpu_ms: .nan}", r"s_cpu_ms=nan is not finite"),
        ("profile: {s_cpu_ms: -1}", r"s_cpu_ms=-1 is out of range"),
        ("profile: {s_cpu_ms: true}", r"s_cpu_ms=True is a boolean"),
        ("profile: {s_cpu_ms: fast}", r"s_cpu_ms='fast' is not a number"),
    ],
)
def test_a_profile_value_must_be_a_finite_number_in_range(tmp_path: Path, body: str, match: str) -> None:
    from envs.profile import ServiceProfile

    with pytest.raises(ConfigError, match=match):
        ServiceProfile.load(write(tmp_path, body, "p.yaml"))
