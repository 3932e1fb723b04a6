"""Session factory: CUDA is configured as asked (TF32 off, no TensorRT), a missing provider or a
compute node on the wrong device is an error, never a silent CPU run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from embedder.artifact import Artifact
from embedder.config import SessionConfig, session_config
from embedder.encoder import cosine_rows
from embedder.errors import ArtifactError, ProviderUnavailable
from embedder.ort_session import (
    PROVIDER_NAMES,
    fp16_model_bytes,
    misplaced_compute,
    profile_placement,
    provider_list,
    session_options,
)
from embedder.session import create_session
from settings.loader import ConfigError


def test_cpu_only_by_default() -> None:
    assert provider_list(SessionConfig()) == [("CPUExecutionProvider", {})]


def test_cuda_is_first_with_tf32_off_unless_asked() -> None:
    providers = provider_list(SessionConfig(providers=("cuda",), device_id=1))
    assert providers == [
        ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0}),
        ("CPUExecutionProvider", {}),  # shape bookkeeping only: compute placement is checked
    ]
    tf32 = provider_list(SessionConfig(providers=("cuda",), cuda_tf32=True))
    assert tf32[0][1]["use_tf32"] == 1


def test_tensorrt_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SESSION_PROVIDERS", "tensorrt,cuda")
    with pytest.raises(ConfigError, match="QM_SESSION_PROVIDERS.*TensorRT support was removed"):
        session_config()


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        SessionConfig(providers=("rocm",))


def test_cuda_sessions_log_warnings_so_cpu_assignments_show() -> None:
    assert session_options(SessionConfig(providers=("cuda",))).log_severity_level == 2
    assert session_options(SessionConfig()).log_severity_level == 3


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="machine has CUDA")
def test_requesting_cuda_without_it_fails_instead_of_silently_using_cpu(tiny_artifact: Path) -> None:
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider.*did not load"):
        create_session(
            tiny_artifact / "model.onnx", SessionConfig(providers=("cuda",), backend="onnxruntime")
        )


def test_placement_profile_names_the_compute_nodes_a_cuda_session_would_have_lost(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    """The profile of a real pass says where every node ran; on this CPU-only build every compute
    node ran on the CPU, which is exactly what a CUDA session with fallback would show and refuse."""
    opts = session_options(SessionConfig(), profile_prefix=str(tmp_path / "p"))
    session = ort.InferenceSession(
        str(tiny_artifact / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    placement = profile_placement(session)
    assert set(placement) == {"CPUExecutionProvider"}
    assert not list(tmp_path.iterdir()), "the profile file is removed after reading"
    wrong = misplaced_compute(placement, PROVIDER_NAMES["cuda"])
    assert wrong.get("Attention", 0) + wrong.get("MatMul", 0) >= 2  # 2 layers: attention and FFN
    assert misplaced_compute(placement, "CPUExecutionProvider") == {}


def test_fp16_runtime_conversion_keeps_fp32_io_and_the_vectors(tiny_artifact: Path) -> None:
    """precision fp16 (CUDA) converts the fp32 graph at load; run here on the CPU provider to check
    the converted graph computes the same vectors within the fp16 tolerance."""
    art = Artifact.load(tiny_artifact)
    fp32 = ort.InferenceSession(str(art.model_path), providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(fp16_model_bytes(art.model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 90, size=(3, 12)).astype(np.int64)
    feeds = {i.name: ids if i.name == "input_ids" else np.ones_like(ids) for i in fp32.get_inputs()}
    a = fp32.run(None, feeds)[0]
    b = fp16.run(None, feeds)[0]
    assert b.dtype == np.float32
    flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    assert cosine_rows(flat_a, flat_b).min() >= 0.999


def test_missing_or_corrupt_model_file_is_an_artifact_error(tmp_path: Path) -> None:
    cfg = SessionConfig(backend="onnxruntime")
    with pytest.raises(ArtifactError, match="does not exist"):
        create_session(tmp_path / "nope.onnx", cfg)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot load"):
        create_session(bad, cfg)
