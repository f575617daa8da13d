"""The machine a figure was measured on: CPU model, load and busy CPU time, for every results JSON.

The CPU model changes between hosts of the same name, so every benchmark writes it next to
its figures; this is the one place that reads it.
"""

from __future__ import annotations

import contextlib
import os
import resource
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


def _busy_s(fields: list[str]) -> float:
    ticks = [int(v) for v in fields]
    return (sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


def host_busy_s() -> float:
    """CPU seconds the whole host has been busy (``/proc/stat``: all but idle and iowait); NaN without it."""
    try:
        with open("/proc/stat") as f:
            return _busy_s(f.readline().split()[1:])
    except OSError:
        return float("nan")


def cpu_busy_s() -> dict[int, float]:
    """Busy seconds of every CPU so far (``/proc/stat``: all but idle and iowait)."""
    out: dict[int, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = _busy_s(fields)
    return out


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
