"""What machine a measurement ran on: CPU model and the flags that decide bf16 / int8 speed.

Recorded by every bench/ result file (bench.runner's envelope) and by scripts/gpu_check.py.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

from embedder.cpu_features import RECORDED_FLAGS, cpu_model_and_flags, has_bf16_units, matrix_units


def read_cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and flag set (embedder.cpu_features reads /proc/cpuinfo once)."""
    model, flags = cpu_model_and_flags()
    return model or platform.processor() or "unknown", set(flags)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, recorded flags, matrix units and runtime versions."""
    model, flags = read_cpuinfo()
    import onnxruntime

    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": sorted(f for f in RECORDED_FLAGS if f in flags),
        "matrix_units": matrix_units(frozenset(flags)),
        "bf16_units": has_bf16_units(flags),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    if importlib.util.find_spec("openvino") is not None:
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    return info
