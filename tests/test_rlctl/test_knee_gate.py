"""``rlctl knee-gate`` (was ``rlctl guard``): the verdict, the table, exit codes 0 / 1 / 2, the old name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlctl.boundary.knee_gate import compare, load_report
from rlctl.cli import app
from rlctl.errors import CheckFailed, ConfigError

RLCTL = Path(sys.executable).parent / "rlctl"


def report(path: Path, knee: Any, **extra: Any) -> Path:
    data = {"knee_qps": knee, "knee_qps_second_method": knee, "max_qps_at_slo": knee, "stopped_at_qps": knee}
    data.update(extra)
    path.write_text(json.dumps(data))
    return path


def test_knee_moving_down_beyond_the_bound_fails(tmp_path: Path) -> None:
    result = compare(report(tmp_path / "a.json", 1000), report(tmp_path / "b.json", 800), max_shift=0.15)
    assert not result.passed
    assert result.shift == pytest.approx(-0.2)
    assert "moved down 20.0% (1000 -> 800 qps), more than the 15% bound" in result.message()


def test_small_moves_and_upward_moves_pass(tmp_path: Path) -> None:
    base = report(tmp_path / "a.json", 1000)
    assert compare(base, report(tmp_path / "b.json", 850)).passed  # exactly at the bound
    assert compare(base, report(tmp_path / "c.json", 849)).passed is False
    assert compare(base, report(tmp_path / "d.json", 2000)).passed  # faster is never a regression


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file; write it with `rlctl probe URL --json"),
        ("{not json", "not JSON"),
        ("[1, 2]", "a JSON list"),
        ('{"knee_qps": null}', "no knee_qps"),
        ('{"curve": []}', "no knee_qps"),
        ('{"knee_qps": -5}', "not a positive number"),
        ('{"knee_qps": "fast"}', "not a positive number"),
    ],
)
def test_bad_reports_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_report(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_max_shift_must_be_a_fraction(tmp_path: Path) -> None:
    base = report(tmp_path / "a.json", 1000)
    with pytest.raises(ConfigError, match="--max-shift 15"):
        compare(base, base, max_shift=15)


def test_cli_table_and_check_failed(tmp_path: Path) -> None:
    runner = CliRunner()
    base, new = report(tmp_path / "a.json", 1000), report(tmp_path / "b.json", 700)
    ok = runner.invoke(app, ["knee-gate", str(base), str(base)])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "knee (kneedle), qps" in ok.output
    bad = runner.invoke(app, ["knee-gate", str(base), str(new), "--max-shift", "0.15"])
    assert isinstance(bad.exception, CheckFailed)
    assert "moved down 30.0%" in str(bad.exception)
    assert "FAIL" in bad.output and "-30.0%" in bad.output
    assert "rlctl knee-gate" in ok.output


def test_the_old_name_guard_still_works_with_a_note(tmp_path: Path) -> None:
    runner = CliRunner()
    base, new = report(tmp_path / "a.json", 1000), report(tmp_path / "b.json", 700)
    ok = runner.invoke(app, ["guard", str(base), str(base)])
    assert ok.exit_code == 0, ok.output
    assert ok.stderr.strip() == "note: 'rlctl guard' is deprecated; use 'rlctl knee-gate' (same arguments)"
    assert "PASS" in ok.stdout
    bad = runner.invoke(app, ["guard", str(base), str(new)])
    assert isinstance(bad.exception, CheckFailed)
    top = runner.invoke(app, ["--help"])
    assert "knee-gate" in top.output and " guard " not in top.output


@pytest.mark.real  # the installed console script itself
def test_exit_codes_through_the_console_script(tmp_path: Path) -> None:
    base, near, far = (report(tmp_path / f"{n}.json", k) for n, k in (("a", 1000), ("b", 900), ("c", 500)))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RLCTL), "knee-gate", *args], capture_output=True, text=True, timeout=60)

    assert run(str(base), str(near)).returncode == 0
    failed = run(str(base), str(far))
    assert failed.returncode == 1
    assert failed.stderr.startswith("CheckFailed: knee moved down 50.0%")
    missing = run(str(base), str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"ConfigError: {tmp_path / 'nope.json'}: no such file")


def test_knees_from_different_methods_are_not_compared(tmp_path: Path) -> None:
    base = report(tmp_path / "a.json", 1000)  # no knee_method: a report from before the option, Kneedle
    new = report(tmp_path / "b.json", 1000, knee_method="two-segment")
    with pytest.raises(ConfigError, match=r"the kneedle knee and .*b\.json the two-segment knee.*same --knee-method"):
        compare(base, new)
    assert compare(new, report(tmp_path / "c.json", 950, knee_method="two-segment")).passed
