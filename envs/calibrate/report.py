"""The calibration's outputs: the JSON report (:func:`calibration_report`) and the profile YAML
(:func:`profile_yaml`) that ``ServiceProfile.load`` reads. Part of :mod:`envs.calibrate`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from envs.calibrate.data import (
    REPORT_SCHEMA,
    CalibrationData,
    _strict_json,
)
from envs.calibrate.fit import (
    FitResult,
)
from envs.calibrate.scoring import (
    holdout_report,
    knee_report,
)

# ------------------------------------------------------------------------------ outputs


def calibration_report(
    result: FitResult,
    data: CalibrationData,
    *,
    slo_p99_ms: float,
) -> dict[str, Any]:
    """The JSON report: fit, in-sample knees, holdout scores and the measured data."""
    return _strict_json(
        {
            "schema": REPORT_SCHEMA,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": data.source,
            "slo_p99_ms": slo_p99_ms,
            "fit": result.to_dict(),
            "fit_knees": knee_report(result.profile, data, "fit", slo_p99_ms=slo_p99_ms),
            "holdout": holdout_report(result.profile, data, slo_p99_ms=slo_p99_ms),
            "data": data.to_dict(),
        }
    )


def profile_yaml(
    result: FitResult, *, holdout: dict[str, Any] | None = None, source: dict[str, Any] | None = None
) -> str:
    """The profile as YAML ``ServiceProfile.load`` reads: ``profile:`` plus ``fit:`` quality."""
    import yaml

    q = result.quality
    doc: dict[str, Any] = {
        "profile": {k: _round(v) for k, v in result.profile.to_dict().items()},
        "fit": {
            "rmse_log_p99": _round(q["rmse_log_p99"]),
            "median_abs_rel_error_p99": _round(q["median_abs_rel_error_p99"]),
            "n_points": q["n_points"],
            "settings": q["settings"],
            "fitted": sorted(result.fitted),
            "measured_directly": sorted(result.direct),
        },
    }
    if holdout:
        doc["fit"]["holdout"] = {
            "settings": holdout.get("settings"),
            "p99_median_abs_rel_error": _round(holdout.get("p99_median_abs_rel_error")),
            "knee_rel_error": _round(holdout.get("knee_rel_error")),
        }
    if source:
        doc["testbed"] = _strict_json(source)
    header = (
        "# rlctl calibrated ServiceProfile (envs.calibrate). Load with ServiceProfile.load(path);\n"
        "# only the `profile:` mapping is read, `fit:` and `testbed:` document where it came from.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def _round(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v != 0:
        return float(f"{v:.6g}")
    return v


def write_text_atomic(path: str | Path, text: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
