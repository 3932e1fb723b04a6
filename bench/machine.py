"""What machine a benchmark ran on: CPU model and the SIMD flags that decide int8 speed."""

from __future__ import annotations

import os
import platform
from typing import Any

_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "f16c")


def read_cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and flag set from /proc/cpuinfo (platform.processor() and no flags elsewhere)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def machine_info() -> dict[str, Any]:
    """CPU model, core count and relevant flags (read from /proc/cpuinfo when present)."""
    model, flags = read_cpuinfo()
    import onnxruntime

    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": sorted(f for f in _FLAGS_OF_INTEREST if f in flags),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
