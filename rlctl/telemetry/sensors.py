"""Host sensors: topology, NUMA, temperatures, CPU frequency, turbo and prefetcher state.

Every sensor returns a :class:`Reading`: a value, or ``None`` with the reason it is
unavailable. Nothing is estimated or defaulted; a host without a sensor says so.

Sources:

- topology and NUMA: ``/sys/devices/system/cpu`` and ``/sys/devices/system/node``
  (``numastat`` counters for the remote-access fraction);
- temperature: ``/sys/class/thermal/thermal_zone*/temp`` and
  ``/sys/class/hwmon/hwmon*/temp*_input`` (millidegrees C), and the BMC through
  ``ipmitool sdr type temperature``;
- frequency: ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`` (kHz), else the
  kernel's ``cpu MHz`` in ``/proc/cpuinfo``;
- turbo and hardware prefetchers: model-specific registers through ``/dev/cpu/N/msr``
  (the ``msr`` kernel module; reading needs root).

About the prefetch register: the original plan named MSR 0x1A0 as "the prefetch
control". On Intel parts 0x1A0 is ``IA32_MISC_ENABLE`` (bit 38 disables turbo; its
prefetch bits are only on old Core 2 parts), and the four prefetchers of every Intel core
since Nehalem are controlled by ``MSR_MISC_FEATURE_CONTROL`` at **0x1A4** (bits 0-3 = L2
hardware prefetcher, L2 adjacent cache line, DCU, DCU IP; a set bit *disables* it). This
module reads and writes the real registers: 0x1A0 for turbo, 0x1A4 for the prefetchers.
AMD parts use different registers, so the MSR sensors refuse non-Intel CPUs.

Writers (:func:`set_turbo`, :func:`set_prefetchers`) change hardware state for every
process on the host; they take an explicit ``allow_writes`` and refuse without it.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlctl.errors import ActuatorError, ConfigError

logger = logging.getLogger(__name__)

#: IA32_MISC_ENABLE; bit 38 set = Intel Turbo Boost disabled.
MSR_IA32_MISC_ENABLE = 0x1A0
TURBO_DISABLE_BIT = 38
#: MSR_MISC_FEATURE_CONTROL; bits 0-3 set = the prefetcher is disabled.
MSR_MISC_FEATURE_CONTROL = 0x1A4
PREFETCHER_BITS: dict[str, int] = {
    "l2_hardware": 0,
    "l2_adjacent_line": 1,
    "dcu": 2,
    "dcu_ip": 3,
}
_PREFETCH_MASK = sum(1 << b for b in PREFETCHER_BITS.values())


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor value, or the reason there is none.

    Exactly one of ``value`` and ``unavailable`` is set; ``source`` says where the value
    came from (a path or a command).
    """

    value: float | None
    unavailable: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if (self.value is None) == (self.unavailable is None):
            raise ValueError("a Reading has either a value or an unavailable reason, not both or neither")

    @classmethod
    def of(cls, value: float, source: str = "") -> Reading:
        return cls(float(value), None, source)

    @classmethod
    def missing(cls, reason: str, source: str = "") -> Reading:
        return cls(None, reason, source)

    @property
    def ok(self) -> bool:
        return self.value is not None

    def or_nan(self) -> float:
        """The value, or NaN for telemetry fields (which are NaN where unreadable)."""
        return math.nan if self.value is None else self.value


