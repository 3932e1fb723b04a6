"""Tiny random sentence-transformers models, one per model family, saved by sentence-transformers itself.

Each family gets a 2-layer, 32-wide random backbone of its own architecture and a tokenizer trained
offline with `tokenizers` that follows the family's real conventions (special-token ids, padding side,
token_type_ids or not, position offsets, appended EOS). "current" is the layout sentence-transformers 6
writes; "legacy" rewrites it into the 2.x-4.x layout most hub models still have.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers import models as tok_models

FAMILIES: tuple[str, ...] = (
    "bert",
    "bert-dense",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "mpnet",
    "electra",
    "modernbert",
    "qwen3",
    "mistral",
)

SAVE_FORMATS: tuple[str, ...] = ("current", "legacy")

# Usable tokens per text for every family; families with RoBERTa-style positions get 2 more slots.
MAX_TOKENS = 128
# What old hub tokenizers wrote when they had no limit (int(1e30) as a float): the legacy layout
# keeps the real limit only in sentence_bert_config.json, so a reader looking here gets it wrong.
LEGACY_MODEL_MAX_LENGTH = 1000000000000000019884624838656
LEGACY_ST_VERSION = "3.4.1"

_QUERY_DOCUMENT = {"query": "query: ", "document": "passage: "}
_QWEN3_PROMPTS = {"query": "Instruct: Given a question, retrieve similar questions\nQuery: "}


@dataclass(frozen=True)
class FamilySpec:
    """What a family's tiny model looks like from the outside (pooling, prompts, head)."""

    family: str
    architecture: str  # HF model_type, e.g. "bert", "qwen3"
    pooling: str  # "mean" | "cls" | "max" | "lasttoken"
    prompts: dict[str, str]  # may be empty
    default_prompt_name: str | None
    dense_out: int | None  # out_features of a Dense module, or None
    decoder: bool


_SPECS: dict[str, FamilySpec] = {
    "bert": FamilySpec("bert", "bert", "cls", dict(_QUERY_DOCUMENT), None, None, False),
    "bert-dense": FamilySpec("bert-dense", "bert", "mean", {}, None, 24, False),
    "roberta": FamilySpec("roberta", "roberta", "mean", {}, None, None, False),
    # multilingual-e5 style: the second prompt is "passage", not "document".
    "xlm-roberta": FamilySpec(
        "xlm-roberta", "xlm-roberta", "mean", {"query": "query: ", "passage": "passage: "}, None, None, False
    ),
    "camembert": FamilySpec("camembert", "camembert", "mean", {}, None, None, False),
    "distilbert": FamilySpec("distilbert", "distilbert", "mean", {}, None, None, False),
    "mpnet": FamilySpec("mpnet", "mpnet", "mean", {}, None, None, False),
    "electra": FamilySpec("electra", "electra", "mean", {}, None, None, False),
    "modernbert": FamilySpec("modernbert", "modernbert", "mean", dict(_QUERY_DOCUMENT), None, None, False),
    "qwen3": FamilySpec("qwen3", "qwen3", "lasttoken", dict(_QWEN3_PROMPTS), None, None, True),
    "mistral": FamilySpec("mistral", "mistral", "lasttoken", {}, None, None, True),
}


def family_spec(family: str) -> FamilySpec:
    """The spec of one family; ValueError for an unknown name."""
    try:
        spec = _SPECS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}") from None
    # A copy of the prompts, so a caller editing them cannot change the next model built.
    return FamilySpec(
        spec.family,
        spec.architecture,
        spec.pooling,
        dict(spec.prompts),
        spec.default_prompt_name,
        spec.dense_out,
        spec.decoder,
    )


