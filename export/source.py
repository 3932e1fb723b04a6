"""Read what a sentence-transformers model directory says about itself, in any save format.

sentence-transformers 2-4 name modules `sentence_transformers.models.Transformer` and keep the
max length in sentence_bert_config.json; 5-6 name them `sentence_transformers.base.modules.
transformer.Transformer`, `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, ...
and keep the max length in the tokenizer's config (`model_max_length`). A module is read by what
it is (the class name at the end of its type), never by its dotted path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedder.head import ACTIVATIONS, activation_name
from export.errors import ExportError
from export.families import FAMILIES, Family, family_of

# Module kinds the pipeline understands; anything else (Router, StaticEmbedding, CNN, ...) is refused.
KNOWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# A tokenizer's "no limit" sentinel (transformers' VERY_LARGE_INTEGER) and anything near it.
_NO_LIMIT = 10**9


@dataclass(frozen=True)
class DenseSpec:
    """One Dense module after pooling: where its weights are and what it computes."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a key of embedder.head.ACTIVATIONS


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
    family: Family = FAMILIES["bert"]
    dense: tuple[DenseSpec, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    padding_side: str = "right"
    save_format: str = "sentence-transformers 2-4"

    @property
    def dimension(self) -> int:
        """Width of the final vectors (the last Dense layer's output, else the hidden size)."""
        return self.dense[-1].out_features if self.dense else self.hidden_size


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def _read_optional(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def module_kind(type_name: str) -> str:
    """'Transformer' for both 'sentence_transformers.models.Transformer' and '...modules.transformer.Transformer'."""
    return type_name.rsplit(".", 1)[-1]


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
    if config.get("include_prompt", True) is False:
        raise ExportError(
            "pooling excludes the prompt's tokens (include_prompt=false, INSTRUCTOR-style); not supported yet"
        )
    return mode


def _modules(root: Path) -> tuple[list[dict[str, Any]], str]:
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise ExportError(
            f"{root} is not a sentence-transformers model directory: modules.json is missing "
            "(export needs the transformer plus its 1_Pooling config)"
        )
    modules = _read_json(modules_file)
    kinds = [module_kind(str(m.get("type", ""))) for m in modules]
    unknown = [str(m.get("type")) for m, k in zip(modules, kinds, strict=True) if k not in KNOWN_MODULES]
    if unknown:
        raise ExportError(
            f"{root}: modules.json lists modules this exporter cannot run: {unknown}; "
            f"supported: {' -> '.join(KNOWN_MODULES)}"
        )
    order = [k for k in kinds if k != "Dense"]
    if order[:2] != ["Transformer", "Pooling"] or order[2:] not in ([], ["Normalize"]):
        raise ExportError(
            f"{root}: modules.json must be Transformer -> Pooling -> Dense* -> Normalize?; found {kinds}"
        )
    legacy = any(str(m.get("type", "")).startswith("sentence_transformers.models.") for m in modules)
    return modules, ("sentence-transformers 2-4" if legacy else "sentence-transformers 5-6")


def _dense(root: Path, module: dict[str, Any], in_features: int) -> DenseSpec:
    path = root / str(module.get("path", ""))
    config = _read_json(path / "config.json")
    torch_path = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    activation = activation_name(torch_path)
    if activation is None:
        raise ExportError(
            f"{path}: Dense activation {torch_path!r} is not supported; supported: {sorted(ACTIVATIONS)}"
        )
    if int(config["in_features"]) != in_features:
        raise ExportError(
            f"{path}: Dense takes {config['in_features']} features, its input has {in_features}"
        )
    return DenseSpec(
        path=path,
        in_features=int(config["in_features"]),
        out_features=int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        activation=activation,
    )


def _max_length(st_config: dict[str, Any], tok_config: dict[str, Any], hf_config: dict[str, Any]) -> int:
    """sentence_bert_config.json (2-4), else the tokenizer's model_max_length (5-6), else the positions."""
    positions = int(hf_config.get("max_position_embeddings", 512))
    declared = st_config.get("max_seq_length")
    if not declared:
        limit = tok_config.get("model_max_length")
        declared = limit if isinstance(limit, int | float) and 0 < limit < _NO_LIMIT else None
    return int(declared or positions)


def read_source(model_dir: str | Path) -> SourceModel:
    """Validate a sentence-transformers directory and read its whole pipeline, prompts and max length."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ExportError(f"model directory {root} does not exist")
    modules, save_format = _modules(root)
    by_kind = {module_kind(str(m["type"])): m for m in modules}
    transformer_path = root / str(by_kind["Transformer"].get("path", ""))
    hf_config = _read_json(transformer_path / "config.json")
    family = family_of(hf_config, transformer_path / "config.json")
    pooling_config = _read_json(root / str(by_kind["Pooling"]["path"]) / "config.json")
    st_config = _read_optional(transformer_path / "sentence_bert_config.json")
    hidden = int(hf_config.get(family.hidden_key) or hf_config["hidden_size"])
    dense: list[DenseSpec] = []
    for module in modules:
        if module_kind(str(module["type"])) == "Dense":
            dense.append(_dense(root, module, dense[-1].out_features if dense else hidden))
    tok_config = _read_optional(transformer_path / "tokenizer_config.json")
    max_len = min(_max_length(st_config, tok_config, hf_config), family.max_positions(hf_config))
    model_config = _read_optional(root / "config_sentence_transformers.json")
    prompts = {str(k): str(v) for k, v in (model_config.get("prompts") or {}).items() if v}
    default_name = model_config.get("default_prompt_name") or None
    return SourceModel(
        path=root,
        transformer_path=transformer_path,
        architecture=family.name,
        hidden_size=hidden,
        num_heads=int(hf_config.get(family.heads_key) or hf_config.get("num_attention_heads", 1)),
        pooling=pooling_mode(pooling_config),
        normalize="Normalize" in by_kind,
        max_seq_length=max_len,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pooling_config=pooling_config,
        family=family,
        dense=tuple(dense),
        prompts=prompts,
        default_prompt_name=str(default_name) if default_name in prompts else None,
        padding_side=str(tok_config.get("padding_side", "right")),
        save_format=save_format,
    )


def hash_weights(source: SourceModel) -> str:
    """sha256 of the weight and config files, naming exactly which source model was exported."""
    digest = hashlib.sha256()
    names = ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json")
    paths = [source.transformer_path / name for name in names]
    for spec in source.dense:
        paths += [spec.path / "model.safetensors", spec.path / "pytorch_model.bin", spec.path / "config.json"]
    for path in paths:
        if path.is_file():
            digest.update(str(path.relative_to(source.path)).encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]
