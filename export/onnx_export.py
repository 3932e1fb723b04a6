"""torch -> ONNX for the whole transformer, dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer

from export.errors import ExportError
from export.source import DenseSpec, SourceModel

OPSET = 17
# A Dense layer in torch, for artifacts that pool inside the graph: (weight, bias, activation name).
TorchDense = tuple[torch.Tensor, torch.Tensor | None, str]
# The same activations as embedder.head.ACTIVATIONS, in torch.
TORCH_ACTIVATIONS: dict[str, Any] = {
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
}


class _Wrapper(torch.nn.Module):
    """Calls the HF model with keyword arguments (transformers 5.x rejects positional ones)."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_names: list[str],
        pooling: str | None,
        normalize: bool,
        decoder: bool,
        dense: tuple[TorchDense, ...] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.pooling = pooling
        self.normalize = normalize
        # Decoders would build a KV cache for generation; an embedding needs none.
        self.extra: dict[str, Any] = {"use_cache": False} if decoder else {}
        self.dense = dense

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        hidden = self.model(**kwargs, **self.extra).last_hidden_state
        if self.pooling is None:
            return hidden
        mask = kwargs["attention_mask"]
        pooled = torch_pool(hidden, mask, self.pooling)
        for weight, bias, activation in self.dense:
            pooled = TORCH_ACTIVATIONS[activation](torch.nn.functional.linear(pooled, weight, bias))
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled


def torch_pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pooling in torch, mirroring embedder.pooling (used inside the fused graph)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, -1e9).max(1).values
    if mode == "lasttoken":
        last = (mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0]), last]
    raise ExportError(f"pooling {mode!r} cannot be placed in the graph")


def load_tokenizer(source: SourceModel) -> Any:
    """The source model's fast tokenizer (the one sentence-transformers uses)."""
    tok = AutoTokenizer.from_pretrained(str(source.transformer_path), use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{source.transformer_path}: no fast tokenizer (tokenizer.json) available")
    return tok


def export_onnx(
    source: SourceModel,
    out_path: Path,
    input_names: list[str],
    pooling_in_graph: bool,
    dense: tuple[TorchDense, ...] = (),
) -> str:
    """Write the fp32 graph; returns the output name ('token_embeddings' or 'sentence_embedding')."""
    try:
        model = AutoModel.from_pretrained(
            str(source.transformer_path), attn_implementation="eager", dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise ExportError(f"{source.transformer_path}: transformers cannot load the model: {exc}") from exc
    model.eval()
    pooling = source.pooling if pooling_in_graph else None
    wrapper = _Wrapper(
        model,
        input_names,
        pooling,
        source.normalize,
        source.family.decoder,
        dense if pooling_in_graph else (),
    )
    output_name = "sentence_embedding" if pooling_in_graph else "token_embeddings"
    # Example inputs of batch 2 and length 8; the axes are declared dynamic so any shape works.
    example = tuple(torch.ones((2, 8), dtype=torch.long) for _ in input_names)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[output_name] = {0: "batch"} if pooling_in_graph else {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns at every Python branch on a tensor value in transformers' masking code,
        # and at the opset-17 advanced-indexing rewrite: both say "the graph may not generalise to
        # other shapes", which the pipeline then checks itself (parity against sentence-transformers
        # on varied lengths, each text alone vs in a padded batch) and refuses the artifact if not.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            wrapper,
            example,
            str(out_path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return output_name


def dense_weights(spec: DenseSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Dense module's (weight, bias) from model.safetensors (ST 3+) or pytorch_model.bin (ST 2)."""
    safetensors_file, bin_file = spec.path / "model.safetensors", spec.path / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors_file))
    elif bin_file.is_file():
        state = torch.load(str(bin_file), map_location="cpu", weights_only=True)
    else:
        raise ExportError(f"{spec.path}: Dense weights missing (model.safetensors or pytorch_model.bin)")
    weight = state.get("linear.weight")
    if weight is None or tuple(weight.shape) != (spec.out_features, spec.in_features):
        raise ExportError(
            f"{spec.path}: expected linear.weight of shape {(spec.out_features, spec.in_features)}, "
            f"found {None if weight is None else tuple(weight.shape)}"
        )
    bias = state.get("linear.bias") if spec.bias else None
    return weight.float(), None if bias is None else bias.float()
