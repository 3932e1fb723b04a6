"""onnxruntime sessions (CPU and CUDA): providers, options, fp16 at load, and where each node runs.

onnxruntime decides node placement itself and says little about it: `get_providers()` lists
what was registered, not where nodes run, and `run()` falls back to the CPU silently unless
`disable_fallback()` was called. So on CUDA this module profiles one pass at load, reads the
provider of every executed node from the profile, and refuses a session whose compute nodes
run on the CPU (PlacementError names them).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from embedder.config import SessionConfig
from embedder.cuda_libs import preload_cuda_libraries
from embedder.errors import ArtifactError, PlacementError, ProviderUnavailable

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Ops that carry the model's arithmetic. onnxruntime's CUDA provider keeps shape bookkeeping
# (Shape, Gather of shapes, Cast of masks, ...) on the CPU on purpose; those are not errors.
COMPUTE_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "Attention",
        "MultiHeadAttention",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "BiasGelu",
        "FastGelu",
        "Gelu",
        "Softmax",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QAttention",
        "QLinearMatMul",
        "QGemm",
        "DequantizeLinear",
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "ReduceMean",
        "ReduceSum",
    }
)


def provider_list(config: SessionConfig) -> list[tuple[str, dict[str, Any]]]:
    """onnxruntime (provider, options) pairs: CUDA first when asked, CPU last for shape bookkeeping."""
    result: list[tuple[str, dict[str, Any]]] = []
    for name in config.providers:
        key = name.strip().lower()
        if key not in PROVIDER_NAMES:
            raise ValueError(f"unknown execution provider {name!r}; expected one of {sorted(PROVIDER_NAMES)}")
        if key == "cuda":
            # use_tf32 0: fp32 means fp32 (TF32 is ~1e-3 relative; the fp32 probe floor would refuse it).
            opts = {"device_id": config.device_id, "use_tf32": 1 if config.cuda_tf32 else 0}
            result.append((PROVIDER_NAMES[key], opts))
    result.append(("CPUExecutionProvider", {}))
    return result


def session_options(config: SessionConfig, profile_prefix: str | None = None) -> ort.SessionOptions:
    """Threads, graph optimisation level, spinning, logging and (optionally) a one-pass profile."""
    if config.graph_optimization not in _OPT_LEVELS:
        raise ValueError(
            f"graph_optimization must be one of {sorted(_OPT_LEVELS)}, got {config.graph_optimization!r}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    opts.enable_mem_pattern = config.onnxruntime_mem_pattern
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    # On CUDA keep warnings (a node assigned to the CPU is logged at warning level); on the CPU
    # they only repeat what we know.
    opts.log_severity_level = 2 if config.wants_cuda else 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def fp16_model_bytes(path: Path) -> bytes:
    """The fp32 graph with fp16 weights and arithmetic, fp32 inputs and outputs (CUDA runtime precision).

    Uses onnxruntime's own converter (the one export uses for fp16 artifacts); it needs the `onnx`
    package, which the [gpu] extra installs.
    """
    try:
        import onnx
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError as exc:
        raise ProviderUnavailable(
            f"precision fp16 converts the graph at load and needs the onnx package ({exc}); "
            "pip install '.[gpu]'"
        ) from None
    model = OnnxModel(onnx.load(str(path)))
    model.convert_float_to_float16(keep_io_types=True)
    return bytes(model.model.SerializeToString())


def placement_from_profile(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """provider -> {op_type: executed node count} from onnxruntime profile events (one pass)."""
    seen: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args:
            continue
        seen[str(event.get("name", "")).removesuffix("_kernel_time")] = (
            str(args["provider"]),
            str(args.get("op_name", "?")),
        )
    counts: dict[str, Counter[str]] = {}
    for provider, op in seen.values():
        counts.setdefault(provider, Counter())[op] += 1
    return {provider: dict(sorted(ops.items())) for provider, ops in sorted(counts.items())}


def misplaced_compute(placement: dict[str, dict[str, int]], expected: str) -> dict[str, int]:
    """Compute ops (COMPUTE_OPS) that ran on a provider other than `expected`: {op_type: count}."""
    wrong: Counter[str] = Counter()
    for provider, ops in placement.items():
        if provider == expected:
            continue
        for op, count in ops.items():
            if op in COMPUTE_OPS:
                wrong[op] += count
    return dict(sorted(wrong.items()))


def probe_feeds(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """A small valid input (2 texts x 8 tokens of id 1) for every int64 input of a text encoder."""
    return {i.name: np.ones((2, 8), dtype=np.int64) for i in session.get_inputs()}


def profile_placement(session: ort.InferenceSession) -> dict[str, dict[str, int]]:
    """Run one pass on a profiling session, stop profiling, and return where each node ran."""
    session.run(None, probe_feeds(session))
    profile = Path(session.end_profiling())
    try:
        return placement_from_profile(json.loads(profile.read_text(encoding="utf-8")))
    finally:
        profile.unlink(missing_ok=True)


class OrtSession:
    """An onnxruntime InferenceSession with the checks above; `run` as InferenceSession.run."""

    backend = "onnxruntime"

    def __init__(self, path: Path, config: SessionConfig, precision: str) -> None:
        if not path.is_file():
            raise ArtifactError(f"ONNX model {path} does not exist")
        self.config = config
        providers = provider_list(config)
        check = config.wants_cuda and config.check_placement
        with tempfile.TemporaryDirectory(prefix="qm-profile-") as tmp:
            prefix = os.path.join(tmp, "placement") if check else None
            if config.wants_cuda:
                # onnxruntime-gpu[cuda,cudnn] ships CUDA/cuDNN as pip packages its provider cannot
                # find by itself; preload them (once per process) before the session asks.
                preload_cuda_libraries()
            model: str | bytes = str(path)
            if precision == "fp16" and config.wants_cuda:
                model = fp16_model_bytes(path)
            try:
                self.inner = ort.InferenceSession(
                    model, sess_options=session_options(config, prefix), providers=providers
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
                raise ArtifactError(f"onnxruntime cannot load {path}: {exc}") from exc
            self._require_providers(providers)
            self.placement: dict[str, dict[str, int]] = {}
            if config.wants_cuda:
                # A failing CUDA kernel must be an error, not a silent re-run on the CPU.
                self.inner.disable_fallback()
            if check:
                self.placement = profile_placement(self.inner)
                wrong = misplaced_compute(self.placement, PROVIDER_NAMES["cuda"])
                if wrong:
                    raise PlacementError(
                        f"{path}: compute nodes run on the CPU although providers=[cuda] was asked: "
                        f"{wrong} (int8 artifacts have no CUDA kernels: use the fp32 artifact with "
                        "precision fp16). Set session.check_placement=false to accept it."
                    )

    def _require_providers(self, providers: list[tuple[str, dict[str, Any]]]) -> None:
        # onnxruntime silently drops a provider whose libraries do not load; get_providers() is
        # what the session registered, so a missing name there is a missing provider.
        active = set(self.inner.get_providers())
        missing = [name for name, _ in providers if name not in active]
        if missing:
            raise ProviderUnavailable(
                f"requested execution provider(s) {missing} did not load (session uses {sorted(active)}; "
                f"this onnxruntime build offers {ort.get_available_providers()}). Install onnxruntime-gpu "
                "with matching CUDA/cuDNN (python -m embedder.cuda_libs checks them), or set providers to ['cpu']."
            )

    @property
    def providers(self) -> tuple[str, ...]:
        """What the session registered, in preference order."""
        return tuple(self.inner.get_providers())

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference."""
        return list(self.inner.run(output_names, feeds))
