"""Facts about the machine a job runs on: host, chip, cores, memory, OS, versions.

Mac-only readings (sysctl) are parsed by small functions that tests feed with recorded
outputs, since these build machines are Linux.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

import psutil

import mlxd


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


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    """What can be known without importing mlx."""
    facts: dict[str, Any] = {
        "host": socket.gethostname(),
        "os_name": platform.system(),
        "os_version": platform.mac_ver()[0] or platform.release(),
        "cpu": platform.processor() or platform.machine(),
        "chip": None,
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_performance": None,
        "cores_efficiency": None,
        "gpu_cores": None,
        "ram_bytes": psutil.virtual_memory().total,
        "python_version": platform.python_version(),
        "mlx_version": _version("mlx"),
        "mlx_lm_version": _version("mlx-lm"),
        "mlxd_version": mlxd.__version__,
        "backend": "metal" if sys.platform == "darwin" else "cpu",
    }
    if sys.platform == "darwin":
        text = _run(["sysctl", *SYSCTL_KEYS])
        if text:
            facts.update({k: v for k, v in mac_facts(text).items() if v is not None})
    else:
        try:
            with open("/proc/cpuinfo") as f:
                facts["cpu"] = linux_cpu_name(f.read()) or facts["cpu"]
        except OSError:
            pass
    return facts


def system_facts() -> dict[str, Any]:
    """machine_facts() plus what the MLX backend says (call only where mlx may be imported)."""
    from mlxd.engine.system import backend_facts

    facts = machine_facts()
    backend = backend_facts()
    facts["backend"] = backend.get("backend", facts["backend"])
    facts["mlx_version"] = backend.get("mlx_version", facts["mlx_version"])
    facts["mlx_lm_version"] = backend.get("mlx_lm_version", facts["mlx_lm_version"])
    if backend.get("device_name") and facts["backend"] != "cpu":
        facts["chip"] = facts.get("chip") or backend["device_name"]
    return facts
