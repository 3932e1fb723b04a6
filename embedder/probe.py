"""The fixed probe set whose vectors form part of an artifact's fingerprint.

Every loader re-embeds these and compares with the stored vectors, so a wrong onnxruntime
build, an edited tokenizer or a corrupted model refuses to serve instead of drifting silently.
The set mixes lengths and scripts so both short and padded paths are exercised.
"""

from __future__ import annotations

from collections.abc import Sequence

PROBE_TEXTS: tuple[str, ...] = (
    "How do I reset my password?",
    "What is the capital of France?",
    "refund",
    "Can I change the delivery address after the order has shipped, and if so, how long does it take?",
    "如何重置我的密码？",
    "¿Dónde está la estación de tren más cercana?",
    "Is the app available on Android 🤖?",
    "  spaces   and\ttabs  ",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "What's the difference between a Roth IRA and a traditional IRA?",
)

# Texts per named prompt added to the probe, so an edited or dropped prompt fails the probe too.
PROMPT_PROBE_TEXTS = 3


def probe_plan(
    prompt_names: Sequence[str], texts: Sequence[str] = PROBE_TEXTS
) -> list[tuple[str | None, tuple[str, ...]]]:
    """(prompt name, texts) groups in probe order: all texts with the default, then a few per prompt.

    A model without prompts has the one group, so older artifacts' probes keep their meaning.
    """
    plan: list[tuple[str | None, tuple[str, ...]]] = [(None, tuple(texts))]
    plan += [(name, tuple(texts[:PROMPT_PROBE_TEXTS])) for name in sorted(prompt_names)]
    return plan


# Minimum cosine between re-embedded and stored probe vectors, by the precision that runs (the
# stored vectors are the exporter's: fp32 onnxruntime on the CPU for fp32 artifacts). Set from
# measurements (bench/results/precision_tolerance.json, `python -m bench.tolerance`):
# - fp32: same arithmetic up to summation order (onnxruntime CPU, OpenVINO f32, CUDA without TF32).
# - bf16: OpenVINO bf16, 8-bit mantissa; measured min 0.99998 on AVX-512 BF16 (AMD Zen 4) and
#   0.99996 to sentence-transformers on AMX (DESIGN.md); 0.9999 leaves room for the other code path
#   while a different model, tokenizer or corrupted weight scores far below (< 0.99).
# - fp32-tf32: CUDA TF32 (10-bit mantissa products), ~1e-3 relative; not measured here (no GPU).
# - fp16: fp16 artifacts, and fp32 artifacts run in fp16 on CUDA.
# - int8: kernels differ between CPUs (VNNI vs AVX2), so it gets the most slack.
PROBE_MIN_COSINE = {"fp32": 0.99999, "bf16": 0.9999, "fp32-tf32": 0.9995, "fp16": 0.999, "int8": 0.99}


def probe_floor(tolerance_key: str) -> float:
    """The probe floor for a precision key (RuntimeInfo.tolerance_key); unknown keys get fp32's."""
    return PROBE_MIN_COSINE.get(tolerance_key, PROBE_MIN_COSINE["fp32"])
