"""onnxruntime transformer optimizer: fuse attention and layer norms where the family allows; optional fp16."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

from export.source import SourceModel

_FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "RotaryEmbedding",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


def optimize(
    source: SourceModel, in_path: Path, out_path: Path, fp16: bool = False, fuse: bool = True
) -> dict[str, int]:
    """Fuse the graph (offline, CPU) when asked and the family allows; return counts of fused operators."""
    if fuse and source.family.fuse:
        model = optimize_model(
            str(in_path),
            model_type="bert",  # the BERT fusion patterns cover BERT/RoBERTa/XLM-R/ELECTRA/DistilBERT/MiniLM
            num_heads=source.num_heads,
            hidden_size=source.hidden_size,
            opt_level=1,  # fusion only; hardware-specific level-2+ rewrites happen at load
            use_gpu=False,
        )
    else:
        # Plain graph: onnxruntime still applies its own graph optimisations when a session loads it.
        model = OnnxModel(onnx.load(str(in_path)))
    if fp16:
        # Keep fp32 inputs/outputs so callers never see half floats.
        model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path))
    ops = Counter(node.op_type for node in onnx.load(str(out_path), load_external_data=False).graph.node)
    return {op: ops[op] for op in _FUSED_OPS if ops[op]}
