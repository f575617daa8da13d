"""The one contract between training and production.

Everything that crosses the line between the simulator/trainer and the live controller
goes through this module, which the simulator, the trainer, the controller and the
policy server all import:

- :class:`TelemetrySample`: one observation window of one service. The simulator emits
  exactly these records and the live collectors emit exactly these records. Units are
  in the field names.
- :class:`Knobs` and :class:`KnobBounds`: what the controller may change, with bounds.
- the action space (:data:`ACTION_NVEC`, :data:`NOOP_ACTION`) and :func:`apply`, the pure,
  clamped transition ``knobs x action -> knobs`` shared by simulator and controller.
- :func:`featurize`: the only way a policy ever sees telemetry.
- :data:`SCHEMA_VERSION` and :data:`SCHEMA_HASH`, written into every policy artifact and
  checked on load, so a policy cannot be fed features it was not trained on.

Arrays are the fast path: a window of samples is a ``(n, len(TELEMETRY_FIELDS))`` float64
array (or ``(batch, n, F)``); knobs are a ``(..., len(KNOB_FIELDS))`` array. The dataclasses
convert to and from these rows.

The package is split by concern: :mod:`rlctl.contract.telemetry` (the sample and its columns),
:mod:`rlctl.contract.knobs` (knobs, bounds, ladders, actions, :func:`apply`) and
:mod:`rlctl.contract.features` (:func:`featurize`); this module holds the schema version and hash
and re-exports every public name, so ``from rlctl.contract import X`` is the one import path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from rlctl.contract.features import FEATURE_HIGH, FEATURE_LOW, FEATURE_NAMES, N_FEATURES, featurize
from rlctl.contract.knobs import (
    ACTION_FIELDS,
    ACTION_NVEC,
    CONN_POOL_LADDER,
    GOGC_LADDER,
    GOMEMLIMIT_LADDER_MIB,
    KNOB_COL,
    KNOB_FIELDS,
    LADDERS,
    NOOP_ACTION,
    OBJECT_POOL_LADDER,
    KnobBounds,
    Knobs,
    RowApplier,
    apply,
    apply_array,
    clamp_array,
    row_applier,
)
from rlctl.contract.telemetry import (
    COL,
    DEFAULT_SLO_P99_MS,
    DEFAULT_WINDOW,
    N_TELEMETRY,
    TELEMETRY_FIELDS,
    FloatArray,
    TelemetrySample,
    window_array,
)

__all__ = [
    "ACTION_FIELDS",
    "ACTION_NVEC",
    "COL",
    "CONN_POOL_LADDER",
    "DEFAULT_SLO_P99_MS",
    "DEFAULT_WINDOW",
    "ENV_VERSION",
    "FEATURE_HIGH",
    "FEATURE_LOW",
    "FEATURE_NAMES",
    "GOGC_LADDER",
    "GOMEMLIMIT_LADDER_MIB",
    "KNOB_COL",
    "KNOB_FIELDS",
    "LADDERS",
    "NOOP_ACTION",
    "N_FEATURES",
    "N_TELEMETRY",
    "OBJECT_POOL_LADDER",
    "SCHEMA_HASH",
    "SCHEMA_VERSION",
    "TELEMETRY_FIELDS",
    "FeatureSpec",
    "FloatArray",
    "KnobBounds",
    "Knobs",
    "RowApplier",
    "TelemetrySample",
    "apply",
    "apply_array",
    "clamp_array",
    "featurize",
    "row_applier",
    "schema_description",
    "window_array",
]

SCHEMA_VERSION = "1.0"

#: Version of the simulator's dynamics (:mod:`envs.go_service`) a policy was trained in. It lives
#: here, not in :mod:`envs`, so the artifact loader can check it without importing the simulator;
#: bump it when the simulator changes in a way that invalidates trained policies.
ENV_VERSION = "0"


# ------------------------------------------------------------------------ schema hash


def schema_description() -> dict[str, Any]:
    """Everything a trained policy depends on, in one JSON-able dict."""
    return {
        "version": SCHEMA_VERSION,
        "telemetry_fields": list(TELEMETRY_FIELDS),
        "knob_fields": list(KNOB_FIELDS),
        "ladders": {k: list(v) for k, v in LADDERS.items()},
        "action_nvec": list(ACTION_NVEC),
        "noop_action": list(NOOP_ACTION),
        "feature_names": list(FEATURE_NAMES),
        "feature_range": [FEATURE_LOW, FEATURE_HIGH],
        "window": DEFAULT_WINDOW,
    }


SCHEMA_HASH: str = hashlib.sha256(json.dumps(schema_description(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How a policy's features were computed, stored in its artifact manifest."""

    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    window: int = DEFAULT_WINDOW
    schema_hash: str = field(default=SCHEMA_HASH)
