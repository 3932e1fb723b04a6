"""Every model family, in both save formats: exported at fp32 parity with sentence-transformers itself.

Each tiny random model is built and saved by sentence-transformers (testkit.st_families), exported
by `python -m export`'s pipeline, then compared here, independently of the export's own check, on
held-out texts (CJK, emoji, one word, over max length) with onnxruntime and OpenVINO.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.cpu_features import cpu_flags
from embedder.encoder import cosine_rows
from export.errors import ExportError
from export.pipeline import ExportRequest, run_export
from testkit.st_families import FAMILIES, build_family_model, family_spec
from testkit.varied_texts import VARIED

pytestmark = pytest.mark.slow

FP32_MIN_COSINE = 0.99999  # the goal, per text
TEXTS = [*VARIED[:24], "refund", "🎉", "why " * 120]  # the last is over every tiny model's max length


def _st(model_dir: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, Path]]:
    """(family, save format) -> (model dir, artifact dir), built lazily and shared by the tests."""
    return {}


def _get(cache: dict, tmp_path_factory: pytest.TempPathFactory, family: str, fmt: str) -> tuple[Path, Path]:
    if (family, fmt) not in cache:
        base = tmp_path_factory.mktemp(f"{family}-{fmt}")
        model = build_family_model(family, base / "model", save_format=fmt)
        run_export(ExportRequest(model_dir=model, out_dir=base / "artifact"), log=lambda *_: None)
        cache[family, fmt] = (model, base / "artifact")
    return cache[family, fmt]


@pytest.mark.parametrize("fmt", ["current", "legacy"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_at_fp32_parity_on_onnxruntime(
    exported: dict, tmp_path_factory: pytest.TempPathFactory, family: str, fmt: str
) -> None:
    model_dir, artifact = _get(exported, tmp_path_factory, family, fmt)
    spec = family_spec(family)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["architecture"] == spec.architecture and manifest["pooling"] == spec.pooling
    assert manifest["dimension"] == (spec.dense_out or 32)
    assert manifest["prompts"] == spec.prompts
    st = _st(model_dir)
    assert manifest["max_seq_length"] == st.max_seq_length
    encoder = Encoder.load(artifact, backend="onnxruntime", precision="fp32")
    ours = encoder.encode(TEXTS)
    ref = np.asarray(st.encode(TEXTS, convert_to_numpy=True, batch_size=8))
    assert ours.shape == ref.shape
    assert cosine_rows(ours, ref).min() >= FP32_MIN_COSINE
    # A text alone gives the vector it gets inside a padded batch of all the others.
    alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
    assert cosine_rows(alone, ours).min() >= FP32_MIN_COSINE
    for name in spec.prompts:
        prompted = encoder.encode(TEXTS[:6], prompt_name=name)
        expected = np.asarray(st.encode(TEXTS[:6], prompt_name=name, convert_to_numpy=True))
        assert cosine_rows(prompted, expected).min() >= FP32_MIN_COSINE
        # The prompt is really there: unprompted vectors are other vectors.
        assert cosine_rows(prompted, ours[:6]).min() < 0.999


@pytest.mark.parametrize("family", FAMILIES)
def test_family_runs_on_openvino_fp32(
    exported: dict, tmp_path_factory: pytest.TempPathFactory, family: str
) -> None:
    pytest.importorskip("openvino")
    model_dir, artifact = _get(exported, tmp_path_factory, family, "current")
    ref = np.asarray(_st(model_dir).encode(TEXTS, convert_to_numpy=True, batch_size=8))
    encoder = Encoder.load(artifact, backend="openvino", precision="fp32")  # the probe is checked at load
    assert cosine_rows(encoder.encode(TEXTS), ref).min() >= FP32_MIN_COSINE


@pytest.mark.skipif(
    not ({"avx512_bf16", "amx_bf16"} & cpu_flags()), reason="not measurable here: this CPU has no bf16 units"
)
@pytest.mark.parametrize("family", ["bert", "xlm-roberta", "modernbert", "qwen3"])
def test_family_runs_on_openvino_bf16_at_its_probe_floor(
    exported: dict, tmp_path_factory: pytest.TempPathFactory, family: str
) -> None:
    pytest.importorskip("openvino")
    _, artifact = _get(exported, tmp_path_factory, family, "current")
    # Encoder.load re-embeds the probe and refuses below the bf16 floor: loading is the assertion.
    encoder = Encoder.load(artifact, backend="openvino", precision="bf16")
    assert encoder.runtime.precision == "bf16"


@pytest.mark.parametrize("family", ["bert-dense", "mpnet", "modernbert", "qwen3"])
def test_int8_is_kept_at_its_floor_or_refused_with_the_measured_figure(tmp_path: Path, family: str) -> None:
    model = build_family_model(family, tmp_path / "model")
    artifact = tmp_path / "int8"
    run_export(ExportRequest(model_dir=model, out_dir=artifact, precision="int8"), log=lambda *_: None)
    ref = np.asarray(_st(model).encode(TEXTS, convert_to_numpy=True, batch_size=8))
    ours = Encoder.load(artifact, backend="onnxruntime").encode(TEXTS)
    assert cosine_rows(ours, ref).min() >= 0.99  # the int8 floor, checked here on held-out texts
    # A floor the int8 graph cannot reach: refused, naming the measured figure, nothing written.
    with pytest.raises(ExportError, match=r"parity check failed: min cosine 0\.9\d+ < 0\.99999 for int8"):
        run_export(
            ExportRequest(
                model_dir=model, out_dir=tmp_path / "refused", precision="int8", min_cosine=0.99999
            ),
            log=lambda *_: None,
        )
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("family", ["mpnet", "modernbert", "qwen3"])
def test_fp16_conversion_of_plain_graphs_keeps_its_floor(tmp_path: Path, family: str) -> None:
    """The converter behind fp16 artifacts is the one CUDA's fp16 runtime precision applies at load."""
    model = build_family_model(family, tmp_path / "model")
    run_export(
        ExportRequest(model_dir=model, out_dir=tmp_path / "fp16", precision="fp16"), log=lambda *_: None
    )
    ref = np.asarray(_st(model).encode(TEXTS, convert_to_numpy=True, batch_size=8))
    ours = Encoder.load(tmp_path / "fp16", backend="onnxruntime").encode(TEXTS)
    assert cosine_rows(ours, ref).min() >= 0.999
