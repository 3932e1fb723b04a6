"""The transformer families the exporter knows: how each names its sizes, positions and inputs.

One table, so adding a family is one entry: which config keys hold width and heads, how many
positions are usable, whether onnxruntime's BERT fusion patterns apply, and whether it is a
decoder (causal attention, last-token pooling, no KV cache in the export).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError


@dataclass(frozen=True)
class Family:
    """What the exporter needs to know about one HF `model_type`."""

    name: str
    fuse: bool  # onnxruntime's "bert" optimizer fuses its attention/layer norms
    decoder: bool = False
    hidden_key: str = "hidden_size"
    heads_key: str = "num_attention_heads"
    # RoBERTa-style positions start after padding_idx: two fewer usable positions than declared.
    position_offset: int = 0

    def max_positions(self, hf_config: dict[str, Any]) -> int:
        """Tokens the position embeddings can take (RoPE families: what the config declares)."""
        declared = int(hf_config.get("max_position_embeddings", 512))
        return declared - self.position_offset


_LIST = (
    Family("bert", fuse=True),
    Family("roberta", fuse=True, position_offset=2),
    Family("xlm-roberta", fuse=True, position_offset=2),
    Family("camembert", fuse=True, position_offset=2),
    Family("electra", fuse=True),
    Family("distilbert", fuse=True, hidden_key="dim", heads_key="n_heads"),
    # MPNet's relative position bias and ModernBERT's RoPE + local attention are outside the BERT
    # fusion patterns: exported plain, onnxruntime still fuses what it can at load.
    Family("mpnet", fuse=False, position_offset=2),
    Family("modernbert", fuse=False),
    Family("qwen2", fuse=False, decoder=True),
    Family("qwen3", fuse=False, decoder=True),
    Family("mistral", fuse=False, decoder=True),
    Family("llama", fuse=False, decoder=True),
)
FAMILIES: dict[str, Family] = {f.name: f for f in _LIST}


def family_of(hf_config: dict[str, Any], where: Path) -> Family:
    """The family of a transformers config.json, or one line saying why it cannot be exported."""
    arch = str(hf_config.get("model_type", "?"))
    supported = ", ".join(sorted(FAMILIES))
    auto_map = hf_config.get("auto_map") or {}
    if auto_map:
        # nomic-bert, jina-bert, gte-new...: the model is code in the repository, not in transformers.
        raise ExportError(
            f"architecture {arch!r} ({where}) needs trust_remote_code (its model code ships with the "
            f"checkpoint: {sorted(auto_map)}); only transformers' own architectures are exported: {supported}"
        )
    if arch not in FAMILIES:
        raise ExportError(f"unsupported architecture {arch!r} in {where}; supported: {supported}")
    return FAMILIES[arch]
