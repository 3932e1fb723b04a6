"""pad_to_multiple: padding lengths to buckets leaves vectors unchanged and bounds the shapes a runtime sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.artifact import Artifact
from embedder.batches import TokenBatch
from embedder.config import EncoderConfig, SessionConfig, session_config
from embedder.encoder import cosine_rows
from embedder.graph_runner import GraphRunner, bucket_width
from embedder.ort_session import session_options
from settings.loader import ConfigError

# Lengths from 1 token to past the tiny model's 24 (truncated), mixed so batches pad within themselves too.
TEXTS = ["a", "b c", "how do i reset my password", "refund " * 7, "billing address change " * 9, "x " * 40]


def encoder(artifact: Path, pad: int, backend: str = "onnxruntime") -> Encoder:
    session = SessionConfig(backend=backend, precision="fp32", pad_to_multiple=pad)
    return Encoder.load(artifact, config=EncoderConfig(session=session))


def test_bucket_width_rounds_up_within_the_model_length() -> None:
    assert [bucket_width(w, 8, 24) for w in (1, 8, 9, 17, 24)] == [8, 8, 16, 24, 24]
    assert bucket_width(250, 32, 256) == 256  # never past max_seq_length ...
    assert bucket_width(300, 32, 256) == 300  # ... nor shorter than the batch
    assert bucket_width(13, 0, 256) == bucket_width(13, 1, 256) == 13  # off


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_padded_buckets_give_the_unpadded_vectors(tiny_artifact: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    plain, padded = encoder(tiny_artifact, 0, backend), encoder(tiny_artifact, 8, backend)
    assert cosine_rows(plain.encode(TEXTS), padded.encode(TEXTS)).min() >= 1 - 1e-6
    assert {w for _, w in padded.backbone.shapes} <= {8, 16, 24}


@pytest.mark.slow  # exports MiniLM (torch) on a tree without artifacts/: not for the fast tier
def test_padded_buckets_give_the_unpadded_vectors_on_minilm(shipped_minilm: Path) -> None:
    texts = ["how do I change my delivery address?", "refund", "billing " * 70]
    plain, padded = encoder(shipped_minilm, 0), encoder(shipped_minilm, 32)
    assert cosine_rows(plain.encode(texts), padded.encode(texts)).min() >= 1 - 1e-6
    assert {w % 32 for _, w in padded.backbone.shapes} == {0}


def test_buckets_bound_the_distinct_shapes_reaching_the_session(tiny_artifact: Path) -> None:
    """Every length 1..24 at batch 1..3: 72 shapes unpadded, 3 x 3 with buckets of 8."""
    art = Artifact.load(tiny_artifact)
    runners = {
        pad: GraphRunner(art, SessionConfig(backend="onnxruntime", precision="fp32", pad_to_multiple=pad))
        for pad in (0, 8)
    }
    for runner in runners.values():
        for b in (1, 2, 3):
            for length in range(1, 25):
                ones = np.ones((b, length), np.int64)
                out = runner.run(TokenBatch(ones * 5, ones, ones * 0, np.arange(b)))
                assert out.token_embeddings.shape[:2] == (b, length)  # callers see their own width
    assert len(runners[0].shapes) == 72
    assert runners[8].shapes == {(b, w) for b in (1, 2, 3) for w in (8, 16, 24)}


def test_the_options_are_validated_and_reach_the_session() -> None:
    for bad in (-1, 513):
        with pytest.raises(ConfigError, match="pad_to_multiple"):
            session_config({"pad_to_multiple": bad})
    assert session_config({"pad_to_multiple": 32}).pad_to_multiple == 32
    assert session_options(SessionConfig()).enable_mem_pattern
    assert not session_options(SessionConfig(onnxruntime_mem_pattern=False)).enable_mem_pattern
