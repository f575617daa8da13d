"""What one controller's run of a scenario produced, whatever the backend: the common record.

Every backend (sim, local, k8s) returns a :class:`RunRecord`; :mod:`chaos.runner` scores
records and writes one report shape for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from chaos.spec import FaultWindow
from rlctl.contract import TelemetrySample

FloatArray = npt.NDArray[np.float64]

#: Time series every record carries, one value per ``dt_s`` interval ending at ``t_s``.
SERIES_KEYS: tuple[str, ...] = (
    "t_s", "dt_s", "offered_qps", "p50_ms", "p99_ms", "error_rate", "replicas", "gomaxprocs", "gogc",
)  # fmt: skip


@dataclass
class RunRecord:
    """One controller on one scenario on one backend.

    ``series`` holds :data:`SERIES_KEYS` (``p99_ms`` is the client-side P99 of the interval,
    ``replicas`` the replicas that cost money in it: running, frozen or starting).
    ``telemetry`` is what the controller saw, one contract sample per control interval.
    ``actions`` lists every knob the controller changed: ``{"t_s", "knob", "from", "to"}``.
    ``injections`` lists what each fault window did (planned and actual times, targets).
    """

    controller: str
    backend: str
    series: dict[str, FloatArray]
    interval_s: float
    telemetry: list[TelemetrySample] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    injections: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    @staticmethod
    def empty_series() -> dict[str, list[float]]:
        return {k: [] for k in SERIES_KEYS}

    @staticmethod
    def to_arrays(series: dict[str, list[float]]) -> dict[str, FloatArray]:
        return {k: np.asarray(series.get(k, []), dtype=np.float64) for k in SERIES_KEYS}


def fault_label(window: FaultWindow, index: int) -> str:
    """A fault window's name in reports: the fault's ``name``, else ``<kind>#<index in the scenario's windows>``."""
    return window.spec.name or f"{window.kind.value}#{index}"
