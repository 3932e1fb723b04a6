"""On a CUDA GPU (skipped elsewhere, see tests/conftest.py): the model's compute runs on CUDA, and
CUDA vectors match the artifact's stored probe vectors within the tolerance of their precision."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.config import EncoderConfig, SessionConfig
from embedder.encoder import probe_cosines
from embedder.probe import probe_floor

pytestmark = pytest.mark.gpu
# Op types that carry the arithmetic; any of them on the CPU would make a "GPU" run CPU-bound.
COMPUTE_OPS = {"MatMul", "Gemm", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
               "LayerNormalization", "EmbedLayerNormalization", "FastGelu", "Gelu", "BiasGelu"}  # fmt: skip


def cuda_encoder(artifact: Path, verify: bool = True, **session: object) -> Encoder:
    config = EncoderConfig(session=SessionConfig(providers=("cuda",), **session))  # type: ignore[arg-type]
    return Encoder.load(artifact, config=dataclasses.replace(config, verify_fingerprint=verify))


def test_compute_nodes_run_on_cuda(gpu_artifact: Path) -> None:
    enc = cuda_encoder(gpu_artifact)
    placement = getattr(enc.backbone.session, "placement", None) or enc.runtime.placement
    on_cuda = placement.get("CUDAExecutionProvider", {})
    on_cpu = placement.get("CPUExecutionProvider", {})
    assert set(on_cuda) & COMPUTE_OPS, placement
    assert not set(on_cpu) & COMPUTE_OPS, f"compute on the CPU: {on_cpu}"
    assert enc.runtime.device == "cuda"


@pytest.mark.parametrize(
    ("precision", "tf32"),
    [("fp32", False), ("fp32", True), ("fp16", False)],
    ids=["fp32", "fp32-tf32", "fp16"],
)
def test_probe_cosine_within_the_precisions_floor(gpu_artifact: Path, precision: str, tf32: bool) -> None:
    enc = cuda_encoder(gpu_artifact, verify=False, precision=precision, cuda_tf32=tf32)
    cos = probe_cosines(enc)
    floor = probe_floor(enc.runtime.tolerance_key)
    assert float(np.min(cos)) >= floor, f"{enc.runtime.tolerance_key}: min {np.min(cos):.7f} < {floor}"


def test_default_cuda_load_verifies_the_probe(gpu_artifact: Path) -> None:
    """The default (fp32, TF32 off) passes the fp32 floor, so GPU replicas are not refused as drift."""
    enc = cuda_encoder(gpu_artifact)
    assert enc.runtime.tolerance_key == "fp32"
    vectors = enc.encode(["how do I reset my password?", "where is my order"])
    assert vectors.shape == (2, enc.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
