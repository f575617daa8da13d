"""The machine a figure was measured on: CPU model, count and load, for every results JSON.

The CPU model changes between hosts of the same name, so every benchmark writes it next to
its figures; this is the one place that reads it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cpu_model() -> str:
    """``/proc/cpuinfo``'s first ``model name`` (``"unknown"`` where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to hundredths."""
    return [round(x, 2) for x in os.getloadavg()]