# Training text for every tokenizer: a few hundred words of support questions, some other languages
# and CJK, so each trained vocabulary has real subwords and CJK pieces (emoji stay out on purpose:
# they exercise [UNK] / byte fallback / byte-level paths).
_CORPUS_EN = [
    "how do i reset my password after the account was locked",
    "what is the capital of france and how many people live there",
    "can i return an item i bought online without the receipt",
    "where is my order and when will the shipping be finished",
    "how long does a refund take to reach my bank account",
    "why is the app asking me to log in again every morning",
    "is it safe to leave my laptop charging overnight",
    "what programming language should a beginner learn first",
    "how do i transfer money to a friend who lives abroad",
    "my screen flickers after the latest update, what should i do",
    "where is the nearest cash machine open on sunday",
    "does the hotel offer free breakfast and late checkout",
    "how much water should an adult drink every day",
    "can i freeze cooked rice and eat it next week",
    "explain how a hash table handles collisions with examples",
    "what are the side effects of ibuprofen for children",
    "can i bring a power bank in my checked luggage",
    "when does daylight saving time end this year",
    "recommend a good book about the history of rome",
    "how do i convert celsius to fahrenheit quickly",
    "the invoice total was wrong, is tax included in the price",
    "please help, my email was hacked and i cannot sign in",
    "compare the phone cameras in low light and at night",
    "which train goes from the airport to the city centre",
    "how to cancel a subscription and get the money back",
    "what time does the store close on public holidays",
    "i forgot the name of the song that was playing",
    "is there a discount for students or older customers",
    "how can i change the delivery address of an order",
    "the package arrived damaged, who should i contact",
    "what documents do i need to open a new account",
    "how do i update the settings of my wireless router",
    "my card was declined although there is enough money",
    "can you tell me the weather forecast for tomorrow",
    "why does my phone battery drain so fast lately",
    "how many days does standard shipping usually take",
    "questions, answers, search, similar, retrieve, query, passage, document, instruct, given",
]
_CORPUS_OTHER = [
    "¿cuánto cuesta el envío a madrid?",
    "quel temps fait-il à paris aujourd'hui ?",
    "warum ist die banane krumm und gelb?",
    "сколько стоит доставка в москву?",
    "배송은 얼마나 걸리나요?",
    "如何重置我的密码",
    "北京是中国的首都吗",
    "订单什么时候发货",
    "今天天气怎么样",
    "我想退货并且退款",
    "このアプリは無料ですか",
    "東京の天気はどうですか",
]
# Numbers and punctuation, so they get pieces of their own rather than [UNK].
_CORPUS_SYMBOLS = ["0 1 2 3 4 5 6 7 8 9 10 2024 1,234.56 $ % & ( ) - : ; ! ? . , ' \" / @ # + = * _"]


def _corpus() -> list[str]:
    """The tokenizer training text: English, other scripts, symbols, and capitalised copies."""
    capitalised = [line.capitalize() for line in _CORPUS_EN]
    return _CORPUS_EN + capitalised + _CORPUS_OTHER + _CORPUS_SYMBOLS


# --- tokenizers -------------------------------------------------------------------------------------

_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# MPNet keeps RoBERTa's ids for <s>/<pad>/</s> (pad is 1: the position offset depends on it) but
# BERT's WordPiece and "[UNK]".
_MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
# CamembertTokenizer's layout: <unk> must be id 3, <pad> id 1, the real <s>/</s> come after the
# NOTUSED placeholders.
_CAMEMBERT_SPECIALS = ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>", "<mask>"]
_MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]


def _id(tok: Tokenizer, token: str) -> int:
    """The id of a token the tokenizer must have."""
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise ValueError(f"token {token!r} is not in the vocabulary")
    return token_id


def _train_bpe(like: Tokenizer, specials: list[str], vocab_size: int) -> Tokenizer:
    """A plain BPE trained on the corpus through like's normalizer and pre-tokenizer.

    It supplies the subword inventory of every WordPiece and Unigram tokenizer here: in tokenizers
    0.23 the WordPieceTrainer (and any BpeTrainer with a continuing_subword_prefix) and the
    UnigramTrainer pick different vocabularies or scores from run to run (hash-map order), so a
    same-seed rebuild would not reproduce the model. The plain BpeTrainer is deterministic.
    """
    bpe = Tokenizer(tok_models.BPE())
    bpe.normalizer = like.normalizer
    bpe.pre_tokenizer = like.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=specials, show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer)
    return bpe


