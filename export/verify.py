"""Parity of an exported artifact against the source sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.encoder import cosine_rows

# Minimum cosine to the source model, per precision. fp32 must be numerically the same model.
PARITY_MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.97}


def reference_vectors(model_dir: Path, texts: Sequence[str]) -> np.ndarray:
    """Vectors from sentence-transformers itself (torch, CPU): the ground truth."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(list(texts), batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


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
