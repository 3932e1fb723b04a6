"""The real model (all-MiniLM-L6-v2) against sentence-transformers itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.artifact import Artifact
from embedder.encoder import cosine_rows
from export.verify import PARITY_MIN_COSINE, reference_vectors
from testkit.varied_texts import VARIED

pytestmark = pytest.mark.slow

# The goals are the exporter's own (export/verify.py); here they are checked on held-out text the
# exporter never saw, at the Encoder's default batching.
INT8_MIN_COSINE = PARITY_MIN_COSINE["int8"]


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    return reference_vectors(minilm_dir, VARIED)


def test_fp32_matches_sentence_transformers(minilm_artifact: Path, reference: np.ndarray) -> None:
    ours = Encoder.load(minilm_artifact).encode(VARIED)
    assert cosine_rows(reference, ours).min() >= PARITY_MIN_COSINE["fp32"]
    assert np.abs(reference - ours).max() <= 1e-5


def test_truncation_matches_sentence_transformers_on_long_inputs(
    minilm_artifact: Path, minilm_dir: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    long_texts = ["word " * 400, "长" * 700, ("Why? " * 200).strip()]
    encoder = Encoder.load(minilm_artifact)
    result = encoder.encode_detailed(long_texts)
    assert result.truncated.all() and (result.token_counts > 256).all()
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    expected = st.encode(long_texts, convert_to_numpy=True)
    assert np.abs(expected - result.vectors).max() <= 1e-5


def test_int8_stays_close_to_sentence_transformers(reference: np.ndarray, minilm_int8_artifact: Path) -> None:
    out = minilm_int8_artifact
    assert Artifact.load(out).manifest.quantization["batch_independent"] is True
    encoder = Encoder.load(out)
    held_out = cosine_rows(reference, encoder.encode(VARIED))
    assert held_out.min() >= INT8_MIN_COSINE, f"held-out min cosine {held_out.min():.4f}"
    assert held_out.mean() >= 0.99