def _read_text(path: str | Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def parse_cpulist(text: str) -> list[int]:
    """``0-3,8,10-11`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


# ------------------------------------------------------------------------------ topology


@dataclass(frozen=True)
class Topology:
    """CPU and NUMA layout of the host as the kernel reports it in ``/sys``."""

    cpus: tuple[int, ...]
    sockets: int
    cores: int
    threads_per_core: int
    numa_nodes: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def from_sys(cls, sys_root: str | Path = "/sys") -> Topology:
        """Read the online CPUs, their packages and cores, and the NUMA nodes."""
        base = Path(sys_root) / "devices/system/cpu"
        try:
            cpus = parse_cpulist(_read_text(base / "online"))
        except OSError as exc:
            raise ConfigError(f"cannot read {base / 'online'}: {exc}; is {sys_root} a sysfs mount?") from exc
        packages: set[str] = set()
        cores: set[tuple[str, str]] = set()
        for cpu in cpus:
            topo = base / f"cpu{cpu}/topology"
            try:
                pkg = _read_text(topo / "physical_package_id").strip()
                core = _read_text(topo / "core_id").strip()
            except OSError:
                pkg, core = "?", str(cpu)
            packages.add(pkg)
            cores.add((pkg, core))
        nodes: dict[int, tuple[int, ...]] = {}
        for node_dir in sorted(glob.glob(str(Path(sys_root) / "devices/system/node/node[0-9]*"))):
            node = int(Path(node_dir).name[4:])
            try:
                nodes[node] = tuple(parse_cpulist(_read_text(Path(node_dir) / "cpulist")))
            except OSError:
                nodes[node] = ()
        return cls(
            cpus=tuple(cpus),
            sockets=len(packages),
            cores=len(cores),
            threads_per_core=max(1, len(cpus) // max(1, len(cores))),
            numa_nodes=nodes,
        )


def read_numastat(sys_root: str | Path = "/sys") -> dict[int, dict[str, int]]:
    """Per-node ``numastat`` counters (``local_node``, ``other_node``, ``numa_hit``, ...)."""
    out: dict[int, dict[str, int]] = {}
    for path in sorted(glob.glob(str(Path(sys_root) / "devices/system/node/node[0-9]*/numastat"))):
        node = int(Path(path).parent.name[4:])
        counters: dict[str, int] = {}
        for line in _read_text(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counters[parts[0]] = int(parts[1])
        out[node] = counters
    return out


class NumaRemoteSensor:
    """Fraction of page allocations that landed on a remote node since the last read.

    ``other_node / (local_node + other_node)`` over the ``numastat`` counter deltas of
    all nodes. The first read has no window and reports the fraction since boot.
    """

    def __init__(self, sys_root: str | Path = "/sys") -> None:
        self.sys_root = sys_root
        self._last: tuple[int, int] | None = None

    def read(self) -> Reading:
        source = f"{self.sys_root}/devices/system/node/node*/numastat"
        try:
            stats = read_numastat(self.sys_root)
        except OSError as exc:
            return Reading.missing(f"cannot read numastat: {exc}", source)
        if not stats:
            return Reading.missing("no NUMA nodes in sysfs (kernel without CONFIG_NUMA?)", source)
        try:
            local = sum(s["local_node"] for s in stats.values())
            remote = sum(s["other_node"] for s in stats.values())
        except KeyError as exc:
            return Reading.missing(f"numastat has no {exc} counter", source)
        prev, self._last = self._last, (local, remote)
        if prev is not None and local >= prev[0] and remote >= prev[1]:
            local, remote = local - prev[0], remote - prev[1]
        if local + remote == 0:
            return Reading.missing("no page allocations in the window", source)
        return Reading.of(remote / (local + remote), source)


# --------------------------------------------------------------------------- temperature

#: Thermal zone types and hwmon chip names that measure the CPU package or cores.
_CPU_THERMAL_TYPES = ("x86_pkg_temp", "cpu", "soc", "tcpu", "coretemp", "k10temp", "zenpower", "cpu_thermal")


def _is_cpu_sensor(name: str) -> bool:
    lowered = name.lower()
    return any(t in lowered for t in _CPU_THERMAL_TYPES)


def thermal_readings(sys_root: str | Path = "/sys") -> dict[str, Reading]:
    """Every thermal zone and hwmon temperature, in degrees C, keyed by ``kind:name``."""
    out: dict[str, Reading] = {}
    root = Path(sys_root) / "class"
    for zone in sorted(glob.glob(str(root / "thermal/thermal_zone*"))):
        try:
            kind = _read_text(Path(zone) / "type").strip()
        except OSError:
            kind = Path(zone).name
        out[f"thermal:{Path(zone).name}:{kind}"] = _millidegrees(Path(zone) / "temp")
    for chip in sorted(glob.glob(str(root / "hwmon/hwmon*"))):
        try:
            name = _read_text(Path(chip) / "name").strip()
        except OSError:
            name = Path(chip).name
        for temp in sorted(glob.glob(str(Path(chip) / "temp*_input"))):
            label_path = Path(temp.replace("_input", "_label"))
            label = _read_text(label_path).strip() if label_path.exists() else Path(temp).name
            out[f"hwmon:{Path(chip).name}:{name}:{label}"] = _millidegrees(Path(temp))
    return out


def _millidegrees(path: Path) -> Reading:
    try:
        raw = _read_text(path).strip()
        return Reading.of(int(raw) / 1000.0, str(path))
    except OSError as exc:
        # A zone whose driver has no reading returns EIO or ENODATA on read.
        return Reading.missing(f"read failed: {exc.strerror or exc}", str(path))
    except ValueError:
        return Reading.missing(f"not an integer: {raw!r}", str(path))


def cpu_temperature(sys_root: str | Path = "/sys") -> Reading:
    """The hottest CPU temperature in sysfs (CPU zones/chips only when any exist)."""
    readings = thermal_readings(sys_root)
    if not readings:
        return Reading.missing(f"no thermal zones or hwmon sensors under {sys_root}/class (a VM or container?)")
    cpu = {k: r for k, r in readings.items() if _is_cpu_sensor(k)}
    usable = {k: r for k, r in (cpu or readings).items() if r.value is not None}
    if not usable:
        reasons = "; ".join(f"{k}: {r.unavailable}" for k, r in readings.items())
        return Reading.missing(f"no temperature sensor gave a reading ({reasons})")
    key = max(usable, key=lambda k: usable[k].value or -math.inf)
    return Reading.of(usable[key].or_nan(), usable[key].source)


# ---------------------------------------------------------------------------- IPMI


@dataclass(frozen=True, slots=True)
class IpmiSensor:
    """One line of ``ipmitool sdr`` output."""

    name: str
    sensor_id: str
    status: str
    entity: str
    reading: Reading


#: Sensor states whose reading column holds no value (no sensor, not available, disabled).
_IPMI_NO_READING = {"ns", "na", "disabled"}
_DEGREES = re.compile(r"^(-?\d+(?:\.\d+)?)\s*degrees\s*C$", re.IGNORECASE)


def parse_ipmitool_sdr(text: str) -> list[IpmiSensor]:
    """Parse ``ipmitool sdr type temperature`` (or ``sdr elist``) output.

    Lines are ``name | id | status | entity | reading``, e.g.
    ``CPU1 Temp | 30h | ok | 3.1 | 45 degrees C``. States ``ns``, ``na`` and ``disabled``
    (and readings like ``No Reading`` or ``Disabled``) give an unavailable reading;
    ``nc``/``cr``/``nr`` (threshold crossed) keep their value, which is real.
    """
    sensors: list[IpmiSensor] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        name, sensor_id, status, entity, raw = parts[0], parts[1], parts[2].lower(), parts[3], parts[-1]
        source = f"ipmitool sdr: {name} ({entity})"
        match = _DEGREES.match(raw)
        if status in _IPMI_NO_READING:
            reading = Reading.missing(f"sensor state {status!r}: {raw or 'no reading'}", source)
        elif match:
            reading = Reading.of(float(match.group(1)), source)
        else:
            reading = Reading.missing(f"no temperature in {raw!r}", source)
        sensors.append(IpmiSensor(name, sensor_id, status, entity, reading))
    return sensors


def ipmi_temperatures(ipmitool: str = "ipmitool", timeout_s: float = 10.0) -> tuple[list[IpmiSensor], Reading]:
    """Run ``ipmitool sdr type temperature``; the sensors and the hottest CPU reading.

    The second element is unavailable (with ipmitool's own error) when ipmitool is
    missing, there is no BMC (``Could not open device at /dev/ipmi0``), or no CPU sensor
    reads.
    """
    source = f"{ipmitool} sdr type temperature"
    exe = shutil.which(ipmitool)
    if exe is None:
        return [], Reading.missing(f"{ipmitool} not found on PATH (apt-get install ipmitool)", source)
    try:
        proc = subprocess.run(
            [exe, "sdr", "type", "temperature"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return [], Reading.missing(f"timed out after {timeout_s:g}s (BMC not answering)", source)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return [], Reading.missing(f"exit {proc.returncode}: {err[-1] if err else 'no output'}", source)
    sensors = parse_ipmitool_sdr(proc.stdout)
    return sensors, hottest_cpu(sensors, source)


#: Sensors under the processor entity that measure something else (regulators, memory).
_NOT_CPU_DIE = re.compile(r"VR|VRD|VRM|VDDQ|MEM|DIMM", re.IGNORECASE)


def is_cpu_sensor(sensor: IpmiSensor) -> bool:
    """A processor temperature: IPMI entity ID 3 (processor, as in ``3.1``), or a name with
    ``CPU`` when the entity is not numeric, minus voltage-regulator and memory sensors."""
    if _NOT_CPU_DIE.search(sensor.name):
        return False
    entity_id = sensor.entity.split(".")[0]
    if entity_id.isdigit():
        return int(entity_id) == 3
    return "cpu" in sensor.name.lower()


def hottest_cpu(sensors: Iterable[IpmiSensor], source: str = "ipmitool") -> Reading:
    """The highest processor temperature among IPMI sensors (see :func:`is_cpu_sensor`)."""
    sensors = list(sensors)
    cpu = [s for s in sensors if is_cpu_sensor(s)]
    readable = [s for s in cpu if s.reading.value is not None]
    if not readable:
        what = "no processor temperature sensor" if not cpu else "no processor sensor has a reading"
        return Reading.missing(f"{what} among {len(sensors)} IPMI sensors", source)
    best = max(readable, key=lambda s: s.reading.or_nan())
    return best.reading


# ---------------------------------------------------------------------------- frequency


def cpu_frequency_ghz(sys_root: str | Path = "/sys", cpuinfo: str | Path = "/proc/cpuinfo") -> Reading:
    """Mean current CPU frequency in GHz (cpufreq, else the kernel's ``cpu MHz``)."""
    paths = sorted(glob.glob(str(Path(sys_root) / "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")))
    khz: list[float] = []
    for p in paths:
        try:
            khz.append(float(_read_text(p).strip()))
        except (OSError, ValueError):
            continue
    if khz:
        return Reading.of(sum(khz) / len(khz) / 1e6, f"{sys_root}/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")
    try:
        mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", _read_text(cpuinfo), re.MULTILINE)]
    except OSError as exc:
        return Reading.missing(f"no cpufreq in sysfs and {cpuinfo} unreadable: {exc}")
    if not mhz:
        return Reading.missing(f"no cpufreq in sysfs and no 'cpu MHz' in {cpuinfo}")
    return Reading.of(sum(mhz) / len(mhz) / 1e3, str(cpuinfo))


# ---------------------------------------------------------------------------- MSRs


def cpu_vendor(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """``GenuineIntel``, ``AuthenticAMD``, ... or None when unknown."""
    try:
        m = re.search(r"^vendor_id\s*:\s*(\S+)", _read_text(cpuinfo), re.MULTILINE)
    except OSError:
        return None
    return m.group(1) if m else None


def _msr_path(cpu: int, dev_root: str | Path) -> Path:
    return Path(dev_root) / str(cpu) / "msr"


def read_msr(cpu: int, register: int, *, dev_root: str | Path = "/dev/cpu") -> int:
    """The 64-bit value of MSR ``register`` on ``cpu`` (``pread`` of 8 bytes at that offset).

    Raises ``OSError`` as the kernel reports it: ENOENT without the ``msr`` module,
    EACCES without root, EIO for a register the CPU does not implement.
    """
    fd = os.open(_msr_path(cpu, dev_root), os.O_RDONLY)
    try:
        data = os.pread(fd, 8, register)
    finally:
        os.close(fd)
    if len(data) != 8:
        raise OSError(f"short read of MSR {register:#x} on cpu {cpu}: {len(data)} bytes")
    value: int = struct.unpack("<Q", data)[0]
    return value


def write_msr(cpu: int, register: int, value: int, *, dev_root: str | Path = "/dev/cpu") -> None:
    """Write MSR ``register`` on ``cpu``; callers go through the guarded setters."""
    fd = os.open(_msr_path(cpu, dev_root), os.O_WRONLY)
    try:
        written = os.pwrite(fd, struct.pack("<Q", value), register)
    finally:
        os.close(fd)
    if written != 8:
        raise OSError(f"short write of MSR {register:#x} on cpu {cpu}: {written} bytes")


def _msr_unavailable(cpu: int, register: int, dev_root: str | Path, vendor: str | None) -> Reading | None:
    source = f"{_msr_path(cpu, dev_root)}@{register:#x}"
    if vendor != "GenuineIntel":
        return Reading.missing(
            f"MSR {register:#x} is Intel-specific and this CPU is {vendor or 'of unknown vendor'}", source
        )
    if not _msr_path(cpu, dev_root).exists():
        return Reading.missing(f"{_msr_path(cpu, dev_root)} does not exist (modprobe msr, as root)", source)
    return None


def _read_msr_reading(cpu: int, register: int, dev_root: str | Path, vendor: str | None) -> tuple[int | None, Reading]:
    missing = _msr_unavailable(cpu, register, dev_root, vendor)
    if missing is not None:
        return None, missing
    source = f"{_msr_path(cpu, dev_root)}@{register:#x}"
    try:
        return read_msr(cpu, register, dev_root=dev_root), Reading.of(0.0, source)
    except OSError as exc:
        return None, Reading.missing(f"read failed: {exc.strerror or exc}", source)


def turbo_enabled(cpu: int = 0, *, dev_root: str | Path = "/dev/cpu", vendor: str | None = None) -> Reading:
    """1.0 when Turbo Boost is enabled on ``cpu`` (IA32_MISC_ENABLE 0x1A0 bit 38 clear), else 0.0."""
    vendor = cpu_vendor() if vendor is None else vendor
    value, reading = _read_msr_reading(cpu, MSR_IA32_MISC_ENABLE, dev_root, vendor)
    if value is None:
        return reading
    return Reading.of(0.0 if value >> TURBO_DISABLE_BIT & 1 else 1.0, reading.source)


def prefetchers(cpu: int = 0, *, dev_root: str | Path = "/dev/cpu", vendor: str | None = None) -> dict[str, Reading]:
    """Each of the four Intel prefetchers on ``cpu``: 1.0 enabled, 0.0 disabled (MSR 0x1A4)."""
    vendor = cpu_vendor() if vendor is None else vendor
    value, reading = _read_msr_reading(cpu, MSR_MISC_FEATURE_CONTROL, dev_root, vendor)
    if value is None:
        return dict.fromkeys(PREFETCHER_BITS, reading)
    return {name: Reading.of(0.0 if value >> bit & 1 else 1.0, reading.source) for name, bit in PREFETCHER_BITS.items()}


def prefetch_enabled(cpu: int = 0, *, dev_root: str | Path = "/dev/cpu", vendor: str | None = None) -> Reading:
    """Fraction of the four prefetchers enabled on ``cpu`` (1.0 = all on, the contract's ``prefetch_on``)."""
    states = prefetchers(cpu, dev_root=dev_root, vendor=vendor)
    first = next(iter(states.values()))
    if first.value is None:
        return first
    return Reading.of(sum(r.or_nan() for r in states.values()) / len(states), first.source)


def _require_writes(allow_writes: bool, what: str) -> None:
    if not allow_writes:
        raise ConfigError(
            f"refusing to {what}: it changes hardware state for every process on this host; "
            "pass allow_writes=True (the CLI's --allow-msr-writes) to do it on purpose"
        )


def _online_cpus(dev_root: str | Path) -> list[int]:
    return sorted(int(p.name) for p in Path(dev_root).iterdir() if p.name.isdigit())


def _update_msr(cpus: Iterable[int] | None, register: int, mask: int, bits: int, dev_root: str | Path) -> list[int]:
    targets = list(cpus) if cpus is not None else _online_cpus(dev_root)
    if not targets:
        raise ActuatorError(f"no CPUs under {dev_root}: load the msr module (modprobe msr) as root")
    for cpu in targets:
        try:
            old = read_msr(cpu, register, dev_root=dev_root)
            write_msr(cpu, register, (old & ~mask) | (bits & mask), dev_root=dev_root)
        except OSError as exc:
            raise ActuatorError(
                f"MSR {register:#x} on cpu {cpu} via {_msr_path(cpu, dev_root)}: {exc.strerror or exc}; "
                "writing MSRs needs root and the msr module (modprobe msr)"
            ) from exc
    return targets


def set_turbo(
    enabled: bool,
    *,
    allow_writes: bool,
    cpus: Iterable[int] | None = None,
    dev_root: str | Path = "/dev/cpu",
    vendor: str | None = None,
) -> list[int]:
    """Enable or disable Turbo Boost (IA32_MISC_ENABLE 0x1A0 bit 38) on ``cpus`` (default all).

    Read-modify-write: only bit 38 changes. Returns the CPUs written.
    """
    _require_writes(allow_writes, "change turbo")
    _require_intel(vendor)
    bit = 1 << TURBO_DISABLE_BIT
    return _update_msr(cpus, MSR_IA32_MISC_ENABLE, bit, 0 if enabled else bit, dev_root)


def set_prefetchers(
    enabled: bool | Mapping[str, bool],
    *,
    allow_writes: bool,
    cpus: Iterable[int] | None = None,
    dev_root: str | Path = "/dev/cpu",
    vendor: str | None = None,
) -> list[int]:
    """Enable or disable the Intel prefetchers (MSR_MISC_FEATURE_CONTROL 0x1A4 bits 0-3).

    ``enabled`` is one switch for all four, or a mapping from :data:`PREFETCHER_BITS`
    names to switches (names not given keep their state). Returns the CPUs written.
    """
    _require_writes(allow_writes, "change the hardware prefetchers")
    _require_intel(vendor)
    wanted = dict.fromkeys(PREFETCHER_BITS, enabled) if isinstance(enabled, bool) else dict(enabled)
    unknown = set(wanted) - set(PREFETCHER_BITS)
    if unknown:
        raise ConfigError(f"unknown prefetcher(s) {sorted(unknown)}; choose from {list(PREFETCHER_BITS)}")
    mask = sum(1 << PREFETCHER_BITS[n] for n in wanted)
    disable_bits = sum(1 << PREFETCHER_BITS[n] for n, on in wanted.items() if not on)
    return _update_msr(cpus, MSR_MISC_FEATURE_CONTROL, mask, disable_bits, dev_root)


def _require_intel(vendor: str | None) -> None:
    vendor = cpu_vendor() if vendor is None else vendor
    if vendor != "GenuineIntel":
        raise ActuatorError(
            f"turbo/prefetch MSRs 0x1A0/0x1A4 are Intel registers and this CPU is {vendor or 'unknown'}; "
            "leave the turbo and prefetch knobs out of KnobBounds.allow on this host"
        )


# ---------------------------------------------------------------------------- all together


class HostSensors:
    """The host fields of a :class:`~rlctl.contract.TelemetrySample`, read together.

    :meth:`fields` returns ``cpu_temp_c``, ``cpu_freq_ghz``, ``numa_remote_fraction``,
    ``turbo_on`` and ``prefetch_on`` (NaN where unavailable) and keeps the last readings,
    with their reasons, in :attr:`last`. Pass ``ipmitool=None`` to skip the BMC (it can
    take seconds to time out).
    """

    def __init__(
        self,
        *,
        sys_root: str | Path = "/sys",
        dev_root: str | Path = "/dev/cpu",
        cpuinfo: str | Path = "/proc/cpuinfo",
        ipmitool: str | None = None,
    ) -> None:
        self.sys_root, self.dev_root, self.cpuinfo, self.ipmitool = sys_root, dev_root, cpuinfo, ipmitool
        self.numa = NumaRemoteSensor(sys_root)
        self.vendor = cpu_vendor(cpuinfo)
        self.last: dict[str, Reading] = {}

    def read(self) -> dict[str, Reading]:
        temp = cpu_temperature(self.sys_root)
        if temp.value is None and self.ipmitool:
            _, ipmi = ipmi_temperatures(self.ipmitool)
            if ipmi.value is not None:
                temp = ipmi
            else:
                temp = Reading.missing(f"{temp.unavailable}; IPMI: {ipmi.unavailable}", temp.source)
        self.last = {
            "cpu_temp_c": temp,
            "cpu_freq_ghz": cpu_frequency_ghz(self.sys_root, self.cpuinfo),
            "numa_remote_fraction": self.numa.read(),
            "turbo_on": turbo_enabled(dev_root=self.dev_root, vendor=self.vendor or ""),
            "prefetch_on": prefetch_enabled(dev_root=self.dev_root, vendor=self.vendor or ""),
        }
        return self.last

    def fields(self) -> dict[str, float]:
        return {k: r.or_nan() for k, r in self.read().items()}
