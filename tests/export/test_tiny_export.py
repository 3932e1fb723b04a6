"""Tiny random BERT: the exported artifact is exactly the model (torch + numpy reference)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.errors import ArtifactError, EmptyInput, InputTooLong, ModelMismatch
from embedder.pooling import l2_normalize, pool
from export.errors import ExportError
from export.pipeline import ExportRequest, run_export
from testkit.tiny_model import export_tiny, make_tiny_st_model

TEXTS = [
    "how do i reset my password",
    "what is the capital of france?",
    "refund",
    "如何重置我的密码",
    "order 12345 shipping take long",
    "a " * 40,  # longer than max_seq_length (24): truncated
    "北京 is the capital of 中国",
]


def _reference(model_dir: Path, texts: list[str], mode: str, normalize: bool, max_len: int) -> np.ndarray:
    # Imported here: only the slow tests need torch, and the fast tier never loads it.
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state.numpy()
    vectors = pool(hidden, enc["attention_mask"].numpy(), mode)
    return l2_normalize(vectors) if normalize else vectors


@pytest.mark.slow  # one export and a torch reference per pooling mode: 3-7 s each
@pytest.mark.parametrize(
    ("mode", "normalize"), [("mean", True), ("cls", False), ("max", True), ("lasttoken", False)]
)
def test_artifact_equals_torch_plus_numpy_reference(tmp_path: Path, mode: str, normalize: bool) -> None:
    model_dir = make_tiny_st_model(tmp_path / "m", pooling=mode, normalize=normalize)
    artifact = export_tiny(model_dir, tmp_path / "a")
    encoder = Encoder.load(artifact)
    ours = encoder.encode(TEXTS)
    expected = _reference(model_dir, TEXTS, mode, normalize, max_len=24)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["pooling"] == mode and manifest["normalize"] is normalize
    assert manifest["parity"]["min_cosine"] >= 0.99999
    assert manifest["fingerprint"].startswith("sha256:")


def test_vector_does_not_depend_on_batch_companions(tiny_artifact: Path) -> None:
    encoder = Encoder.load(tiny_artifact)
    together = encoder.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = encoder.encode([text])[0]
        assert np.abs(alone - together[i]).max() <= 1e-5
    reversed_ = encoder.encode(TEXTS[::-1])[::-1]
    assert np.abs(reversed_ - together).max() <= 1e-5


def test_tiny_batches_give_the_same_vectors_as_one_big_batch(tiny_artifact: Path) -> None:
    from embedder.config import BatchConfig

    big = Encoder.load(tiny_artifact).encode(TEXTS * 5)
    small = Encoder.load(tiny_artifact, batch=BatchConfig(batch_tokens=30, max_batch_size=2)).encode(
        TEXTS * 5
    )
    assert np.abs(big - small).max() <= 1e-5


def test_empty_list_empty_string_and_too_long(tiny_artifact: Path) -> None:
    encoder = Encoder.load(tiny_artifact)
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(EmptyInput, match=r"input\[1\]"):
        encoder.encode(["fine", ""])
    with pytest.raises(InputTooLong) as info:
        encoder.encode(["a " * 40], truncate=False)
    assert info.value.token_count == 42 and info.value.max_tokens == 24
    result = encoder.encode_detailed(["a " * 40, "refund"])
    assert result.truncated.tolist() == [True, False]
    assert result.token_counts.tolist()[0] == 42


@pytest.mark.slow  # a second export, with pooling in the graph: ~2 s
def test_pooling_in_graph_gives_the_same_vectors(
    tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    fused = export_tiny(tiny_model_dir, tmp_path / "fused", pooling_in_graph=True)
    a = Encoder.load(fused).encode(TEXTS)
    b = Encoder.load(tiny_artifact).encode(TEXTS)
    assert np.abs(a - b).max() <= 1e-5
    assert json.loads((fused / "manifest.json").read_text())["output_name"] == "sentence_embedding"


def test_edited_tokenizer_is_detected(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_artifact, tmp_path / "edited")
    tok = json.loads((copy / "tokenizer.json").read_text())
    tok["normalizer"] = None  # e.g. someone "fixed" lowercasing
    (copy / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ModelMismatch, match="edited or corrupted"):
        Encoder.load(copy)


def test_drifting_runtime_is_detected_by_the_probe(tiny_artifact: Path, tmp_path: Path) -> None:
    """Files intact (hash re-sealed) but vectors differ: what a different onnxruntime build would cause."""
    from embedder.artifact import Artifact, compute_fingerprint

    copy = shutil.copytree(tiny_artifact, tmp_path / "drift")
    probe = np.load(copy / "probe_vectors.npy")
    probe[0] = -probe[0]
    np.save(copy / "probe_vectors.npy", probe)
    manifest = Artifact.load(copy, verify_files=False).manifest
    data = json.loads((copy / "manifest.json").read_text())
    data["fingerprint"] = compute_fingerprint(copy, manifest)
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelMismatch, match="probe text 0.*refusing"):
        Encoder.load(copy)


def test_incomplete_artifact_names_missing_files(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_artifact, tmp_path / "partial")
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing model.onnx"):
        Encoder.load(copy)


def test_export_refuses_non_sentence_transformers_dir(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ExportError, match="not a sentence-transformers model directory"):
        run_export(ExportRequest(tmp_path / "plain", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_export_refuses_unsupported_architecture(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "gpt")
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "gpt2"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="unsupported architecture 'gpt2'"):
        run_export(ExportRequest(model, tmp_path / "out"))


@pytest.mark.slow  # traces the model with torch: the one fast-tier test that would import it (~3 s)
def test_failed_parity_leaves_no_artifact(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="parity check failed"):
        run_export(ExportRequest(tiny_model_dir, out, min_cosine=1.5), log=lambda *_: None)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


@pytest.mark.slow  # ~5 s: three CLI subprocesses
def test_cli_exit_codes_and_messages(tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    lines = tmp_path / "lines.txt"
    lines.write_text("how do i reset my password\nrefund\n如何重置我的密码\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    encode_cmd = [
        sys.executable,
        "-m",
        "embedder",
        "encode",
        str(tiny_artifact),
        "--input",
        str(lines),
        "--output",
        str(out),
    ]
    ok = subprocess.run(encode_cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    vectors = np.load(out)
    expected = Encoder.load(tiny_artifact).encode(
        ["how do i reset my password", "refund", "如何重置我的密码"]
    )
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    lines.write_text("ok\n\nafter blank\n", encoding="utf-8")
    blank = subprocess.run(encode_cmd, capture_output=True, text=True)
    assert blank.returncode == 2 and "input[1]" in blank.stderr
