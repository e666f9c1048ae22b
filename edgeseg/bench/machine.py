"""Describe the machine a benchmark ran on, without importing any heavy package."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# SIMD / matrix extensions that decide which kernels ONNX Runtime and OpenVINO pick.
# x86 names as in /proc/cpuinfo "flags"; Arm names as in its "Features" line.
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip
PACKAGES = ("numpy", "onnxruntime", "openvino")


def _cpuinfo() -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def _mem_total_mb() -> float | None:
    """MemTotal from /proc/meminfo in MiB, or None where it cannot be read."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int | None) -> dict[str, Any]:
    """CPU, cores, ISA flags, memory, OS and package versions; ``threads`` is what was requested."""
    cpu = _cpuinfo()
    model = cpu.get("model name") or cpu.get("Model") or cpu.get("Hardware") or platform.processor()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {
        "cpu_model": model or platform.machine(),
        "arch": platform.machine(),
        "logical_cores": logical,
        "usable_cores": usable,
        "threads": threads,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "mem_total_mb": _mem_total_mb(),
        "os": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "packages": {name: _version(name) for name in PACKAGES},
    }