def _pieces(bpe: Tokenizer) -> list[str]:
    """A trained BPE's pieces in id order."""
    vocab = bpe.get_vocab(with_added_tokens=False)
    return [piece for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def _wordpiece(specials: list[str]) -> Tokenizer:
    """A lowercasing BERT WordPiece tokenizer with corpus-trained pieces (CJK split per character)."""
    tok = Tokenizer(tok_models.WordPiece(unk_token="[UNK]"))
    # The same pipeline BertTokenizer/MPNetTokenizer rebuild on load, so tokenizer.json and the
    # reloaded Python tokenizer agree.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    learned = [p for p in _pieces(_train_bpe(tok, specials, 600)) if p not in specials]
    # Every learned piece both word-initially and as a "##" continuation: greedy longest-match
    # then covers every word of the training alphabet.
    vocab = {p: i for i, p in enumerate(specials + learned + [f"##{p}" for p in learned])}
    tok.model = tok_models.WordPiece(vocab, unk_token="[UNK]")
    return tok


def _bert_tokenizer(cls_name: str = "BertTokenizerFast") -> Any:
    """A WordPiece tokenizer in the given BERT-like transformers class, with [CLS] $A [SEP]."""
    import transformers

    tok = _wordpiece(_BERT_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", _id(tok, "[CLS]")), ("[SEP]", _id(tok, "[SEP]"))],
    )
    return getattr(transformers, cls_name)(tokenizer_object=tok, do_lower_case=True)


def _distilbert_tokenizer() -> Any:
    """BERT's WordPiece in DistilBertTokenizerFast: DistilBERT takes no token_type_ids."""
    hf = _bert_tokenizer("DistilBertTokenizerFast")
    # DistilBertModel.forward has no token_type_ids argument: the tokenizer must not produce them.
    hf.model_input_names = ["input_ids", "attention_mask"]
    return hf


def _mpnet_tokenizer() -> Any:
    """WordPiece with RoBERTa-style special tokens in MPNetTokenizerFast (no token_type_ids)."""
    from transformers import MPNetTokenizerFast  # type: ignore[attr-defined]  # lazy module

    tok = _wordpiece(_MPNET_SPECIALS)
    tok.post_processor = processors.RobertaProcessing(("</s>", _id(tok, "</s>")), ("<s>", _id(tok, "<s>")))
    hf = MPNetTokenizerFast(tokenizer_object=tok, do_lower_case=True, unk_token="[UNK]")
    hf.model_input_names = ["input_ids", "attention_mask"]
    return hf


def _byte_level_bpe(specials: list[str], add_prefix_space: bool = False) -> Tokenizer:
    """A GPT-2 style byte-level BPE (every byte is in the vocabulary, so nothing is unknown)."""
    tok = Tokenizer(tok_models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _roberta_tokenizer() -> Any:
    """Byte-level BPE in RobertaTokenizerFast: <s>=0, <pad>=1, </s>=2, as roberta-base has."""
    from transformers import RobertaTokenizerFast  # type: ignore[attr-defined]  # lazy module

    tok = _byte_level_bpe(_ROBERTA_SPECIALS)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", _id(tok, "</s>")), ("<s>", _id(tok, "<s>")), trim_offsets=True
    )
    return RobertaTokenizerFast(tokenizer_object=tok, add_prefix_space=False)


def _modernbert_tokenizer() -> Any:
    """Byte-level BPE with [CLS]/[SEP]/[PAD] appended after the vocabulary, as ModernBERT has."""
    from transformers import PreTrainedTokenizerFast  # type: ignore[attr-defined]  # lazy module

    tok = _byte_level_bpe([])
    # ModernBERT's special tokens are added tokens after the BPE vocabulary (ids 50280+ upstream):
    # the pad id is not 0, which catches readers that assume it.
    tok.add_special_tokens(_MODERNBERT_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
        special_tokens=[("[CLS]", _id(tok, "[CLS]")), ("[SEP]", _id(tok, "[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        # ModernBertModel takes no token_type_ids.
        model_input_names=["input_ids", "attention_mask"],
    )


def _unigram(specials: list[str]) -> Tokenizer:
    """A SentencePiece-like Unigram tokenizer ('▁' word boundaries) with corpus-estimated log-probs."""
    tok = Tokenizer(tok_models.Unigram())
    # XLMRobertaTokenizer/CamembertTokenizer rebuild exactly this pre-tokenizer on load (no
    # normalizer: the upstream Precompiled charsmap cannot be made offline).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bpe = _train_bpe(tok, specials, 500)
    pieces = _pieces(bpe)
    # Log-probabilities from how often the BPE segmentation of the corpus uses each piece (add-one
    # smoothed): integer counts, so the scores are the same on every run (UnigramTrainer's are not).
    counts = dict.fromkeys(pieces, 0)
    for line in _corpus():
        for piece in bpe.encode(line, add_special_tokens=False).tokens:
            counts[piece] += 1
    total = sum(counts.values()) + len(counts)
    scores = [(p, 0.0 if p in specials else math.log((counts[p] + 1) / total)) for p in pieces]
    tok.model = tok_models.Unigram(scores, unk_id=specials.index("<unk>"), byte_fallback=False)
    return tok


def _xlm_roberta_tokenizer() -> Any:
    """Unigram in XLMRobertaTokenizerFast with <s> $A </s>; <unk> must be id 3, <pad> id 1."""
    from transformers import XLMRobertaTokenizerFast  # type: ignore[attr-defined]  # lazy module

    tok = _unigram(_ROBERTA_SPECIALS)
    return XLMRobertaTokenizerFast(tokenizer_object=tok)


def _camembert_tokenizer() -> Any:
    """Unigram in CamembertTokenizerFast, with camembert-base's NOTUSED placeholders first."""
    from transformers import CamembertTokenizerFast  # type: ignore[attr-defined]  # lazy module

    tok = _unigram(_CAMEMBERT_SPECIALS)
    return CamembertTokenizerFast(tokenizer_object=tok)


def _qwen3_tokenizer() -> Any:
    """Qwen2-style byte-level BPE that appends <|endoftext|> and pads on the left (Qwen3-Embedding)."""
    from transformers import Qwen2TokenizerFast  # type: ignore[attr-defined]  # lazy module
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(
        tok_models.BPE(
            continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False
        )
    )
    # Qwen2Tokenizer rebuilds this exact normalizer/pre-tokenizer on load; anything else would make
    # tokenizer.json and the reloaded tokenizer disagree.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens(_QWEN_SPECIALS)
    eos = "<|endoftext|>"
    # Last-token pooling reads the final position: the appended EOS is the token that gets pooled.
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {eos}:0",
        pair=f"$A:0 {eos}:0 $B:1 {eos}:1",
        special_tokens=[(eos, _id(tok, eos))],
    )
    return Qwen2TokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=eos, unk_token=None, padding_side="left"
    )


def _mistral_tokenizer() -> Any:
    """Llama/Mistral-style BPE (Metaspace, byte fallback) with <s> $A </s>, padding on the right."""
    from transformers import LlamaTokenizerFast  # type: ignore[attr-defined]  # lazy module

    trained = Tokenizer(tok_models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=700, min_frequency=2, special_tokens=_LLAMA_SPECIALS, show_progress=False
    )
    trained.train_from_iterator(_corpus(), trainer)
    model = json.loads(trained.to_str())["model"]
    # SentencePiece layout: <unk> <s> </s>, then the 256 byte tokens byte fallback needs (so emoji
    # become <0xF0><0x9F>... rather than <unk>), then the learned pieces.
    pieces = _LLAMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if p not in _LLAMA_SPECIALS]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(
        tok_models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    # LlamaTokenizer rebuilds this pipeline on load (one Metaspace "word" per text, no normalizer).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # add_bos/add_eos make transformers write the "<s> $A </s>" template itself, and again on reload.
    return LlamaTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        add_bos_token=True,
        add_eos_token=True,
        padding_side="right",
    )


_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "bert": _bert_tokenizer,
    "bert-dense": _bert_tokenizer,
    "roberta": _roberta_tokenizer,
    "xlm-roberta": _xlm_roberta_tokenizer,
    "camembert": _camembert_tokenizer,
    "distilbert": _distilbert_tokenizer,
    "mpnet": _mpnet_tokenizer,
    "electra": lambda: _bert_tokenizer("ElectraTokenizerFast"),
    "modernbert": _modernbert_tokenizer,
    "qwen3": _qwen3_tokenizer,
    "mistral": _mistral_tokenizer,
}


