"""Session factory: how GPU providers are configured, and that a missing one is an error, not a CPU fallback."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from embedder.config import SessionConfig
from embedder.errors import ArtifactError, ProviderUnavailable
from embedder.session import create_session, provider_list


def test_cpu_only_by_default() -> None:
    assert provider_list(SessionConfig()) == [("CPUExecutionProvider", {})]


def test_cuda_and_tensorrt_are_configured_in_order_with_cpu_fallback(tmp_path: Path) -> None:
    cfg = SessionConfig(providers=("tensorrt", "cuda"), device_id=1, trt_fp16=True)
    providers = provider_list(cfg, cache_dir=tmp_path)
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = providers[0][1]
    assert trt["device_id"] == 1 and trt["trt_fp16_enable"] is True
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(tmp_path)
    assert providers[1][1] == {"device_id": 1}


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        provider_list(SessionConfig(providers=("rocm",)))


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="machine has CUDA")
def test_requesting_cuda_without_it_fails_instead_of_silently_using_cpu(tiny_artifact: Path) -> None:
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider.*did not load"):
        create_session(tiny_artifact / "model.onnx", SessionConfig(providers=("cuda",)))


def test_missing_or_corrupt_model_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        create_session(tmp_path / "nope.onnx", SessionConfig())
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot load"):
        create_session(bad, SessionConfig())
