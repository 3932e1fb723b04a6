"""int8 dynamic quantization with per-channel weights and targeted reduce-range.

Why targeted: on AVX2 CPUs without VNNI, the u8s8 GEMM can overflow int16 accumulators;
the attention-output projections suffer most. `reduce_range` (7-bit weights) on just those
avoids the overflow with no speed loss. When that is not enough, the most sensitive
FFN-output MatMuls are kept in fp32, chosen by measurement, not by hard-coded node names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic


@dataclass(frozen=True)
class Int8Scheme:
    """Which weights get 7-bit range and which MatMuls stay fp32."""

    reduce_range_weights: tuple[str, ...] = ()
    fp32_nodes: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def find_projection_matmuls(model_path: Path) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(attention-output MatMuls, FFN-output MatMuls) in layer order, found from the graph's structure."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    consumers = _consumers(graph)
    attention_out: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type in ("Attention", "MultiHeadAttention"):
            for nxt in consumers.get(node.output[0], []):
                if nxt.op_type == "MatMul" and nxt.input[1] in initializers:
                    attention_out.append(nxt)
    # FFN output: the MatMul fed by the activation (Gelu/BiasGelu/FastGelu) output.
    ffn_out: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type in ("Gelu", "BiasGelu", "FastGelu"):
            for nxt in consumers.get(node.output[0], []):
                if nxt.op_type == "MatMul" and nxt.input[1] in initializers:
                    ffn_out.append(nxt)
    return attention_out, ffn_out


def quantize(in_path: Path, out_path: Path, scheme: Int8Scheme) -> None:
    """Dynamic int8, per-channel weights, with the scheme's overrides."""
    overrides = {w: [{"axis": 1, "reduce_range": True}] for w in scheme.reduce_range_weights}
    quantize_dynamic(
        str(in_path),
        str(out_path),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=list(scheme.fp32_nodes),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "TensorQuantOverrides": overrides},
    )


def tune_int8(
    fp32_path: Path,
    out_path: Path,
    evaluate: Callable[[Path], float],
    target: float,
    max_fp32_nodes: int = 3,
) -> tuple[Int8Scheme, float]:
    """Quantize, measure min cosine to the source model, keep sensitive MatMuls in fp32 until `target`.

    Returns the scheme written to `out_path` and its min cosine.
    """
    attention_out, ffn_out = find_projection_matmuls(fp32_path)
    base = Int8Scheme(reduce_range_weights=tuple(n.input[1] for n in attention_out))
    quantize(fp32_path, out_path, base)
    best_score = evaluate(out_path)
    trials: list[dict[str, Any]] = [{"fp32_nodes": [], "min_cosine": best_score}]
    chosen: list[str] = []
    if best_score < target and ffn_out:
        # Sensitivity of each FFN-output MatMul measured alone, then kept in fp32 greedily.
        gains: list[tuple[float, str]] = []
        for node in ffn_out:
            quantize(fp32_path, out_path, Int8Scheme(base.reduce_range_weights, (node.name,)))
            score = evaluate(out_path)
            trials.append({"fp32_nodes": [node.name], "min_cosine": score})
            gains.append((score, node.name))
        for _score, name in sorted(gains, reverse=True)[:max_fp32_nodes]:
            candidate = [*chosen, name]
            quantize(fp32_path, out_path, Int8Scheme(base.reduce_range_weights, tuple(candidate)))
            score = evaluate(out_path)
            trials.append({"fp32_nodes": candidate, "min_cosine": score})
            if score > best_score:
                best_score, chosen = score, candidate
            if best_score >= target:
                break
    scheme = Int8Scheme(
        base.reduce_range_weights,
        tuple(chosen),
        {"target_min_cosine": target, "trials": trials, "attention_output_matmuls": len(attention_out)},
    )
    quantize(fp32_path, out_path, scheme)
    return scheme, best_score