# --- backbones --------------------------------------------------------------------------------------

# Wide random weights: with the default 0.02 every BERT text maps to the same vector (cosine 1.00).
# Eager attention is what the config is built with, but transformers 5 does not write
# attn_implementation to config.json: whoever loads the saved model picks its own (ST: sdpa).
_COMMON: dict[str, Any] = {"initializer_range": 0.3, "attn_implementation": "eager"}
_ENCODER: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


# Not a typed field of transformers 5's ModernBertConfig, but still accepted and written to config.json.
_MODERNBERT_V4_KEYS: dict[str, Any] = {"global_attn_every_n_layers": 2}


def _config(family: str, tokenizer: Any) -> Any:
    """The transformers config of a family's backbone, with the tokenizer's special-token ids."""
    import transformers

    vocab_size = len(tokenizer)
    pad = tokenizer.pad_token_id
    if family in ("bert", "bert-dense"):
        return transformers.BertConfig(
            vocab_size=vocab_size, max_position_embeddings=MAX_TOKENS, pad_token_id=pad, **_ENCODER, **_COMMON
        )
    if family == "electra":
        return transformers.ElectraConfig(
            vocab_size=vocab_size,
            embedding_size=32,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=pad,
            **_ENCODER,
            **_COMMON,
        )
    if family == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=pad,
            **_COMMON,
        )
    if family in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        # Position ids start at pad_token_id + 1 = 2, so 128 tokens need 130 position embeddings
        # (roberta-base: 514 for 512 tokens), and pad_token_id must be the tokenizer's (1).
        cls = {
            "roberta": transformers.RobertaConfig,
            "xlm-roberta": transformers.XLMRobertaConfig,
            "camembert": transformers.CamembertConfig,
            "mpnet": transformers.MPNetConfig,
        }[family]
        return cls(
            vocab_size=vocab_size,
            max_position_embeddings=MAX_TOKENS + pad + 1,
            pad_token_id=pad,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **({} if family == "mpnet" else {"type_vocab_size": 1}),
            **_ENCODER,
            **_COMMON,
        )
    if family == "modernbert":
        return transformers.ModernBertConfig(
            vocab_size=vocab_size,
            max_position_embeddings=MAX_TOKENS,
            # Layer 0 global, layer 1 local; a 16-token window makes the local layer matter for texts
            # longer than 8 tokens. layer_types is what transformers 5 reads, global_attn_every_n_layers
            # what 4.x readers of config.json read: both say the same.
            layer_types=["full_attention", "sliding_attention"],
            local_attention=16,
            **_MODERNBERT_V4_KEYS,
            # A bias on the final LayerNorm (see _narrow_cone); upstream ModernBERT has none.
            norm_bias=True,
            pad_token_id=pad,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **_ENCODER,
            **_COMMON,
        )
    if family in ("qwen3", "mistral"):
        cls = transformers.Qwen3Config if family == "qwen3" else transformers.MistralConfig
        return cls(
            vocab_size=vocab_size,
            max_position_embeddings=MAX_TOKENS,
            num_key_value_heads=1,
            head_dim=16,
            tie_word_embeddings=False,
            # No pad id in the config, as upstream: the tokenizer pads with the EOS token, and a
            # config pad id would make it the Embedding's padding_idx, i.e. a zero EOS vector,
            # the very token last-token pooling reads.
            pad_token_id=None,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **_ENCODER,
            **_COMMON,
        )
    raise ValueError(f"unknown family {family!r}")


