"""Which backend and precision run an artifact: the rules of `auto`, and every refusal with its reason.

A pure function of what was asked, what the artifact is, what the CPU has and what is installed,
so the rules are tested by feeding flag sets (tests/unit/test_runtime_choice.py), not CPUs.

Rules (README "Which backend and precision"):
- CUDA requested: onnxruntime; precision fp32 (TF32 off unless asked) or fp16 (the fp32
  artifact's weights converted at load). auto means fp32: fp16's tolerance on GPUs is measured
  by `make gpu-check`, not assumed.
- CPU with bf16 units (AMX or AVX-512 BF16) and OpenVINO installed: OpenVINO bf16 on the fp32
  artifact (measured 2.9x onnxruntime fp32 on AMX, min cosine 0.99996 to sentence-transformers).
- any other CPU: onnxruntime fp32, today's path, so nothing gets slower where the units are missing.
- int8 and fp16 are exported artifacts: they run as exported, never converted again.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass

from embedder.config import BACKENDS, RUNTIME_PRECISIONS
from embedder.cpu_features import has_bf16_units


class RuntimeRefused(ValueError):
    """The requested backend / precision cannot run this artifact on this machine (the message says why)."""


@dataclass(frozen=True)
class RuntimeChoice:
    """What will execute the graph, and why."""

    backend: str  # "onnxruntime" | "openvino"
    precision: str  # what the arithmetic runs in: "fp32" | "bf16" | "fp16" | "int8"
    device: str  # "cpu" | "cuda"
    reason: str


def installed_backends() -> frozenset[str]:
    """Backends importable in this environment (onnxruntime always; openvino is an optional extra)."""
    found = {"onnxruntime"}
    if importlib.util.find_spec("openvino") is not None:
        found.add("openvino")
    return frozenset(found)


def choose_runtime(
    *,
    backend: str,
    precision: str,
    providers: Collection[str],
    artifact_precision: str,
    cpu_flags: Collection[str],
    installed: Collection[str],
) -> RuntimeChoice:
    """Resolve `auto` and check a forced choice; raises RuntimeRefused naming the setting at fault."""
    if backend not in BACKENDS:
        raise RuntimeRefused(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if precision not in RUNTIME_PRECISIONS:
        raise RuntimeRefused(
            f"precision must be one of {list(RUNTIME_PRECISIONS)}, got {precision!r}"
            + (
                " (int8 is an exported artifact: load the int8 artifact instead)"
                if precision == "int8"
                else ""
            )
        )
    flags = frozenset(cpu_flags)
    if backend == "openvino" and "openvino" not in installed:
        raise RuntimeRefused("backend=openvino, but openvino is not installed: pip install '.[openvino]'")
    if artifact_precision != "fp32":
        return _exported_precision(backend, precision, providers, artifact_precision)
    if "cuda" in providers:
        return _cuda(backend, precision)
    if precision == "fp16":
        raise RuntimeRefused(
            "precision=fp16 runs on CUDA only (providers: [cuda]); on a CPU use bf16 (backend openvino) "
            "or export an fp16 artifact"
        )
    if backend == "onnxruntime" and precision == "bf16":
        raise RuntimeRefused(
            "precision=bf16 with backend=onnxruntime: onnxruntime's CPU provider has no bf16 kernels on x86; "
            "use backend=openvino (pip install '.[openvino]') or backend=auto"
        )
    units = has_bf16_units(flags)
    if backend == "onnxruntime" or (backend == "auto" and precision == "fp32"):
        return RuntimeChoice("onnxruntime", "fp32", "cpu", f"{backend}/{precision}: onnxruntime fp32")
    if backend == "auto" and "openvino" not in installed:
        if precision == "bf16":
            raise RuntimeRefused("precision=bf16 needs OpenVINO: pip install '.[openvino]'")
        why = "no OpenVINO installed" if units else "no bf16 units (AMX / AVX-512 BF16) on this CPU"
        return RuntimeChoice("onnxruntime", "fp32", "cpu", f"auto: onnxruntime fp32 ({why})")
    if backend == "auto" and precision == "auto" and not units:
        return RuntimeChoice(
            "onnxruntime", "fp32", "cpu", "auto: onnxruntime fp32 (no bf16 units: AMX / AVX-512 BF16)"
        )
    # OpenVINO from here: forced, or auto on a CPU with bf16 units.
    chosen = ("bf16" if units else "fp32") if precision == "auto" else precision
    unit_note = "bf16 units present" if units else "no bf16 units: OpenVINO may run bf16 as fp32"
    return RuntimeChoice("openvino", chosen, "cpu", f"{backend}/{precision}: openvino {chosen} ({unit_note})")


def _cuda(backend: str, precision: str) -> RuntimeChoice:
    if backend == "openvino":
        raise RuntimeRefused(
            "backend=openvino runs on CPUs only; providers: [cuda] needs backend onnxruntime"
        )
    if precision == "bf16":
        raise RuntimeRefused("precision=bf16 is a CPU precision (OpenVINO); on CUDA use fp16 or fp32")
    chosen = "fp32" if precision == "auto" else precision
    return RuntimeChoice("onnxruntime", chosen, "cuda", f"cuda: onnxruntime {chosen}")


def _exported_precision(
    backend: str, precision: str, providers: Collection[str], artifact_precision: str
) -> RuntimeChoice:
    """int8 / fp16 artifacts run as exported; a conflicting runtime precision is refused, not ignored."""
    if precision not in ("auto", artifact_precision):
        raise RuntimeRefused(
            f"precision={precision} cannot run a {artifact_precision} artifact: runtime precisions apply to "
            f"fp32 artifacts; use precision auto (or {artifact_precision}), or load the fp32 artifact"
        )
    device = "cuda" if "cuda" in providers else "cpu"
    if backend == "openvino" and device == "cuda":
        raise RuntimeRefused(
            "backend=openvino runs on CPUs only; providers: [cuda] needs backend onnxruntime"
        )
    chosen = "openvino" if backend == "openvino" else "onnxruntime"
    return RuntimeChoice(
        chosen, artifact_precision, device, f"{artifact_precision} artifact runs as exported"
    )
