"""Which nodes of an exported graph int8 quantization rewrites, and of what kind (export/quantize.py).

A target is a MatMul or Attention node with a constant 2-D weight; its kind, found from the
graph's structure (what produces its input, what consumes its output) rather than from node
names, decides how its activations are scaled: FFN-output MatMuls get the outlier-channel split.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

# Kinds of quantized node, found from the graph's structure (not from names).
ATTENTION_QKV = "attention_qkv"  # fused Attention: the Q/K/V projection
ATTENTION_OUTPUT = "attention_output"  # MatMul fed by an Attention output
FFN_INPUT = "ffn_input"  # MatMul whose output feeds the activation (Gelu)
FFN_OUTPUT = "ffn_output"  # MatMul fed by the activation
OTHER = "other"
_GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")
_ATTENTION_OPS = ("Attention",)
# What QAttention accepts of an Attention node: inputs (input, weights, bias, mask) and attributes.
_QATTENTION_INPUTS = 4
_QATTENTION_ATTRIBUTES = {"num_heads", "unidirectional", "mask_filter_value", "scale", "do_rotary"}


@dataclass(frozen=True)
class Target:
    """A node with constant weights that can run in int8."""

    node: onnx.NodeProto
    kind: str

    @property
    def activation(self) -> str:
        return str(self.node.input[0])

    @property
    def weight(self) -> str:
        return str(self.node.input[1])


def find_targets(graph: onnx.GraphProto) -> list[Target]:
    """MatMul / Attention nodes with a constant 2-D weight, in graph order, each with its kind."""
    weights = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    targets: list[Target] = []
    for node in graph.node:
        if node.op_type not in ("MatMul", *_ATTENTION_OPS) or len(node.input) < 2:
            continue
        weight = weights.get(node.input[1])
        if weight is None or len(weight.dims) != 2:
            continue
        if node.op_type in _ATTENTION_OPS and (
            len(node.input) > _QATTENTION_INPUTS
            or any(a.name not in _QATTENTION_ATTRIBUTES for a in node.attribute)
        ):
            continue  # past state, relative bias, uneven Q/K/V sizes...: left in fp32
        source = producer.get(node.input[0])
        if node.op_type in _ATTENTION_OPS:
            kind = ATTENTION_QKV
        elif source is not None and source.op_type in _ATTENTION_OPS:
            kind = ATTENTION_OUTPUT
        elif source is not None and source.op_type in _GELU_OPS:
            kind = FFN_OUTPUT
        elif any(c.op_type in _GELU_OPS for c in consumers.get(node.output[0], [])):
            kind = FFN_INPUT
        else:
            kind = OTHER
        targets.append(Target(node, kind))
    return targets