# Random-weight models with rotary positions (ModernBERT, the decoders) have nothing every text shares:
# their vectors spread over the whole sphere (cosines down to -0.5), unlike real embedding models,
# which sit in a narrow cone, and unlike the BERT-style ones here, whose absolute position embeddings
# are shared. A common component is added back: the decoders' residual branches are scaled down so
# the appended EOS token, which last-token pooling reads for every text, keeps a share of the vector
# (Mistral needs a smaller scale than Qwen3 for the same spread); ModernBERT's final LayerNorm gets a
# random bias, as trained LayerNorms have. Values tuned for pairwise cosines of about 0.2-0.9.
_DECODER_BRANCH_SCALE = {"qwen3": 0.15, "mistral": 0.06}
_MODERNBERT_FINAL_BIAS = 0.3


def _narrow_cone(model: Any, family: str) -> None:
    """Give a rotary-position backbone a component shared by all texts (see above)."""
    import torch  # in the builders only: the modules that import this one are slow tests

    with torch.no_grad():
        if family in _DECODER_BRANCH_SCALE:
            for layer in model.layers:
                layer.self_attn.o_proj.weight.mul_(_DECODER_BRANCH_SCALE[family])
                layer.mlp.down_proj.weight.mul_(_DECODER_BRANCH_SCALE[family])
        elif family == "modernbert":
            model.final_norm.bias.normal_(0.0, _MODERNBERT_FINAL_BIAS)


def _build_hf(family: str, directory: Path, seed: int) -> None:
    """Save a seeded random backbone and its tokenizer with save_pretrained."""
    import torch
    from transformers import AutoModel  # type: ignore[attr-defined]  # lazy module

    tokenizer = _TOKENIZERS[family]()
    config = _config(family, tokenizer)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    _narrow_cone(model, family)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


# --- sentence-transformers --------------------------------------------------------------------------


