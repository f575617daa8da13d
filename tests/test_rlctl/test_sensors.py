"""Host sensors against recorded ipmitool output, fake sysfs trees and an MSR file fixture."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from rlctl.errors import ActuatorError, ConfigError
from rlctl.telemetry.sensors import (
    MSR_IA32_MISC_ENABLE,
    MSR_MISC_FEATURE_CONTROL,
    HostSensors,
    NumaRemoteSensor,
    Reading,
    Topology,
    cpu_frequency_ghz,
    cpu_temperature,
    hottest_cpu,
    ipmi_temperatures,
    parse_cpulist,
    parse_ipmitool_sdr,
    prefetch_enabled,
    prefetchers,
    read_msr,
    set_prefetchers,
    set_turbo,
    turbo_enabled,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
INTEL = "GenuineIntel"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_reading_is_value_xor_reason() -> None:
    assert Reading.of(3.0).ok and Reading.of(3.0).or_nan() == 3.0
    missing = Reading.missing("no sensor")
    assert not missing.ok and missing.or_nan() != missing.or_nan()  # NaN
    with pytest.raises(ValueError):
        Reading(None, None)
    with pytest.raises(ValueError):
        Reading(1.0, "both")


# ------------------------------------------------------------------------------- IPMI


def test_parse_dell_poweredge_sdr() -> None:
    sensors = parse_ipmitool_sdr((FIXTURES / "ipmitool_sdr_dell_poweredge.txt").read_text())
    assert [(s.name, s.entity, s.reading.value) for s in sensors] == [
        ("Inlet Temp", "7.1", 19.0),
        ("Exhaust Temp", "7.1", 36.0),
        ("Temp", "3.1", 41.0),
        ("Temp", "3.2", 40.0),
    ]
    # The two processor sensors are entity 3 ("Temp" on iDRAC); the hottest is 41 C.
    assert hottest_cpu(sensors).value == 41.0


def test_parse_board_without_readings() -> None:
    sensors = parse_ipmitool_sdr((FIXTURES / "ipmitool_sdr_intel_partial.txt").read_text())
    assert len(sensors) == 11
    inlet = sensors[0]
    assert inlet.name == "Inlet Temp" and inlet.reading.value == 18.0
    pch = sensors[2]
    assert pch.status == "ns" and pch.reading.value is None
    assert pch.reading.unavailable == "sensor state 'ns': No Reading"
    cpu = hottest_cpu(sensors)
    assert cpu.value is None and cpu.unavailable is not None
    assert "no processor sensor has a reading" in cpu.unavailable


def test_parse_states_nc_na_disabled() -> None:
    sensors = {s.name: s for s in parse_ipmitool_sdr((FIXTURES / "ipmitool_sdr_supermicro.txt").read_text())}
    assert sensors["CPU1 Temp"].reading.value == 45.0
    assert sensors["CPU2 Temp"].reading.value is None  # ns / Disabled: empty socket
    assert sensors["VRMCpu1 Temp"].status == "nc" and sensors["VRMCpu1 Temp"].reading.value == 96.0  # real value
    assert sensors["VRMCpu2 Temp"].reading.unavailable == "sensor state 'na': Not Available"
    assert sensors["P2-DIMME~H Temp"].reading.value is None  # state 'disabled'
    # The 96 C regulator is not the CPU die; the hottest CPU is CPU1.
    assert hottest_cpu(sensors.values()).value == 45.0


def test_parse_ignores_noise_lines() -> None:
    assert parse_ipmitool_sdr("\nSDR record type 0x12 skipped\n | | | |\n") == []


def _fake_ipmitool(tmp_path: Path, stdout: str = "", stderr: str = "", code: int = 0) -> str:
    script = tmp_path / "ipmitool"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"sys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({code})\n"
    )
    script.chmod(0o755)
    return str(script)


def test_ipmitool_without_bmc_reports_its_error(tmp_path: Path) -> None:
    err = (FIXTURES / "ipmitool_no_bmc_stderr.txt").read_text()
    sensors, reading = ipmi_temperatures(_fake_ipmitool(tmp_path, stderr=err, code=1))
    assert sensors == []
    assert reading.value is None
    assert reading.unavailable == f"exit 1: {err.strip()}"


def test_ipmitool_success_path(tmp_path: Path) -> None:
    out = (FIXTURES / "ipmitool_sdr_supermicro.txt").read_text()
    sensors, reading = ipmi_temperatures(_fake_ipmitool(tmp_path, stdout=out))
    assert len(sensors) == 9 and reading.value == 45.0


def test_missing_ipmitool_says_how_to_install() -> None:
    _, reading = ipmi_temperatures("/nonexistent/ipmitool")
    assert reading.unavailable is not None and "apt-get install ipmitool" in reading.unavailable


# --------------------------------------------------------------------------- sysfs


def test_topology_from_fake_sysfs(tmp_path: Path) -> None:
    cpu = tmp_path / "devices/system/cpu"
    write(cpu / "online", "0-3\n")
    for i, (pkg, core) in enumerate([(0, 0), (0, 0), (0, 1), (0, 1)]):
        write(cpu / f"cpu{i}/topology/physical_package_id", f"{pkg}\n")
        write(cpu / f"cpu{i}/topology/core_id", f"{core}\n")
    write(tmp_path / "devices/system/node/node0/cpulist", "0-1\n")
    write(tmp_path / "devices/system/node/node1/cpulist", "2-3\n")
    topo = Topology.from_sys(tmp_path)
    assert topo.cpus == (0, 1, 2, 3)
    assert (topo.sockets, topo.cores, topo.threads_per_core) == (1, 2, 2)
    assert topo.numa_nodes == {0: (0, 1), 1: (2, 3)}


def test_topology_without_sysfs_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sysfs"):
        Topology.from_sys(tmp_path)


def test_cpulist() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_numa_remote_fraction_over_the_window(tmp_path: Path) -> None:
    stat = tmp_path / "devices/system/node/node{}/numastat"

    def counters(local0: int, other0: int, local1: int, other1: int) -> None:
        write(Path(str(stat).format(0)), f"numa_hit {local0}\nlocal_node {local0}\nother_node {other0}\n")
        write(Path(str(stat).format(1)), f"numa_hit {local1}\nlocal_node {local1}\nother_node {other1}\n")

    counters(900, 100, 0, 0)
    sensor = NumaRemoteSensor(tmp_path)
    assert sensor.read().value == pytest.approx(0.1)  # since boot
    counters(1200, 200, 100, 100)
    assert sensor.read().value == pytest.approx(200 / 600)  # only the window
    assert sensor.read().unavailable == "no page allocations in the window"


def test_no_numa_nodes(tmp_path: Path) -> None:
    reading = NumaRemoteSensor(tmp_path).read()
    assert reading.value is None and "no NUMA nodes" in (reading.unavailable or "")


def test_cpu_temperature_prefers_cpu_sensors(tmp_path: Path) -> None:
    cls = tmp_path / "class"
    write(cls / "thermal/thermal_zone0/type", "acpitz\n")
    write(cls / "thermal/thermal_zone0/temp", "70000\n")  # a hotter board sensor is not the CPU
    write(cls / "thermal/thermal_zone1/type", "x86_pkg_temp\n")
    write(cls / "thermal/thermal_zone1/temp", "48000\n")
    write(cls / "hwmon/hwmon0/name", "coretemp\n")
    write(cls / "hwmon/hwmon0/temp1_input", "52500\n")
    write(cls / "hwmon/hwmon0/temp1_label", "Package id 0\n")
    reading = cpu_temperature(tmp_path)
    assert reading.value == 52.5
    assert reading.source.endswith("hwmon0/temp1_input")


def test_unreadable_zone_is_unavailable_not_zero(tmp_path: Path) -> None:
    (tmp_path / "class/thermal/thermal_zone0/temp").mkdir(parents=True)  # read() fails
    write(tmp_path / "class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
    reading = cpu_temperature(tmp_path)
    assert reading.value is None
    assert "no temperature sensor gave a reading" in (reading.unavailable or "")


def test_no_thermal_sensors(tmp_path: Path) -> None:
    assert "no thermal zones" in (cpu_temperature(tmp_path).unavailable or "")


def test_cpu_frequency_from_cpufreq_then_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    write(cpuinfo, "processor\t: 0\ncpu MHz\t\t: 2596.134\nprocessor\t: 1\ncpu MHz\t\t: 2403.866\n")
    assert cpu_frequency_ghz(tmp_path, cpuinfo).value == pytest.approx(2.5)
    write(tmp_path / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "3000000\n")
    write(tmp_path / "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "3400000\n")
    assert cpu_frequency_ghz(tmp_path, cpuinfo).value == pytest.approx(3.2)
    assert cpu_frequency_ghz(tmp_path / "none", tmp_path / "none").value is None


# ---------------------------------------------------------------------------- MSRs


def msr_device(root: Path, values: dict[int, int], cpus: int = 2) -> Path:
    """A sparse file per CPU where offset = register holds an 8-byte little-endian value.

    In a flat file 0x1A0's upper four bytes are 0x1A4's lower four (the real device has
    no such overlap), so values for both must agree on those bytes; checked here.
    """
    for cpu in range(cpus):
        path = root / str(cpu) / "msr"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(0x1000)
            for register, value in values.items():
                f.seek(register)
                f.write(struct.pack("<Q", value))
        for register, value in values.items():
            assert read_msr(cpu, register, dev_root=root) == value, f"fixture values overlap at {register:#x}"
    return root


def test_read_msr_from_file_fixture(tmp_path: Path) -> None:
    # 0x1A4 = 0x45: bits 0 and 2 (two prefetchers off) and bit 6; 0x1A0 shares those bytes
    # as its bits 32-39, so its bit 38 (turbo disable) is set too.
    dev = msr_device(tmp_path, {MSR_IA32_MISC_ENABLE: 0x0000_0045_0085_0089, MSR_MISC_FEATURE_CONTROL: 0x45})
    assert read_msr(1, MSR_IA32_MISC_ENABLE, dev_root=dev) == 0x0000_0045_0085_0089
    assert read_msr(0, MSR_MISC_FEATURE_CONTROL, dev_root=dev) == 0x45
    assert turbo_enabled(dev_root=dev, vendor=INTEL).value == 0.0
    assert prefetch_enabled(dev_root=dev, vendor=INTEL).value == 0.5


def test_turbo_bit_38(tmp_path: Path) -> None:
    on = msr_device(tmp_path / "on", {MSR_IA32_MISC_ENABLE: 0x850089})
    off = msr_device(tmp_path / "off", {MSR_IA32_MISC_ENABLE: 0x850089 | 1 << 38})
    assert turbo_enabled(dev_root=on, vendor=INTEL).value == 1.0
    assert turbo_enabled(dev_root=off, vendor=INTEL).value == 0.0


def test_prefetcher_bits_of_0x1a4(tmp_path: Path) -> None:
    # bit 0 (L2 hardware) and bit 2 (DCU) set: those two are disabled.
    dev = msr_device(tmp_path, {MSR_MISC_FEATURE_CONTROL: 0b0101})
    states = prefetchers(dev_root=dev, vendor=INTEL)
    assert {k: r.value for k, r in states.items()} == {
        "l2_hardware": 0.0,
        "l2_adjacent_line": 1.0,
        "dcu": 0.0,
        "dcu_ip": 1.0,
    }
    assert prefetch_enabled(dev_root=dev, vendor=INTEL).value == 0.5
    # 0x1A0 content does not matter for prefetch: it is a different register.
    all_on = msr_device(tmp_path / "b", {MSR_IA32_MISC_ENABLE: 0xF, MSR_MISC_FEATURE_CONTROL: 0})
    assert prefetch_enabled(dev_root=all_on, vendor=INTEL).value == 1.0


def test_msr_unavailable_reasons(tmp_path: Path) -> None:
    amd = turbo_enabled(dev_root=msr_device(tmp_path, {}), vendor="AuthenticAMD")
    assert amd.value is None and "AuthenticAMD" in (amd.unavailable or "")
    missing = prefetch_enabled(dev_root=tmp_path / "none", vendor=INTEL)
    assert missing.value is None and "modprobe msr" in (missing.unavailable or "")


def test_msr_read_error_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "0" / "msr").mkdir(parents=True)  # opens, but pread fails with EISDIR
    reading = turbo_enabled(dev_root=tmp_path, vendor=INTEL)
    assert reading.value is None
    assert reading.unavailable == "read failed: Is a directory"


def test_writes_refused_without_allow_writes(tmp_path: Path) -> None:
    dev = msr_device(tmp_path, {MSR_IA32_MISC_ENABLE: 0x850089})
    before = (dev / "0" / "msr").read_bytes()
    with pytest.raises(ConfigError, match="allow_writes=True"):
        set_turbo(False, allow_writes=False, dev_root=dev, vendor=INTEL)
    with pytest.raises(ConfigError, match="allow_writes=True"):
        set_prefetchers(False, allow_writes=False, dev_root=dev, vendor=INTEL)
    assert (dev / "0" / "msr").read_bytes() == before


def test_set_turbo_changes_only_bit_38(tmp_path: Path) -> None:
    dev = msr_device(tmp_path, {MSR_IA32_MISC_ENABLE: 0x850089})
    assert set_turbo(False, allow_writes=True, dev_root=dev, vendor=INTEL) == [0, 1]
    for cpu in (0, 1):
        assert read_msr(cpu, MSR_IA32_MISC_ENABLE, dev_root=dev) == 0x850089 | 1 << 38
    assert turbo_enabled(dev_root=dev, vendor=INTEL).value == 0.0
    set_turbo(True, allow_writes=True, dev_root=dev, cpus=[1], vendor=INTEL)
    assert read_msr(1, MSR_IA32_MISC_ENABLE, dev_root=dev) == 0x850089
    assert read_msr(0, MSR_IA32_MISC_ENABLE, dev_root=dev) == 0x850089 | 1 << 38


def test_set_prefetchers(tmp_path: Path) -> None:
    dev = msr_device(tmp_path, {MSR_MISC_FEATURE_CONTROL: 0xF0})  # high bits are not prefetchers
    set_prefetchers(False, allow_writes=True, dev_root=dev, vendor=INTEL)
    assert read_msr(0, MSR_MISC_FEATURE_CONTROL, dev_root=dev) == 0xFF
    set_prefetchers({"dcu": True}, allow_writes=True, dev_root=dev, vendor=INTEL)
    assert read_msr(0, MSR_MISC_FEATURE_CONTROL, dev_root=dev) == 0xFB
    with pytest.raises(ConfigError, match="unknown prefetcher"):
        set_prefetchers({"l3": True}, allow_writes=True, dev_root=dev, vendor=INTEL)


def test_writes_refuse_non_intel_and_missing_device(tmp_path: Path) -> None:
    with pytest.raises(ActuatorError, match="Intel registers"):
        set_turbo(True, allow_writes=True, dev_root=msr_device(tmp_path, {}), vendor="AuthenticAMD")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ActuatorError, match="modprobe msr"):
        set_turbo(True, allow_writes=True, dev_root=tmp_path / "empty", vendor=INTEL)


def test_host_sensors_fields_are_nan_where_unavailable(tmp_path: Path) -> None:
    write(tmp_path / "cpuinfo", "vendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2000.0\n")
    host = HostSensors(sys_root=tmp_path, dev_root=tmp_path / "dev", cpuinfo=tmp_path / "cpuinfo")
    fields = host.fields()
    assert fields["cpu_freq_ghz"] == pytest.approx(2.0)
    for name in ("cpu_temp_c", "numa_remote_fraction", "turbo_on", "prefetch_on"):
        assert fields[name] != fields[name], name  # NaN
        assert host.last[name].unavailable
