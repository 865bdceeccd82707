"""Facts about the machine a job runs on: host, chip, cores, memory, OS, versions, power.

Mac-only readings (sysctl, pmset, notifyutil) are parsed by small pure functions that tests
feed with recorded outputs, since these build machines are Linux.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import Any

from mlxd import __version__
from mlxd.config import host_id
from mlxd.system.versions import version_or_missing


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def parse_sysctl(text: str) -> dict[str, str]:
    """Parse ``sysctl name1 name2 ...`` output ("name: value" lines)."""
    facts = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            facts[key.strip()] = value.strip()
    return facts


SYSCTL_KEYS = [
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.perflevel0.physicalcpu",
    "hw.perflevel1.physicalcpu",
]


def mac_facts(sysctl_text: str) -> dict[str, Any]:
    s = parse_sysctl(sysctl_text)

    def num(key: str) -> int | None:
        v = s.get(key)
        return int(v) if v and v.isdigit() else None

    brand = s.get("machdep.cpu.brand_string") or platform.processor()
    return {
        "cpu": brand,
        "chip": brand if brand and brand.startswith("Apple") else None,
        "ram_bytes": num("hw.memsize"),
        "cores_physical": num("hw.physicalcpu"),
        "cores_logical": num("hw.logicalcpu"),
        "cores_performance": num("hw.perflevel0.physicalcpu"),
        "cores_efficiency": num("hw.perflevel1.physicalcpu"),
    }


def linux_cpu_name(cpuinfo_text: str) -> str | None:
    for line in cpuinfo_text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return None


def linux_physical_cores(cpuinfo_text: str) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo, as psutil counts them."""
    cores, physical = set(), None
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def _psutil_counts() -> dict[str, Any]:
    import psutil  # ~15 ms to import: only where the cheap readings gave nothing

    return {
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
    }


def _total_ram() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_facts() -> dict[str, Any]:
    """What can be known without importing mlx."""
    facts: dict[str, Any] = {
        # The machine's one id (its daemon's --host-id): runs are filed where jobs are.
        "host": host_id(),
        "os_name": platform.system(),
        "os_version": platform.mac_ver()[0] or platform.release(),
        # Not platform.processor(): on Linux it runs `uname -p`; the real name comes below.
        "cpu": platform.machine(),
        "chip": None,
        "cores_physical": None,
        "cores_logical": os.cpu_count(),
        "cores_performance": None,
        "cores_efficiency": None,
        "gpu_cores": None,
        "ram_bytes": _total_ram(),
        "python_version": platform.python_version(),
        "mlx_version": version_or_missing("mlx"),
        "mlx_lm_version": version_or_missing("mlx-lm"),
        "mlxd_version": __version__,
        "backend": "metal" if sys.platform == "darwin" else "cpu",
    }
    if sys.platform == "darwin":
        text = _run(["sysctl", *SYSCTL_KEYS])
        if text:
            facts.update({k: v for k, v in mac_facts(text).items() if v is not None})
    else:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
        facts["cpu"] = linux_cpu_name(cpuinfo) or facts["cpu"]
        facts["cores_physical"] = linux_physical_cores(cpuinfo)
    if facts["cores_physical"] is None or facts["ram_bytes"] is None:
        for key, value in _psutil_counts().items():
            facts[key] = facts[key] or value
    return facts


# -- power and thermal state (macOS; AC/battery also on Linux laptops) ---------------------

# notifyutil's com.apple.system.thermalpressurelevel, as NSProcessInfo.thermalState names it
# (0..4); "trapping" and "sleeping" only happen just before the machine protects itself.
THERMAL_STATES = ("nominal", "moderate", "heavy", "trapping", "sleeping")
THERMAL_PRESSURE_KEY = "com.apple.system.thermalpressurelevel"


def parse_pmset_batt(text: str) -> str | None:
    """``pmset -g batt`` -> "ac" | "battery" | None, from "Now drawing from 'AC Power'"."""
    m = re.search(r"Now drawing from '([^']+)'", text)
    if not m:
        return None
    source = m.group(1).lower()
    if source.startswith("ac"):
        return "ac"
    if source.startswith("battery"):
        return "battery"
    return None  # "UPS Power" and the like: neither of ours


def parse_pmset_low_power(text: str) -> bool | None:
    """``pmset -g`` -> whether low-power mode is on, None if the setting is not listed.

    Most Macs list ``lowpowermode 0|1``; Macs that also have a high-power mode list
    ``powermode 0|1|2`` instead (automatic / low / high).
    """
    m = re.search(r"^\s*lowpowermode\s+(\d+)", text, re.M)
    if m:
        return m.group(1) != "0"
    m = re.search(r"^\s*powermode\s+(\d+)", text, re.M)
    if m:
        return m.group(1) == "1"
    return None


def parse_thermal_pressure(text: str) -> str | None:
    """``notifyutil -g com.apple.system.thermalpressurelevel`` -> a THERMAL_STATES name."""
    m = re.search(re.escape(THERMAL_PRESSURE_KEY) + r"\s+(\d+)", text)
    if not m:
        return None
    level = int(m.group(1))
    return THERMAL_STATES[level] if level < len(THERMAL_STATES) else None


def parse_pmset_therm(text: str) -> str | None:
    """``pmset -g therm`` -> "nominal" or "heavy" (throttled), None if it says neither.

    Coarser than the thermal pressure level: pmset only tells whether the CPU is held back
    (CPU_Speed_Limit below 100) or a thermal warning level above 0 was recorded.
    """
    speed = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", text)
    warning = re.search(r"Thermal Warning Level\s*=\s*(\d+)", text, re.I)
    if (speed and int(speed.group(1)) < 100) or (warning and int(warning.group(1)) > 0):
        return "heavy"
    if speed or warning or "No thermal warning level has been recorded" in text:
        return "nominal"
    return None


def _has_battery(root: str = "/sys/class/power_supply") -> bool:
    try:
        supplies = os.listdir(root)
    except OSError:
        return sys.platform != "linux"  # elsewhere only psutil knows
    for name in supplies:
        try:
            with open(os.path.join(root, name, "type")) as f:
                if f.read().strip().lower() == "battery":
                    return True
        except OSError:
            if name.upper().startswith("BAT"):
                return True
    return False


def power_state() -> dict[str, Any]:
    """Power source ("ac" | "battery"), low-power mode and thermal state; None where unknown.

    Read fresh on each call (cheap: a few short commands on macOS), so a benchmark can
    record the state it actually ran in.
    """
    state: dict[str, Any] = {"power_source": None, "low_power_mode": None, "thermal_state": None}
    if sys.platform == "darwin":
        batt = _run(["pmset", "-g", "batt"])
        if batt:
            state["power_source"] = parse_pmset_batt(batt)
        settings = _run(["pmset", "-g"])
        if settings:
            state["low_power_mode"] = parse_pmset_low_power(settings)
        pressure = _run(["notifyutil", "-g", THERMAL_PRESSURE_KEY])
        state["thermal_state"] = parse_thermal_pressure(pressure) if pressure else None
        if state["thermal_state"] is None:
            therm = _run(["pmset", "-g", "therm"])
            state["thermal_state"] = parse_pmset_therm(therm) if therm else None
        return state
    # Linux laptops report AC/battery through /sys; desktops and servers have no battery
    # (then psutil is not even imported: a read command's latency counts, issue 7).
    if not _has_battery():
        return state
    import psutil

    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        battery = None
    if battery is not None and battery.power_plugged is not None:
        state["power_source"] = "ac" if battery.power_plugged else "battery"
    return state
