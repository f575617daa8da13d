"""Calibration data: the knob :class:`Setting`, the server's counters over a step
(:class:`ServerStats`), one measured :class:`Point` and the :class:`CalibrationData` a fit reads
(:data:`DATA_SCHEMA`). Part of :mod:`envs.calibrate`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.contract import Knobs
from rlctl.errors import ConfigError

Array = npt.NDArray[np.float64]
NAN = float("nan")

#: JSON schema tag of calibration data and reports.
DATA_SCHEMA = "rlctl.calibration-data/v1"
REPORT_SCHEMA = "rlctl.calibration/v1"
#: Squared coefficient of variation of inter-arrival times per arrival process of the load generator.
ARRIVAL_CA2: dict[str, float] = {"poisson": 1.0, "uniform": 0.0}


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, slots=True, order=True)
class Setting:
    """The runtime knobs of one measured curve (the knobs ``/admin/knobs`` sets)."""

    gomaxprocs: int
    gogc: int
    object_pool_size: int

    @classmethod
    def parse(cls, text: str, *, source: str = "--settings") -> Setting:
        """``"P,GOGC,POOL"``, e.g. ``"2,50,1024"``."""
        try:
            p, g, k = (int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(
                f"{source} {text!r}: want GOMAXPROCS,GOGC,POOL as three integers, e.g. 2,50,1024"
            ) from None
        if p < 1 or g < 1 or k < 0:
            raise ConfigError(f"{source} {text!r}: need GOMAXPROCS >= 1, GOGC >= 1 and POOL >= 0, e.g. 2,50,1024")
        return cls(p, g, k)

    @classmethod
    def parse_list(cls, text: str, *, source: str = "--settings") -> tuple[Setting, ...]:
        """Settings separated by ``;`` or spaces: ``"1,50,0;2,200,1024"``."""
        parts = [p for p in text.replace(";", " ").split() if p]
        if not parts:
            raise ConfigError(f"{source} is empty; give settings like '1,50,0;2,200,1024'")
        return tuple(cls.parse(p, source=source) for p in parts)

    def knobs(self) -> Knobs:
        """Contract knobs of this setting for one replica (turbo and prefetch as the host runs them)."""
        return Knobs(replicas=1, gomaxprocs=self.gomaxprocs, gogc=self.gogc, object_pool_size=self.object_pool_size)

    def admin_body(self) -> dict[str, int]:
        return {"gomaxprocs": self.gomaxprocs, "gogc": self.gogc, "object_pool_size": self.object_pool_size}

    @property
    def label(self) -> str:
        return f"P{self.gomaxprocs}/GOGC{self.gogc}/pool{self.object_pool_size}"

    def __str__(self) -> str:
        return f"{self.gomaxprocs},{self.gogc},{self.object_pool_size}"


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counter increases over a step, from the service's ``/metrics`` (NaN where unknown)."""

    duration_s: float = NAN
    requests: float = NAN
    cpu_s: float = NAN
    gc_cycles: float = NAN
    gc_cpu_s: float = NAN
    alloc_bytes: float = NAN
    live_bytes: float = NAN

    def __add__(self, other: ServerStats) -> ServerStats:
        def add(a: float, b: float) -> float:
            return b if math.isnan(a) else a if math.isnan(b) else a + b

        sums = {f: add(getattr(self, f), getattr(other, f)) for f in _STAT_SUMS}
        live = other.live_bytes if math.isfinite(other.live_bytes) else self.live_bytes
        return ServerStats(**sums, live_bytes=live)


_STAT_SUMS = ("duration_s", "requests", "cpu_s", "gc_cycles", "gc_cpu_s", "alloc_bytes")


@dataclass(frozen=True, slots=True)
class Point:
    """One measured load level of one setting: client latency plus server counters.

    ``p99_ms`` is the median of the per-interval P99s of every repeat of the step (a
    robust "typical P99" on a noisy host); ``overload_s`` is how long a backlog could grow
    before the median interval ended, which the simulator uses past saturation.
    """

    setting: Setting
    qps: float
    p99_ms: float
    p50_ms: float
    error_rate: float = 0.0
    served_qps: float = NAN
    duration_s: float = 2.0
    overload_s: float = 1.25
    repeats: int = 1
    arrivals: str = "poisson"
    role: str = "fit"
    knee_fraction: float | None = None
    p99_intervals_ms: tuple[float, ...] = ()
    server: ServerStats = field(default_factory=ServerStats)
    foreign_cores: float = NAN
    """CPU (cores) other tenants of the host used during the step (busy CPU minus service and load generator)."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["setting"] = dataclasses.asdict(self.setting)
        out["p99_intervals_ms"] = list(self.p99_intervals_ms)
        return _strict_json(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "calibration data") -> Point:
        try:
            values = dict(data)
            values["setting"] = Setting(**values["setting"])
            values["server"] = ServerStats(**{k: _num(v) for k, v in (values.get("server") or {}).items()})
            values["p99_intervals_ms"] = tuple(_num(v) for v in values.get("p99_intervals_ms") or ())
            for key in (
                "qps",
                "p99_ms",
                "p50_ms",
                "error_rate",
                "served_qps",
                "duration_s",
                "overload_s",
                "foreign_cores",
            ):
                if key in values:
                    values[key] = _num(values[key])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: malformed point {data!r} ({exc}); write points with Point.to_dict()"
            ) from None


@dataclass
class CalibrationData:
    """Measured points plus what the simulator needs to reproduce the set-up."""

    points: list[Point]
    cpu_quota_cores: float
    source: dict[str, Any] = field(default_factory=dict)

    def select(self, role: str | None = None, setting: Setting | None = None) -> list[Point]:
        return [
            p for p in self.points if (role is None or p.role == role) and (setting is None or p.setting == setting)
        ]

    def settings(self, role: str | None = None) -> list[Setting]:
        return sorted({p.setting for p in self.select(role)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DATA_SCHEMA,
            "cpu_quota_cores": self.cpu_quota_cores,
            "source": self.source,
            "points": [p.to_dict() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "calibration data") -> CalibrationData:
        if data.get("schema") != DATA_SCHEMA:
            raise ConfigError(f"{source}: schema {data.get('schema')!r} is not {DATA_SCHEMA!r}")
        points = [Point.from_dict(p, source=source) for p in data.get("points", [])]
        return cls(points=points, cpu_quota_cores=float(data["cpu_quota_cores"]), source=dict(data.get("source", {})))

    def merge(self, other: CalibrationData) -> CalibrationData:
        if not math.isclose(self.cpu_quota_cores, other.cpu_quota_cores, rel_tol=0.01):
            raise ConfigError(
                f"cannot fit data from hosts with different CPU quotas together ({self.cpu_quota_cores:g} vs "
                f"{other.cpu_quota_cores:g} cores); calibrate each set-up separately"
            )
        merged = {**self.source, "merged": [*self.source.get("merged", []), other.source]}
        return CalibrationData(self.points + other.points, self.cpu_quota_cores, merged)


def _num(v: Any) -> float:
    return NAN if v is None else float(v)


def _strict_json(value: Any) -> Any:
    """NaN and infinities become None so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def host_cores() -> float:
    """CPUs this process may run on (the affinity mask), the quota when no cgroup limits it."""
    import os

    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)
