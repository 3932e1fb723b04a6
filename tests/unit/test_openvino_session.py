"""OpenVINO behind the session factory: the same artifact file, the same vectors (fp32), bf16 within
its tolerance, the drift guard still refusing a different model, safe under concurrent callers."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.artifact import Artifact
from embedder.config import EncoderConfig, SessionConfig
from embedder.cpu_features import cpu_flags, has_bf16_units
from embedder.encoder import cosine_rows, probe_cosines, verify_probe
from embedder.errors import ModelMismatch
from embedder.probe import PROBE_MIN_COSINE

pytest.importorskip("openvino")

TEXTS = ["short", "a somewhat longer question about billing and refunds", "x " * 30, "¿qué?"]


def test_openvino_fp32_reads_the_exported_graph_and_matches_onnxruntime(tiny_artifact: Path) -> None:
    ov = Encoder.load(
        tiny_artifact, backend="openvino", precision="fp32"
    )  # verifies the probe at fp32's floor
    ort = Encoder.load(tiny_artifact, backend="onnxruntime", precision="fp32")
    assert (ov.runtime.backend, ov.runtime.precision) == ("openvino", "fp32")
    assert cosine_rows(ov.encode(TEXTS), ort.encode(TEXTS)).min() >= PROBE_MIN_COSINE["fp32"]


def test_openvino_bf16_stays_within_the_bf16_tolerance(tiny_artifact: Path) -> None:
    enc = Encoder.load(tiny_artifact, backend="openvino", precision="bf16")
    if has_bf16_units(cpu_flags()):
        assert enc.runtime.precision == "bf16"
    assert probe_cosines(enc).min() >= PROBE_MIN_COSINE[enc.runtime.tolerance_key]


@pytest.mark.skipif(
    not has_bf16_units(cpu_flags()),
    reason="not measurable here: without bf16 units OpenVINO runs bf16 requests in fp32 (fp32's floor applies)",
)
def test_the_drift_guard_still_refuses_another_model_in_bf16(tiny_artifact: Path) -> None:
    """Vectors of another model (here: the stored probe rotated) are refused at bf16's looser floor."""
    art = Artifact.load(tiny_artifact)
    rng = np.random.default_rng(1)
    other = art.probe_vectors + rng.standard_normal(art.probe_vectors.shape).astype(np.float32) * 0.3
    wrong = dataclasses.replace(art, probe_vectors=other)
    cfg = EncoderConfig(session=SessionConfig(backend="openvino", precision="bf16"))
    with pytest.raises(ModelMismatch, match="minimum 0.9999 for bf16 on openvino"):
        verify_probe(Encoder(wrong, dataclasses.replace(cfg, verify_fingerprint=False)))


def test_concurrent_callers_get_their_own_results(tiny_artifact: Path) -> None:
    """The Serve scheduler runs passes from two threads: each must get its own texts' vectors."""
    enc = Encoder.load(tiny_artifact, backend="openvino", precision="fp32")
    singles = {t: enc.encode([t])[0] for t in TEXTS}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: (t, enc.encode([t])[0]), TEXTS * 10))
    for text, vector in results:
        assert np.allclose(vector, singles[text], atol=1e-6)


def test_threads_mean_threads_per_pass_as_for_onnxruntime() -> None:
    """Two 1-thread passes side by side (the Serve inline layout) need one OpenVINO stream each."""
    import os

    from embedder.openvino_session import streams_for

    cores = os.cpu_count() or 1
    assert streams_for(0) == 1  # one pass on every core
    assert streams_for(1) == cores
    assert streams_for(cores) == 1
