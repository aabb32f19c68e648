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
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung import __version__
from edge_lung.runtime.artifact.model_dir import usable_cores  # one definition: the runtime bounds --threads by it too

# /proc/cpuinfo flags that decide how fast INT8 and FP32 kernels can be (x86 `flags`, ARM `Features`).
X86_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
# (implementer, part) from /proc/cpuinfo on ARM, which has no "model name" line on most kernels.
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
}


def read_proc(path: str) -> str | None:
    """A /proc or /sys file's text, stripped, or None where it cannot be read."""
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, the flags that matter for inference, and whether INT8 dot-product instructions exist."""
    first: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip().lower(), value.strip())
    model = first.get("model name")
    if not model:
        part = ARM_PARTS.get((first.get("cpu implementer", ""), first.get("cpu part", "")))
        model = part or first.get("hardware") or first.get("cpu part")
    present = set((first.get("flags") or first.get("features") or "").split())
    known = X86_FLAGS + ARM_FLAGS
    flags = [f for f in known if f in present]
    return {
        "model": model or platform.processor() or "unknown",
        "flags": flags,
        "neon": "asimd" in present or "neon" in present,
        "int8_dot": any(f in present for f in INT8_DOT_FLAGS),
    }


def cpu_info() -> dict[str, Any]:
    """`parse_cpuinfo` of this machine's /proc/cpuinfo (the model from `platform` where there is none)."""
    return parse_cpuinfo(read_proc("/proc/cpuinfo") or "")


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
