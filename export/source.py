"""Read what a sentence-transformers model directory says about itself."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.errors import ExportError

# BERT-family encoders whose graphs onnxruntime's "bert" optimizer fuses.
SUPPORTED_ARCHITECTURES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class SourceModel:
    """A validated sentence-transformers model directory."""

    path: Path
    transformer_path: Path
    architecture: str
    hidden_size: int
    num_heads: int
    pooling: str
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    pooling_config: dict[str, Any]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def pooling_mode(config: dict[str, Any]) -> str:
    """Our pooling name from a 1_Pooling/config.json (old boolean keys or the newer 'pooling_mode')."""
    if isinstance(config.get("pooling_mode"), str):
        mode = config["pooling_mode"].replace("_tokens", "").replace("_token", "")
        mode = {"lasttoken": "lasttoken", "last": "lasttoken"}.get(mode, mode)
    else:
        flags = {
            "cls": config.get("pooling_mode_cls_token", False),
            "mean": config.get("pooling_mode_mean_tokens", False),
            "max": config.get("pooling_mode_max_tokens", False),
            "lasttoken": config.get("pooling_mode_lasttoken", False),
            "mean_sqrt_len": config.get("pooling_mode_mean_sqrt_len_tokens", False),
            "weightedmean": config.get("pooling_mode_weightedmean_tokens", False),
        }
        chosen = [k for k, v in flags.items() if v]
        if len(chosen) != 1:
            raise ExportError(
                f"pooling config selects {chosen or 'no'} modes; exactly one of cls/mean/max/lasttoken is supported"
            )
        mode = chosen[0]
    if mode not in {"mean", "cls", "max", "lasttoken"}:
        raise ExportError(f"pooling mode {mode!r} is not supported (mean, cls, max, lasttoken are)")
    return mode


def read_source(model_dir: str | Path) -> SourceModel:
    """Validate a sentence-transformers directory and read pooling, normalisation and max length."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ExportError(f"model directory {root} does not exist")
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise ExportError(
            f"{root} is not a sentence-transformers model directory: modules.json is missing "
            "(export needs the transformer plus its 1_Pooling config)"
        )
    modules = _read_json(modules_file)
    by_type = {m.get("type"): m for m in modules}
    if _ST_TRANSFORMER not in by_type or _ST_POOLING not in by_type:
        found = [m.get("type") for m in modules]
        raise ExportError(f"{root}: modules.json must list a Transformer and a Pooling module; found {found}")
    transformer_path = root / by_type[_ST_TRANSFORMER].get("path", "")
    pooling_config = _read_json(root / by_type[_ST_POOLING]["path"] / "config.json")
    hf_config = _read_json(transformer_path / "config.json")
    arch = str(hf_config.get("model_type", "?"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"unsupported architecture {arch!r} in {transformer_path / 'config.json'}; "
            f"supported: {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    st_config_file = transformer_path / "sentence_bert_config.json"
    st_config = _read_json(st_config_file) if st_config_file.is_file() else {}
    max_len = int(st_config.get("max_seq_length") or hf_config.get("max_position_embeddings", 512))
    if arch in {"roberta", "xlm-roberta", "camembert"}:
        # RoBERTa positions start after padding_idx, so usable length is max_position_embeddings - 2.
        max_len = min(max_len, int(hf_config.get("max_position_embeddings", 514)) - 2)
    return SourceModel(
        path=root,
        transformer_path=transformer_path,
        architecture=arch,
        hidden_size=int(hf_config["hidden_size"]),
        num_heads=int(hf_config["num_attention_heads"]),
        pooling=pooling_mode(pooling_config),
        normalize=_ST_NORMALIZE in by_type,
        max_seq_length=max_len,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pooling_config=pooling_config,
    )


def hash_weights(source: SourceModel) -> str:
    """sha256 of the weight and config files, naming exactly which source model was exported."""
    digest = hashlib.sha256()
    names = ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json")
    for name in names:
        path = source.transformer_path / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]
