"""The tiny model families: both save layouts load, agree vector for vector, and keep each family's quirks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testkit.st_families import (
    FAMILIES,
    LEGACY_MODEL_MAX_LENGTH,
    SAVE_FORMATS,
    build_family_model,
    family_spec,
)

pytestmark = pytest.mark.slow

MAX_LEN = 48
LONG = ("This is a very long question that keeps going and going. " * 12).strip()  # > 48 tokens everywhere
TEXTS = [
    "How do I reset my password?",
    "Can I return an item without the receipt?",
    "如何重置我的密码",
    "北京是中国的首都吗",
    "ok 👍",
    "refund",
    "¿Cuánto cuesta el envío?",
    LONG,
]
DECODERS = [f for f in FAMILIES if family_spec(f).decoder]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[Path, Any]]:
    """(directory, SentenceTransformer) per family and layout, built once per module."""
    from sentence_transformers import SentenceTransformer

    cache: dict[tuple[str, str], tuple[Path, Any]] = {}

    def get(family: str, save_format: str) -> tuple[Path, Any]:
        if (family, save_format) not in cache:
            out = tmp_path_factory.mktemp(f"{family}-{save_format}") / "model"
            build_family_model(family, out, save_format=save_format, seed=0, max_seq_length=MAX_LEN)
            cache[family, save_format] = (out, SentenceTransformer(str(out), device="cpu"))
        return cache[family, save_format]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_legacy_and_current_layouts_give_the_same_vectors(
    family: str, loaded: Callable[[str, str], tuple[Path, Any]]
) -> None:
    # Each layout is built from scratch: equal vectors also prove the build is deterministic.
    vectors = {fmt: loaded(family, fmt)[1].encode(TEXTS, convert_to_numpy=True) for fmt in SAVE_FORMATS}
    spec = family_spec(family)
    assert vectors["current"].shape == (len(TEXTS), spec.dense_out or 32)
    assert np.abs(vectors["current"] - vectors["legacy"]).max() <= 1e-6
    for fmt in SAVE_FORMATS:
        model = loaded(family, fmt)[1]
        assert model.max_seq_length == MAX_LEN, fmt
        # The limit is applied, not just reported: the long text is cut to it.
        assert model.preprocess([LONG])["input_ids"].shape[1] == MAX_LEN, fmt


@pytest.mark.parametrize("family", FAMILIES)
def test_vectors_differ_by_text(family: str, loaded: Callable[[str, str], tuple[Path, Any]]) -> None:
    v = loaded(family, "current")[1].encode(TEXTS, convert_to_numpy=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    cosines = (v @ v.T)[np.triu_indices(len(TEXTS), 1)]
    assert cosines.min() < 0.95


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_round_trip(family: str, loaded: Callable[[str, str], tuple[Path, Any]]) -> None:
    spec = family_spec(family)
    for fmt in SAVE_FORMATS:
        model = loaded(family, fmt)[1]
        assert spec.prompts.items() <= model.prompts.items(), fmt
        assert model.default_prompt_name == spec.default_prompt_name, fmt


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_json_tokenizes_like_the_loaded_tokenizer(
    family: str, loaded: Callable[[str, str], tuple[Path, Any]]
) -> None:
    # transformers 5 rebuilds most tokenizer classes from the vocabulary on load; a reader of
    # tokenizer.json alone (the runtime) must still get the same ids.
    from tokenizers import Tokenizer

    directory, model = loaded(family, "current")
    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for text in TEXTS:
        assert raw.encode(text).ids == model.tokenizer(text)["input_ids"], text


@pytest.mark.parametrize("family", FAMILIES)
def test_legacy_layout_is_the_old_one(family: str, loaded: Callable[[str, str], tuple[Path, Any]]) -> None:
    directory = loaded(family, "legacy")[0]

    def read(name: str) -> Any:
        return json.loads((directory / name).read_text(encoding="utf-8"))

    modules = read("modules.json")
    assert all(m["type"].startswith("sentence_transformers.models.") for m in modules)
    # Self-contained: no folder but the modules' own (the HF build folder lives elsewhere).
    assert {p.name for p in directory.iterdir() if p.is_dir()} <= {m["path"] for m in modules}
    assert read("sentence_bert_config.json") == {"max_seq_length": MAX_LEN, "do_lower_case": False}
    assert read("tokenizer_config.json")["model_max_length"] == LEGACY_MODEL_MAX_LENGTH
    pooling = read("1_Pooling/config.json")
    mode_key = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "lasttoken": "lasttoken"}
    assert [k for k, on in pooling.items() if k.startswith("pooling_mode_") and on] == [
        f"pooling_mode_{mode_key[family_spec(family).pooling]}"
    ]
    assert read("config_sentence_transformers.json")["__version__"]["sentence_transformers"] == "3.4.1"


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_tokenizer_appends_eos(family: str, loaded: Callable[[str, str], tuple[Path, Any]]) -> None:
    model = loaded(family, "current")[1]
    tokenizer = model.tokenizer
    eos = tokenizer.eos_token_id
    assert tokenizer.eos_token == {"qwen3": "<|endoftext|>", "mistral": "</s>"}[family]
    for text in TEXTS:
        assert tokenizer(text)["input_ids"][-1] == eos, text
    features = model.preprocess(["refund", LONG])
    ids, mask = features["input_ids"], features["attention_mask"]
    # Truncation keeps the EOS: last-token pooling reads it even for over-long texts.
    assert ids[1, -1] == eos
    if family == "qwen3":
        assert tokenizer.padding_side == "left"
        assert mask[0, 0] == 0 and ids[0, -1] == eos
    else:
        assert tokenizer.padding_side == "right"
        assert mask[0, -1] == 0 and ids[0, int(mask[0].sum()) - 1] == eos


def test_seed_changes_the_weights(tmp_path: Path, loaded: Callable[[str, str], tuple[Path, Any]]) -> None:
    from sentence_transformers import SentenceTransformer

    other = SentenceTransformer(str(build_family_model("bert", tmp_path / "m", seed=1)), device="cpu")
    base = loaded("bert", "current")[1]
    assert np.abs(other.encode(TEXTS[:2]) - base.encode(TEXTS[:2])).max() > 1e-3
