"""The fixed probe set whose vectors form part of an artifact's fingerprint.

Every loader re-embeds these and compares with the stored vectors, so a wrong onnxruntime
build, an edited tokenizer or a corrupted model refuses to serve instead of drifting silently.
The set mixes lengths and scripts so both short and padded paths are exercised.
"""

from __future__ import annotations

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
