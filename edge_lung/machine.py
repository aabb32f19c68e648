"""What machine this is, as far as inference speed goes: the CPU model and the instruction-set flags that decide
how fast FP32 and INT8 kernels run. Stdlib only; read by `bench` (the environment it reports) and by `export --int8`
(which times FP32 against INT8 on the exporting machine and names it in the model card).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

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


def machine_class() -> str:
    """One line naming the machine class a speed figure holds for, e.g. 'x86_64 AMD EPYC 7B13 (avx2, fma)'."""
    cpu = cpu_info()
    flags = ", ".join(cpu["flags"]) or "no SIMD flags read"
    return f"{platform.machine()} {cpu['model']} ({flags})"
