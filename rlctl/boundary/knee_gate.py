"""``rlctl knee-gate``: fail CI when a change moved the service's knee down.

Compares the ``knee_qps`` of two ``rlctl probe`` reports. The relative shift is
``(new - base) / base``; a shift below ``-max_shift`` (the knee moved down by more than
the bound, 15 % by default) fails with :class:`~rlctl.errors.CheckFailed` (exit 1). An
upward move never fails: a faster service is not a regression. Reports that cannot be
read, are not JSON, carry no knee, or whose knees come from different ``--knee-method`` options
are bad input (:class:`~rlctl.errors.ConfigError`, exit 2), named with the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlctl.errors import ConfigError

DEFAULT_MAX_SHIFT = 0.15

#: Figures shown side by side in the comparison (key, label); only knee_qps is judged.
COMPARED: tuple[tuple[str, str], ...] = (
    ("knee_qps", "knee ({method}), qps"),
    ("knee_qps_second_method", "knee (cross-check), qps"),
    ("max_qps_at_slo", "max qps inside SLO"),
    ("stopped_at_qps", "ramp stopped at, qps"),
)


@dataclass(frozen=True)
class KneeGateResult:
    """The verdict and the numbers behind it."""

    base_path: str
    new_path: str
    base_knee: float
    new_knee: float
    shift: float
    max_shift: float
    rows: tuple[tuple[str, float | None, float | None], ...]

    @property
    def passed(self) -> bool:
        return self.shift >= -self.max_shift

    def message(self) -> str:
        direction = "down" if self.shift < 0 else "up"
        verdict = "more than" if not self.passed else "within"
        return (
            f"knee moved {direction} {abs(self.shift):.1%} ({self.base_knee:.0f} -> {self.new_knee:.0f} qps), "
            f"{verdict} the {self.max_shift:.0%} bound ({self.base_path} -> {self.new_path})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "base": self.base_path,
            "new": self.new_path,
            "base_knee_qps": self.base_knee,
            "new_knee_qps": self.new_knee,
            "shift": self.shift,
            "max_shift": self.max_shift,
        }


def load_report(path: str | Path) -> dict[str, Any]:
    """A probe report with a positive ``knee_qps``; :class:`ConfigError` naming the fix otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file; write it with `rlctl probe URL --json {p}`") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror or exc})") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{p}: not JSON ({exc.msg} at line {exc.lineno}); pass the file `rlctl probe --json` wrote"
        ) from exc
    if not isinstance(report, dict):
        raise ConfigError(f"{p}: a JSON {type(report).__name__}, expected the object `rlctl probe --json` writes")
    knee = report.get("knee_qps")
    if knee is None:
        raise ConfigError(
            f"{p}: no knee_qps (the probe found no knee, or this is not a probe report); "
            "re-run `rlctl probe` with a ramp that reaches the boundary (raise --max-qps)"
        )
    if isinstance(knee, bool) or not isinstance(knee, int | float) or not math.isfinite(knee) or knee <= 0:
        raise ConfigError(f"{p}: knee_qps={knee!r} is not a positive number of requests per second")
    return report


def compare(base_path: str | Path, new_path: str | Path, *, max_shift: float = DEFAULT_MAX_SHIFT) -> KneeGateResult:
    """Compare two probe reports; the result's :attr:`KneeGateResult.passed` is the verdict."""
    if not (math.isfinite(max_shift) and 0 <= max_shift < 1):
        raise ConfigError(f"--max-shift {max_shift!r} must be a fraction in [0, 1), e.g. 0.15 for 15 %")
    base, new = load_report(base_path), load_report(new_path)
    # Reports written before --knee-method existed carry Kneedle's knee.
    methods = [r.get("knee_method", "kneedle") for r in (base, new)]
    if methods[0] != methods[1]:
        raise ConfigError(
            f"{base_path} reports the {methods[0]} knee and {new_path} the {methods[1]} knee: two methods, "
            f"not a shift; probe both with the same --knee-method"
        )
    b, n = float(base["knee_qps"]), float(new["knee_qps"])
    rows = tuple((label.format(method=methods[0]), _num(base.get(key)), _num(new.get(key))) for key, label in COMPARED)
    return KneeGateResult(str(base_path), str(new_path), b, n, (n - b) / b, max_shift, rows)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def render_table(result: KneeGateResult) -> Any:
    """A Rich table of the two reports side by side with the relative change."""
    from rich.table import Table

    table = Table(title="rlctl guard: performance boundary", title_justify="left")
    table.add_column("figure")
    table.add_column("base", justify="right")
    table.add_column("new", justify="right")
    table.add_column("change", justify="right")
    for label, b, n in result.rows:
        change = f"{(n - b) / b:+.1%}" if b and n is not None else "n/a"
        table.add_row(label, _cell(b), _cell(n), change)
    verdict = "[green]PASS[/green]" if result.passed else "[bold red]FAIL[/bold red]"
    table.caption = f"{verdict}: {result.message()}"
    return table


def _cell(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"