def build_family_model(
    family: str, out_dir: Path, save_format: str = "current", seed: int = 0, max_seq_length: int = 48
) -> Path:
    """Build, save with sentence-transformers, return out_dir; save_format "current" (ST 6) or "legacy"."""
    import torch
    from sentence_transformers import SentenceTransformer

    # sentence_transformers.models under its ST 6 name (the old one warns on import).
    from sentence_transformers.sentence_transformer import modules

    spec = family_spec(family)
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"unknown save_format {save_format!r}; expected one of {SAVE_FORMATS}")
    if not 1 <= max_seq_length <= MAX_TOKENS:
        raise ValueError(f"max_seq_length must be in 1..{MAX_TOKENS}, got {max_seq_length}")
    out_dir = Path(out_dir)
    # Files of an earlier build (another family's vocab, a 2_Dense) would silently mix in.
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The HF checkpoint is an intermediate: built outside out_dir so out_dir ends self-contained.
    with tempfile.TemporaryDirectory(prefix=f"st-{family}-") as tmp:
        hf_dir = Path(tmp) / "hf"
        _build_hf(family, hf_dir, seed)
        transformer = modules.Transformer(str(hf_dir), max_seq_length=max_seq_length)
        dim = transformer.get_embedding_dimension()
        stack: list[torch.nn.Module] = [transformer, modules.Pooling(dim, pooling_mode=spec.pooling)]
        if spec.dense_out is not None:
            # Seeded on its own: the Dense weights must not depend on what loading consumed.
            torch.manual_seed(seed + 1)
            stack.append(modules.Dense(dim, spec.dense_out))
        stack.append(modules.Normalize())
        model = SentenceTransformer(
            modules=stack, prompts=spec.prompts, default_prompt_name=spec.default_prompt_name, device="cpu"
        )
        # No README: the model card generator is slow and has nothing to say about random weights.
        model.save(str(out_dir), create_model_card=False)
    if save_format == "legacy":
        _rewrite_legacy(out_dir, spec, max_seq_length)
    return out_dir


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_LEGACY_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}


def _rewrite_legacy(out_dir: Path, spec: FamilySpec, max_seq_length: int) -> None:
    """Turn a sentence-transformers 6 save into the layout 2.x-4.x wrote."""
    modules_json = _read(out_dir / "modules.json")
    for entry in modules_json:
        kind = entry["type"].rsplit(".", 1)[-1]
        entry["type"] = _LEGACY_TYPES[kind]
        folder = out_dir / entry["path"]
        if kind == "Pooling":
            _write(folder / "config.json", _legacy_pooling(_read(folder / "config.json")))
        elif kind == "Dense":
            config = _read(folder / "config.json")
            keys = ("in_features", "out_features", "bias", "activation_function")
            _write(folder / "config.json", {key: config[key] for key in keys})
        elif kind == "Normalize":
            # Old Normalize saved nothing, and git keeps no empty folder: hub models have none.
            shutil.rmtree(folder)
    _write(out_dir / "modules.json", modules_json)
    # Old readers take the limit from here only; the tokenizer's own limit is the "no limit" sentinel.
    _write(out_dir / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    tokenizer_config = _read(out_dir / "tokenizer_config.json")
    tokenizer_config["model_max_length"] = LEGACY_MODEL_MAX_LENGTH
    # Leftovers of loading from a local folder that sentence-transformers 6 writes back; no
    # published tokenizer_config.json has them.
    for key in ("is_local", "local_files_only"):
        tokenizer_config.pop(key, None)
    _write(out_dir / "tokenizer_config.json", tokenizer_config)
    # 3.x wrote the prompts it was given; 6 also adds empty "query"/"document" ones.
    _write(
        out_dir / "config_sentence_transformers.json",
        {
            "__version__": {
                "sentence_transformers": LEGACY_ST_VERSION,
                "transformers": "4.48.2",
                "pytorch": "2.5.1",
            },
            "prompts": dict(spec.prompts),
            "default_prompt_name": spec.default_prompt_name,
            "similarity_fn_name": "cosine",
        },
    )


def _legacy_pooling(config: dict[str, Any]) -> dict[str, Any]:
    """The boolean pooling_mode_* keys sentence-transformers 2.x-4.x wrote."""
    modes = config.get("pooling_mode", "mean")
    active = {modes} if isinstance(modes, str) else set(modes)
    return {
        "word_embedding_dimension": config.get("embedding_dimension", config.get("word_embedding_dimension")),
        "pooling_mode_cls_token": "cls" in active,
        "pooling_mode_mean_tokens": "mean" in active,
        "pooling_mode_max_tokens": "max" in active,
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens" in active,
        "pooling_mode_weightedmean_tokens": "weightedmean" in active,
        "pooling_mode_lasttoken": "lasttoken" in active,
        "include_prompt": config.get("include_prompt", True),
    }
