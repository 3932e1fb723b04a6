"""The fp32 MiniLM artifact reproduces frozen reference vectors (fastembed keeps canonical values per model).

tests/data/minilm_reference.json holds the first components of sentence-transformers' own vectors
for a few fixed texts (made by scripts/reference_vectors.py, not by this project's code). An
export, runtime or tokenizer change that moves the vectors fails here even when every other
check compares our code with itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder

pytestmark = pytest.mark.slow  # exports the real model once per session

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "minilm_reference.json").read_text("utf-8")
)
BACKENDS = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("openvino") is None, reason="openvino extra not installed"
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_artifact_reproduces_the_frozen_reference_vectors(minilm_artifact: Path, backend: str) -> None:
    encoder = Encoder.load(minilm_artifact, backend=backend, precision="fp32")
    assert (encoder.runtime.backend, encoder.runtime.precision) == (backend, "fp32")
    vectors = encoder.encode(REFERENCE["texts"])
    assert vectors.shape == (len(REFERENCE["texts"]), REFERENCE["dimension"])
    expected = np.asarray(REFERENCE["components"], dtype=np.float64)
    got = vectors[:, : expected.shape[1]].astype(np.float64)
    diff = np.abs(got - expected)
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff.max() <= 1e-4, (
        f"text #{worst[0]} {REFERENCE['texts'][worst[0]][:30]!r} component {worst[1]}: "
        f"{got[worst]:.7f} vs the reference's {expected[worst]:.7f}"
    )
