"""Bench environment: what the figures depend on, read from the machine.

Owns the CPU model and the instruction-set flags that matter for inference (/proc/cpuinfo),
thermals and clocks (sysfs, `vcgencmd`), the cores this process may use, and the one
environment record stored with every `edge-lung bench` report. Reads only; times nothing.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

import numpy as np

from edge_lung import __version__
from edge_lung.machine import cpu_info, read_proc
from edge_lung.runtime.artifact.model_dir import usable_cores  # one definition: the runtime bounds --threads by it too


def thermal_state() -> dict[str, Any]:
    """SoC temperature, clock and (on a Raspberry Pi) `vcgencmd get_throttled`; empty where absent."""
    out: dict[str, Any] = {}
    temp = read_proc("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        out["temp_c"] = round(int(temp) / 1000, 1)
    freq = read_proc("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        out["cpu0_mhz"] = int(freq) // 1000
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        try:
            res = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5)
            out["throttled"] = res.stdout.strip() or res.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            out["throttled"] = f"vcgencmd failed: {exc}"
    return out


def _mem_total_bytes() -> int | None:
    meminfo = read_proc("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def environment() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, OS, library versions, governor, load, thermals."""
    import onnxruntime

    cpu = cpu_info()
    env: dict[str, Any] = {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "neon": cpu["neon"],
        "int8_dot": cpu["int8_dot"],
        "board": read_proc("/proc/device-tree/model"),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_max_mhz": None,
        "governor": read_proc("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "memory_bytes": _mem_total_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "thermal_before": thermal_state(),
    }
    max_khz = read_proc("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz and max_khz.isdigit():
        env["cpu_max_mhz"] = int(max_khz) // 1000

    env["edge_lung"] = __version__
    return env
