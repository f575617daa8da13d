"""Service profiles (the simulator's calibratable parameters) and host topology."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError
from rlctl.inputs import check_finite, load_yaml_file

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """What a Go service costs to run: the parameters calibration fits.

    The defaults describe a small CPU-bound JSON service: about 0.65 ms of CPU per request
    at base clock, 64 KiB allocated per request, two cores of quota per replica, a P99 of
    about 4 ms at low load and a knee near 2,400 requests/s per replica at GOMAXPROCS =
    quota.
    """

    #: CPU time per request at the base frequency, ms.
    s_cpu_ms: float = 0.5
    #: Memory-bound time per request (scales with NUMA distance and prefetch), ms.
    s_mem_ms: float = 0.15
    #: Squared coefficient of variation of the service time.
    cs2: float = 1.0
    #: Squared coefficient of variation of inter-arrival times.
    ca2: float = 1.0
    #: CPU quota per replica (cores), as a Kubernetes CPU limit sets it.
    cpu_quota_cores: float = 2.0
    #: Cores a replica's node has free for it.
    cores_free: float = 16.0
    #: Scheduler overhead per unit of GOMAXPROCS/quota above 1.
    sched_overhead: float = 0.04
    #: Universal Scalability Law contention coefficient across usable cores.
    usl_sigma: float = 0.02
    #: Time per request inside one global mutex, ms (0: no contention).
    mutex_ms: float = 0.0
    #: Bytes allocated per request.
    alloc_bytes_per_req: float = 65536.0
    #: Fraction of the per-request allocation that goes through the sync.Pool.
    pooled_fraction: float = 0.6
    #: Size of one pooled object, bytes.
    object_bytes: float = 32768.0
    #: Live heap of an idle replica, bytes.
    live_heap_bytes: float = 48.0 * 2**20
    #: GC roots (stacks, globals), bytes.
    roots_bytes: float = 4.0 * 2**20
    #: Fixed CPU cost of a GC cycle, s.
    gc_fixed_cpu_s: float = 0.0005
    #: Mark CPU per byte of scannable heap, s/byte.
    gc_cpu_s_per_byte: float = 1.2e-9
    #: Extra P99 latency from mark assists at full GC duty, ms.
    gc_assist_ms: float = 1.0
    #: Goroutines of an idle replica.
    base_goroutines: float = 12.0
    #: Fraction of requests that call a downstream service.
    downstream_fraction: float = 0.0
    #: Downstream call time without network faults, ms.
    downstream_ms: float = 2.0
    #: Client-to-service round trip, ms, and its standard deviation.
    rtt_ms: float = 0.2
    rtt_std_ms: float = 0.05
    #: Response size, bytes (for bandwidth limits).
    response_bytes: float = 4096.0
    #: Disk IO operations per request (for IO latency faults).
    io_ops_per_req: float = 0.1
    #: Remote/local memory latency ratio (Intel MLC measures 1.3-2.1).
    numa_ratio: float = 1.6
    #: Fraction of memory accesses that go to a remote NUMA node when well placed.
    numa_remote_fraction: float = 0.05
    #: Memory-time penalty with the hardware prefetchers off.
    prefetch_penalty: float = 0.15
    #: Frequencies, GHz.
    f_base_ghz: float = 2.4
    f_turbo_ghz: float = 3.2
    f_throttle_ghz: float = 1.2
    #: Thermal model: ambient, trip point, thermal resistance, time constant, power.
    t_amb_c: float = 25.0
    t_trip_c: float = 95.0
    thermal_r_c_per_w: float = 0.27
    thermal_tau_s: float = 60.0
    p_idle_w: float = 60.0
    p_dyn_w: float = 140.0
    #: Seconds from scale-up until a new replica serves.
    replica_start_s: float = 30.0
    #: Client timeout, ms: requests queued longer fail.
    timeout_ms: float = 1000.0
    #: CFS period, ms.
    cfs_period_ms: float = 100.0

    def replace(self, **changes: Any) -> ServiceProfile:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "profile") -> ServiceProfile:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{source}: unknown profile field(s) {sorted(unknown)}; known: {sorted(names)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, bool):
                raise ConfigError(f"{source}: {key}={value!r} is a boolean; profile values are numbers")
            x = check_finite(value, name=key, source=source)
            # Every parameter is a time, size, rate or count: none is negative, none astronomically large.
            if not 0.0 <= x <= 1e12:
                raise ConfigError(f"{source}: {key}={value!r} is out of range; give a number in 0..1e12")
            values[key] = x
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> ServiceProfile:
        """Read a profile YAML (a mapping under ``profile:``, or a flat mapping)."""
        p = Path(path)
        data = load_yaml_file(p, what="profile")
        if isinstance(data, dict) and "profile" in data:
            data = data["profile"]
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a profile must be a mapping of parameter: number")
        return cls.from_dict(data, source=str(p))


#: Domain-randomisation ranges (multiplicative factors on the profile's value).
RANDOMIZATION: dict[str, tuple[float, float]] = {
    "s_cpu_ms": (0.6, 1.6),
    "s_mem_ms": (0.5, 2.0),
    "cs2": (0.5, 2.0),
    "ca2": (0.7, 1.5),
    "alloc_bytes_per_req": (0.3, 3.0),
    "live_heap_bytes": (0.5, 3.0),
    "gc_cpu_s_per_byte": (0.6, 1.6),
    "usl_sigma": (0.0, 2.5),
    "numa_ratio": (0.85, 1.3),
    "replica_start_s": (0.5, 1.5),
    "thermal_r_c_per_w": (0.85, 1.15),
}


def randomize(profile: ServiceProfile, rng: np.random.Generator, scale: float = 1.0) -> ServiceProfile:
    """A profile with each randomised field multiplied by a log-uniform factor in its range.

    ``scale`` in [0, 1] shrinks the ranges toward 1 (0 = no randomisation).
    """
    changes: dict[str, float] = {}
    for name, (lo, hi) in RANDOMIZATION.items():
        if name == "usl_sigma":
            factor = rng.uniform(lo, hi) if scale > 0 else 1.0
        else:
            factor = float(np.exp(rng.uniform(np.log(lo), np.log(hi)) * scale))
        changes[name] = getattr(profile, name) * factor
    return profile.replace(**changes)


PROFILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ServiceProfile))


def stack_profiles(profiles: list[ServiceProfile]) -> dict[str, Array]:
    """Profiles as a dict of ``(N,)`` arrays, the physics' batched input."""
    return {name: np.array([getattr(p, name) for p in profiles], dtype=np.float64) for name in PROFILE_FIELDS}


