"""The one place that builds an onnxruntime InferenceSession."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from embedder.config import SessionConfig
from embedder.errors import ArtifactError, ProviderUnavailable

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def provider_list(config: SessionConfig, cache_dir: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """onnxruntime (provider, options) pairs for the config, CPU always last as the fallback for unsupported ops."""
    result: list[tuple[str, dict[str, Any]]] = []
    for name in config.providers:
        key = name.strip().lower()
        if key not in PROVIDER_NAMES:
            raise ValueError(f"unknown execution provider {name!r}; expected one of {sorted(PROVIDER_NAMES)}")
        if key == "tensorrt":
            opts: dict[str, Any] = {
                "device_id": config.device_id,
                "trt_fp16_enable": config.trt_fp16,
                # Engines take minutes to build; cache them beside the artifact.
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir or Path(".")),
            }
            result.append((PROVIDER_NAMES[key], opts))
        elif key == "cuda":
            result.append((PROVIDER_NAMES[key], {"device_id": config.device_id}))
    result.append(("CPUExecutionProvider", {}))
    return result


def session_options(config: SessionConfig) -> ort.SessionOptions:
    """Thread count and graph optimisation level from the config."""
    if config.graph_optimization not in _OPT_LEVELS:
        raise ValueError(
            f"graph_optimization must be one of {sorted(_OPT_LEVELS)}, got {config.graph_optimization!r}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    opts.log_severity_level = 3  # keep provider-fallback warnings out of logs; we check providers ourselves
    return opts


def create_session(model_path: str | Path, config: SessionConfig) -> ort.InferenceSession:
    """Build a session and fail clearly when a requested GPU provider did not load.

    onnxruntime silently falls back to CPU when CUDA/TensorRT cannot load, so the check is on
    `session.get_providers()` (what the session uses), not on what the wheel could offer.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model {path} does not exist")
    providers = provider_list(config, cache_dir=path.parent / "trt_cache")
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(config), providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ArtifactError(f"onnxruntime cannot load {path}: {exc}") from exc
    active = set(session.get_providers())
    missing = [name for name, _ in providers if name not in active]
    if missing:
        raise ProviderUnavailable(
            f"requested execution provider(s) {missing} did not load (session uses {sorted(active)}; "
            f"this onnxruntime build offers {ort.get_available_providers()}). Install onnxruntime-gpu "
            "with matching CUDA/cuDNN, or set providers to ['cpu']."
        )
    return session
