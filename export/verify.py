"""Parity of an exported artifact against the source sentence-transformers model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import BatchConfig
from embedder.encoder import Encoder, cosine_rows

# Minimum cosine to the source model, per precision. fp32 must be numerically the same model.
PARITY_MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
# Minimum cosine between a text embedded alone and inside a padded batch of other texts (int8 export check).
BATCH_MIN_COSINE = 0.999


def _load_reference(model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def _encode(model: Any, texts: Sequence[str], prompt_name: str | None) -> np.ndarray:
    vectors = model.encode(
        list(texts), batch_size=16, convert_to_numpy=True, show_progress_bar=False, prompt_name=prompt_name
    )
    return np.asarray(vectors, dtype=np.float32)


def reference_vectors(model_dir: Path, texts: Sequence[str], prompt_name: str | None = None) -> np.ndarray:
    """Vectors from sentence-transformers itself (torch, CPU): the ground truth."""
    return _encode(_load_reference(model_dir), texts, prompt_name)


def prompted_reference_vectors(
    model_dir: Path, texts: Sequence[str], prompt_names: Sequence[str], prompt_texts: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`texts` with the default prompt, and `prompt_texts` with each named prompt, from one model load."""
    model = _load_reference(model_dir)
    return _encode(model, texts, None), {name: _encode(model, prompt_texts, name) for name in prompt_names}


def parity_figures(reference: np.ndarray, ours: np.ndarray) -> dict[str, Any]:
    """min/mean cosine and max abs difference, the figures recorded in the manifest."""
    cos = cosine_rows(reference, ours)
    return {
        "texts": len(cos),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(reference - ours).max()),
        "worst_index": int(cos.argmin()),
    }


def batch_independence(encoder: Encoder, texts: Sequence[str]) -> dict[str, Any]:
    """Each text embedded alone vs all of them in one padded, mixed-length batch: min cosine, max abs diff."""
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    one_batch = BatchConfig(
        batch_tokens=len(texts) * encoder.max_seq_length,
        max_batch_size=len(texts),
        call_overhead_tokens=len(texts) * encoder.max_seq_length,  # never worth splitting
    )
    together = Encoder(encoder.artifact, dataclasses.replace(encoder.config, batch=one_batch)).encode(
        list(texts)
    )
    cos = cosine_rows(alone, together)
    return {"batch_min_cosine": float(cos.min()), "batch_max_abs_diff": float(np.abs(alone - together).max())}
