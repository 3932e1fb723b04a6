"""onnxruntime transformer optimizer: fuse attention and layer norms; optional fp16."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from onnxruntime.transformers.optimizer import optimize_model

from export.source import SourceModel


def optimize(source: SourceModel, in_path: Path, out_path: Path, fp16: bool = False) -> dict[str, int]:
    """Fuse the graph (offline, CPU) and return counts of fused operators for the manifest."""
    model = optimize_model(
        str(in_path),
        model_type="bert",  # the BERT fusion patterns also cover RoBERTa/XLM-R/MiniLM
        num_heads=source.num_heads,
        hidden_size=source.hidden_size,
        opt_level=1,  # fusion only; hardware-specific level-2+ rewrites happen at load
        use_gpu=False,
    )
    if fp16:
        # Keep fp32 inputs/outputs so callers never see half floats.
        model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path))
    ops = Counter(node.op_type for node in onnx.load(str(out_path), load_external_data=False).graph.node)
    wanted = (
        "Attention",
        "MultiHeadAttention",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "BiasGelu",
        "FastGelu",
        "Gelu",
    )
    return {op: ops[op] for op in wanted if ops[op]}
