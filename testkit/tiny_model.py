"""A tiny random BERT sentence-transformers model, built inside tests (no hub, seconds to make).

torch and transformers are imported by the functions that build, not by this module: a test
module that imports it for a slow test costs the fast tier nothing (testkit.tiny_cache serves
the suite's shared tiny models without building them on a warm run).
"""

from __future__ import annotations

import json
from pathlib import Path

_WORDS = [
    "how",
    "do",
    "i",
    "reset",
    "my",
    "password",
    "what",
    "is",
    "the",
    "capital",
    "of",
    "france",
    "can",
    "return",
    "an",
    "item",
    "where",
    "order",
    "refund",
    "shipping",
    "long",
    "take",
    "does",
    "it",
    "a",
    "to",
    "of",
    "and",
    "in",
    "for",
    "is",
    "on",
    "with",
    "this",
    "that",
]
# CJK characters: BERT's basic tokenizer splits each into its own token.
_CJK = list("如何重置我的密码北京是中国首都吗订单什么时候发货东京")
_PIECES = ["##s", "##ing", "##ed", "##er", "##ly"]


def _vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789?.,!'-#@:/")
    return specials + chars + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + _PIECES + _WORDS + _CJK


def make_tiny_st_model(
    directory: Path,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 24,
    seed: int = 0,
) -> Path:
    """Write a 2-layer, 32-wide random BERT as a sentence-transformers directory."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]  # lazy module

    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(_vocab()))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(str(directory))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (directory / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), encoding="utf-8"
    )
    (directory / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": pooling == "lasttoken",
    }
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config), encoding="utf-8")
    return directory


def make_prompted_st_model(directory: Path) -> Path:
    """The tiny model with e5-style prompts ("query: ", "document": "passage: ", no default)."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # lazy module

    model = make_tiny_st_model(directory)
    # make_tiny_st_model's BertTokenizerFast(vocab_file=...) is ignored by transformers 5 (a 5-token
    # vocabulary: every word is [UNK]), so "query: " and "passage: " would be the same two tokens.
    # The real vocabulary here makes prompts of the same length tokenize differently.
    BertTokenizerFast(vocab=str(model / "vocab.txt"), do_lower_case=True).save_pretrained(str(model))
    prompts = {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}
    (model / "config_sentence_transformers.json").write_text(json.dumps(prompts), encoding="utf-8")
    return model


def export_tiny(model_dir: Path, out_dir: Path, **kwargs: object) -> Path:
    """Export a tiny model to an artifact directory (fp32 unless told otherwise)."""
    from export.pipeline import ExportRequest, run_export

    run_export(ExportRequest(model_dir=model_dir, out_dir=out_dir, **kwargs), log=lambda *_: None)  # type: ignore[arg-type]
    return out_dir