@dataclass(frozen=True, slots=True)
class Topology:
    """CPU topology of a host: sockets, NUMA nodes, cores and SMT threads."""

    sockets: int = 2
    numa_nodes: int = 2
    cores: int = 32
    threads_per_core: int = 2
    source: str = "profile"

    @property
    def logical_cpus(self) -> int:
        return self.cores * self.threads_per_core

    @classmethod
    def from_sys(cls, root: str | Path = "/sys") -> Topology:
        """Read this host's topology from ``/sys/devices/system``."""
        base = Path(root) / "devices/system"
        cpus = sorted(p for p in (base / "cpu").glob("cpu[0-9]*") if (p / "topology").is_dir())
        if not cpus:
            n = os.cpu_count() or 1
            return cls(sockets=1, numa_nodes=1, cores=n, threads_per_core=1, source="os.cpu_count (no /sys topology)")
        packages: set[str] = set()
        core_ids: set[tuple[str, str]] = set()
        for cpu in cpus:
            pkg = _read(cpu / "topology/physical_package_id", "0")
            core = _read(cpu / "topology/core_id", cpu.name)
            packages.add(pkg)
            core_ids.add((pkg, core))
        nodes = [p for p in (base / "node").glob("node[0-9]*")] if (base / "node").is_dir() else []
        return cls(
            sockets=max(len(packages), 1),
            numa_nodes=max(len(nodes), 1),
            cores=max(len(core_ids), 1),
            threads_per_core=max(len(cpus) // max(len(core_ids), 1), 1),
            source=str(base),
        )


def _read(path: Path, default: str) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default
