"""Hostile inputs, generated: every one is refused cleanly by every command that reads it.

Hypothesis builds scenario files and traces that are wrong in one way each — a value that is
not finite, out of range, of the wrong type, a fault that can never fire, too many faults, bytes
that are not UTF-8, YAML that does not parse or expands without bound — and drives the real
entry point (``rlctl.cli.main``) in-process. For each case and command it asserts what a user
is promised: exit code 2, exactly one line ``Type: message`` on stderr, no traceback, nothing
on stdout, no file written, and an answer within a time bound. A few cases of each class also
go through a real ``rlctl`` subprocess, so logging and interpreter start-up are covered too.

The counts of cases generated per class are printed at the end of the run (``-s`` shows them).
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_rlctl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: Seconds any refusal may take in-process (a loaded 2-core host included).
TIME_BOUND_S = 5.0
COUNTS: collections.Counter[str] = collections.Counter()

BASE: dict[str, Any] = {
    "name": "fuzz",
    "kind": "fault",
    "duration_s": 600,
    "load": {"kind": "constant", "qps": 500},
    "faults": [
        {
            "kind": "network-delay",
            "start_s": 60,
            "duration_s": 60,
            "params": {"latency_ms": 20},
            "selector": {"namespace": "fuzz"},
        }
    ],
}

#: Fields where every value below is invalid: non-negative, bounded, numeric.
NUMERIC_FIELDS: tuple[tuple[str, ...], ...] = (
    ("duration_s",),
    ("slo_p99_ms",),
    ("load", "qps"),
    ("load", "interval_s"),
    ("load", "time_scale"),
    ("faults", 0, "start_s"),
    ("faults", 0, "duration_s"),
    ("faults", 0, "params", "latency_ms"),
)
BAD_NUMBERS = st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1.0, -1e-9, 10**30, -(10**30)])
BAD_TYPES = st.sampled_from(["abc", "", [], {}, [1, 2], {"a": 1}, True, None])


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(doc)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


@st.composite
def hostile_scenarios(draw: st.DrawFn) -> tuple[str, bytes]:
    """One scenario file that is wrong in exactly one way, with the name of its input class."""
    kind = draw(
        st.sampled_from(
            [
                "bad-number", "bad-type", "unknown-field", "unknown-fault", "never-fires", "too-many-faults",
                "huge-worker-count", "not-utf8", "bad-yaml", "alias-bomb", "bad-name",
            ]
        )
    )  # fmt: skip
    if kind == "bad-number":
        return kind, _dump(_set(BASE, draw(st.sampled_from(NUMERIC_FIELDS)), draw(BAD_NUMBERS)))
    if kind == "bad-type":
        return kind, _dump(_set(BASE, draw(st.sampled_from(NUMERIC_FIELDS)), draw(BAD_TYPES)))
    if kind == "unknown-field":
        where = draw(st.sampled_from([(), ("load",), ("faults", 0)]))
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12).filter(lambda k: k != "name"))
        path = (*where, f"x_{key}")
        return kind, _dump(_set(BASE, path, draw(st.integers())))
    if kind == "unknown-fault":
        name = draw(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20))
        return kind, _dump(_set(BASE, ("faults", 0, "kind"), f"not-{name}"))
    if kind == "never-fires":
        start = draw(st.floats(min_value=600, max_value=86_400))
        return kind, _dump(_set(BASE, ("faults", 0, "start_s"), start))
    if kind == "too-many-faults":
        n = draw(st.integers(min_value=1001, max_value=3000))
        return kind, _dump(_set(BASE, ("faults",), [BASE["faults"][0]] * n))
    if kind == "huge-worker-count":
        fault = {"kind": "cpu-stress", "start_s": 0, "duration_s": 10, "params": {"workers": draw(st.integers(8193))}}
        return kind, _dump(_set(BASE, ("faults",), [fault]))
    if kind == "not-utf8":
        text = _dump(BASE)
        at = draw(st.integers(min_value=0, max_value=len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe9", b"\x80\x80", b"\xed\xa0\x80"]))
        return kind, text[:at] + bad + text[at:]
    if kind == "bad-yaml":
        return kind, draw(st.sampled_from([b"name: [x\n", b"a: b: c\n", b"- : :\n  - ]\n", b"{{{{\n", b"\t- x\n"]))
    if kind == "alias-bomb":
        depth = draw(st.integers(min_value=7, max_value=12))
        lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, depth)]
        return kind, (
            "\n".join(["name: fuzz", "load: {kind: constant, qps: 1}", "extra:", *("  " + x for x in lines)]) + "\n"
        ).encode()
    # bad-name: a name that cannot be a file or Kubernetes name
    bad = draw(st.sampled_from(["", "x\n", "a\tb", "\x1b[31mred", "x\x00", "x" * 254]))
    return kind, _dump(_set(BASE, ("name",), bad))


@st.composite
def hostile_traces(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """One trace file (content, suffix) that is wrong in one way."""
    kind = draw(
        st.sampled_from(["not-a-number", "negative", "not-finite", "too-large", "empty", "not-utf8", "bad-gzip"])
    )
    good = [str(v) for v in draw(st.lists(st.integers(0, 1000), min_size=0, max_size=20))]
    if kind == "not-a-number":
        bad = draw(st.text(alphabet="abcxyz!?:", min_size=1, max_size=10))
        return kind, "\n".join([*good, bad, *good]).encode(), ".txt"
    if kind == "negative":
        return kind, "\n".join([*good, str(-draw(st.integers(1, 10**6)))]).encode(), ".txt"
    if kind == "not-finite":
        return kind, "\n".join([*good, draw(st.sampled_from(["inf", "-inf", "nan", "1e999"]))]).encode(), ".txt"
    if kind == "too-large":
        return kind, "\n".join([*good, "1e12"]).encode(), ".txt"
    if kind == "empty":
        return kind, draw(st.sampled_from([b"", b"# only a comment\n", b"\n\n  \n"])), ".txt"
    if kind == "not-utf8":
        return kind, b"12\n\xff\xfe34\n", ".txt"
    return kind, draw(st.binary(min_size=0, max_size=64)), ".gz"


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def run_main(args: list[str]) -> tuple[int, str, str, float]:
    """``rlctl ARGS`` through the console-script entry point, in this process."""
    from rlctl import cli

    argv = sys.argv
    sys.argv = ["rlctl", *args]
    start = time.monotonic()
    code: int | str | None = 0
    try:
        with captured() as (out, err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = argv
    return int(code or 0), out.getvalue(), err.getvalue(), time.monotonic() - start


def assert_refused(code: int, out: str, err: str, elapsed: float, what: str, names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{what}: exit {code}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].split(":", 1)[0].endswith("Error"), f"{what}: {err!r}"
    assert names in lines[0], f"{what}: the message does not name {names}: {err!r}"
    assert "Traceback" not in err and out == "", f"{what}: stdout {out!r}"
    assert elapsed < TIME_BOUND_S, f"{what}: took {elapsed:.1f} s"


#: Each command that reads a scenario, as argv given the file and an output folder.
SCENARIO_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "chaos render": lambda f, o: ["chaos", "render", str(f), "--output", str(o / "out.yaml")],
    "simulate": lambda f, o: ["simulate", str(f), "--out", str(o), "--json", str(o / "s.json")],
    "chaos run --backend sim": lambda f, o: ["chaos", "run", str(f), "--backend", "sim", "--report", str(o)],
    "chaos run --dry-run (local)": lambda f, o: ["chaos", "run", str(f), "--backend", "local", "--dry-run"],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_scenarios(), command=st.sampled_from(sorted(SCENARIO_COMMANDS)))
@pytest.mark.slow  # hundreds of generated scenarios through six commands
def test_hostile_scenarios_are_refused_by_every_command(
    tmp_path_factory: Any, case: tuple[str, bytes], command: str
) -> None:
    kind, content = case
    folder = tmp_path_factory.mktemp("fuzz")
    scenario, out = folder / "scenario.yaml", folder / "out"
    scenario.write_bytes(content)
    result = run_main(SCENARIO_COMMANDS[command](scenario, out))
    assert_refused(*result, what=f"{command} on {kind}", names=str(scenario))
    assert not out.exists(), f"{command} on {kind} wrote {out}"
    COUNTS[f"scenario/{kind}"] += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_traces())
@pytest.mark.slow  # hundreds of generated inputs
def test_hostile_traces_are_refused_by_eval(tmp_path_factory: Any, case: tuple[str, bytes, str]) -> None:
    kind, content, suffix = case
    folder = tmp_path_factory.mktemp("fuzz")
    trace, out = folder / f"trace{suffix}", folder / "out"
    trace.write_bytes(content)
    args = ["eval", "--trace", str(trace), "--baseline", "hpa", "--seeds", "1", "--json", str(out / "e.json")]
    assert_refused(*run_main(args), what=f"eval --trace on {kind}", names=str(trace))
    assert not out.exists()
    COUNTS[f"trace/{kind}"] += 1


BOUND_FIELDS = tuple(
    f"{side}_{knob}"
    for knob in ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")
    for side in ("min", "max")
)
JUNK = st.sampled_from(["abc", 1.5, True, None, [], {}, "1"])


@st.composite
def hostile_manifests(draw: st.DrawFn) -> tuple[str, Callable[[dict[str, Any]], None], bool]:
    """A change to the shipped manifest that the contract refuses, and whether to re-digest it."""
    kind = draw(st.sampled_from(["bound", "bound-type", "window", "slo", "schema", "env", "missing", "files", "stale"]))
    if kind in ("bound", "bound-type"):
        field = draw(st.sampled_from(BOUND_FIELDS))
        value = draw(st.sampled_from([-(10**9), 10**12, -2])) if kind == "bound" else draw(JUNK)
        return kind, lambda m: m["bounds"].__setitem__(field, value), True
    if kind == "window":
        value = draw(st.sampled_from([0, -1, 10**6, "12", 12.5, None]))
        return kind, lambda m: m["features"].__setitem__("window", value), True
    if kind == "slo":
        value = draw(st.sampled_from([0, -1.0, -(10**9), "8", None, []]))
        return kind, lambda m: m["features"].__setitem__("slo_p99_ms", value), True
    if kind == "schema":
        value = draw(st.text("0123456789abcdef", min_size=16, max_size=16))
        return kind, lambda m: m.__setitem__("schema_hash", value if value != m["schema_hash"] else "0" * 16), True
    if kind == "env":
        value = "v" + draw(st.text("abcxyz0123", max_size=8))
        return kind, lambda m: m.__setitem__("env_version", value), True
    if kind == "missing":
        key = draw(st.sampled_from(["bounds", "features", "schema_hash", "schema_version", "files", "env_version"]))
        return kind, lambda m: m.pop(key), True
    if kind == "files":
        name = draw(st.text("abcdefgh", min_size=1, max_size=8)) + ".bin"
        return kind, lambda m: m["files"].__setitem__(name, "0" * 64), True
    # stale: a field changed without re-digesting (what a hand edit leaves)
    value = draw(st.integers(17, 10**6))
    return kind, lambda m: m["bounds"].__setitem__("max_replicas", value), False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_manifests())
@pytest.mark.slow  # hundreds of generated inputs
def test_hostile_manifests_are_refused_before_anything_loads(
    tmp_path_factory: Any, case: tuple[str, Callable[[dict[str, Any]], None], bool]
) -> None:
    import json
    import shutil

    from policies.artifact import default_artifact_dir, manifest_digest

    kind, change, redigest = case
    folder = tmp_path_factory.mktemp("fuzz")
    artifact, out = folder / "policy", folder / "out"
    shutil.copytree(default_artifact_dir(), artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    change(manifest)
    if redigest:
        manifest["artifact_digest"] = manifest_digest(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest, indent=2))
    args = ["eval", "--policy", str(artifact), "--suite", "smoke", "--seeds", "1", "--json", str(out / "e.json")]
    assert_refused(*run_main(args), what=f"eval --policy on {kind}", names=str(artifact))
    assert not out.exists()
    COUNTS[f"manifest/{kind}"] += 1


def test_the_untouched_artifact_verifies() -> None:
    # The control for the manifest cases: the shipped artifact, copied as it is, is accepted.
    from policies.artifact import default_artifact_dir, verify_artifact

    assert verify_artifact(default_artifact_dir()).schema_hash


@pytest.mark.parametrize(
    "content",
    [
        b"name: x\nduration_s: .inf\n",
        b"name: caf\xe9\n",
        b"name: x\nload: {kind: step, base_qps: 1e300}\n",
        b"name: x\nduration_s: 60\nfaults: [{kind: pod-kill, start_s: 61, duration_s: 1}]\n",
    ],
)
@pytest.mark.real  # rlctl processes: logging and interpreter start-up
def test_a_real_process_refuses_in_one_line(tmp_path: Path, content: bytes) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_bytes(content)
    for args in (["chaos", "render", str(scenario)], ["simulate", str(scenario), "--out", str(tmp_path / "o")]):
        r = run_rlctl(*args)
        assert_refused(r.returncode, r.stdout, r.stderr, 0.0, what=" ".join(args[:2]), names=str(scenario))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", sorted(SCENARIO_COMMANDS))
def test_the_unmutated_scenario_is_accepted(tmp_path: Path, command: str) -> None:
    # The control: each refusal above is the mutation's doing, not the command's or the base's.
    scenario = tmp_path / "scenario.yaml"
    scenario.write_bytes(_dump(BASE))
    code, _, err, _ = run_main(SCENARIO_COMMANDS[command](scenario, tmp_path / "out"))
    assert code == 0, err


@pytest.mark.slow  # counts every class, the slow one's too
def test_zz_report_counts() -> None:
    # Named to run last in this module: the generated cases per input class, all refused cleanly.
    total = sum(COUNTS.values())
    print(
        f"\nfuzz: {total} hostile inputs, all refused cleanly: "
        + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
    )
    assert total >= 250
