"""Which matrix units this CPU has (AMX, AVX-512 BF16, VNNI), read once from /proc/cpuinfo.

The runtime choice (embedder/runtime_choice.py) takes the flag set as an argument so tests can
feed any CPU; only this module looks at the real machine.
"""

from __future__ import annotations

import functools
import platform

# The units that change which backend and precision are fastest, in the order they matter.
# amx_bf16/amx_int8: Intel Sapphire Rapids and later (tile matrix multiply, ~10x fp32 GEMM);
# avx512_bf16: bf16 dot products in AVX-512 (Cooper Lake, Zen 4+); avx512_vnni / avx_vnni:
# int8 dot products (the fast path of onnxruntime's and OpenVINO's int8 GEMMs).
MATRIX_UNIT_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni")
# Flags every benchmark and summary records beside its figures.
RECORDED_FLAGS = ("avx2", "fma", "f16c", "avx512f", *MATRIX_UNIT_FLAGS)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """CPU model name and flag set from /proc/cpuinfo text (the first processor's)."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """This machine's CPU model and flags (empty flags where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return parse_cpuinfo(fh.read())
    except OSError:
        return platform.processor(), frozenset()


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags."""
    return cpu_model_and_flags()[1]


def matrix_units(flags: frozenset[str] | set[str] | None = None) -> list[str]:
    """The matrix-unit flags present (this CPU's when `flags` is None), in MATRIX_UNIT_FLAGS order."""
    have = cpu_flags() if flags is None else flags
    return [f for f in MATRIX_UNIT_FLAGS if f in have]


def has_bf16_units(flags: frozenset[str] | set[str]) -> bool:
    """True when the CPU executes bf16 dot products natively (AMX or AVX-512 BF16)."""
    return "amx_bf16" in flags or "avx512_bf16" in flags
