"""The dummy backend: a tiny deterministic "model" in numpy behind the real scheduler and pooling.

For tests of the HTTP contract that need no artifact and no Ray: vectors are a fixed function of
the text (same text, same vector; similar words, similar vectors), so matching behaves like a real
model. The word POISON maps to a token id whose model call raises, to test that a failing merged
call fails only the request that carried it.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import numpy as np

from embedder.artifact import Manifest
from embedder.batches import HiddenStates, TokenBatch
from embedder.config import BatchConfig
from embedder.errors import InvalidInput
from embedder.handoff import HiddenPack, TokenPack
from embedder.pooling import Pooler
from embedder.probe import PROBE_TEXTS
from engine.backend import EmbedOptions, TokenSpan
from engine.model_info import ModelInfo
from engine.scheduler import ModelScheduler, SchedulerConfig
from index.errors import IndexUnavailable, UnknownCollection
from index.filters import parse_filter
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import Match, SearchResult

CLS, SEP, PAD, POISON_ID = 1, 2, 0, 13
POISON = "\N{COLLISION SYMBOL}"
VOCAB, DIM, MAX_LEN = 1000, 16, 16


def _word_id(word: str) -> int:
    return POISON_ID if word == POISON else 20 + zlib.crc32(word.lower().encode()) % (VOCAB - 20)


class DummyBackend:
    """Whitespace tokenizer + random embedding table + mean pooling + exact search over a list."""

    topology = "dummy"

    def __init__(self, stored: list[dict[str, Any]] | None = None, delay_s: float = 0.0) -> None:
        rng = np.random.default_rng(0)
        self.table = rng.standard_normal((VOCAB, DIM)).astype(np.float32)
        self.delay_s = delay_s  # seconds each model call takes, to test deadlines and fairness
        self.model_calls: list[int] = []  # texts per model call
        self.scheduler = ModelScheduler(
            self._forward, PAD, pooled=False, config=SchedulerConfig(pass_tokens=64, batch=BatchConfig(64, 8))
        )
        self.pooler = Pooler("mean", normalize=True)
        probe = self._vectors_now(list(PROBE_TEXTS))
        manifest = Manifest(
            dimension=DIM,
            max_seq_length=MAX_LEN,
            pooling="mean",
            normalize=True,
            precision="fp32",
            pooling_in_graph=False,
            input_names=("input_ids", "attention_mask"),
            output_name="last_hidden_state",
            pad_token_id=PAD,
        )
        self.model = ModelInfo("dummy", "sha256:dummy", manifest, VOCAB, probe)
        self.stored = stored
        self.version = "v1"
        if stored is not None:
            self.stored_vectors = self._vectors_now([s["question"] for s in stored])

    async def runtime(self) -> dict[str, Any]:
        """A fixed description: the dummy model is plain numpy."""
        return {"backend": "dummy", "precision": "fp32", "device": "cpu", "tolerance_key": "fp32"}

    def _forward(self, batch: TokenBatch) -> HiddenStates:
        if (batch.input_ids == POISON_ID).any():
            raise ValueError("dummy model cannot run token 13")
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        self.model_calls.append(batch.size)
        return HiddenStates(self.table[batch.input_ids], batch.attention_mask, batch.positions)

    def _pack(self, texts: list[str]) -> TokenPack:
        full = [[CLS, *(_word_id(w) for w in t.split()), SEP] for t in texts]
        kept = [ids if len(ids) <= MAX_LEN else [*ids[: MAX_LEN - 1], SEP] for ids in full]
        return TokenPack(
            ids=np.array([i for ids in kept for i in ids], np.int32),
            type_ids=None,
            lengths=np.array([len(k) for k in kept], np.int32),
            token_counts=np.array([len(f) for f in full], np.int64),
        )

    def _vectors_now(self, texts: list[str]) -> np.ndarray:
        pack = self._pack(texts)
        hidden = HiddenPack(self.table[pack.ids], pack.lengths)
        return self.pooler(hidden.to_hidden_states()).embeddings

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Whitespace tokens (the prompt's first), truncated to MAX_LEN."""
        return self._pack([prompt + t for t in texts] if prompt else texts)

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Words with offsets."""
        out = []
        for text in texts:
            row = [TokenSpan(CLS, "[CLS]", True, 0, 0)] if add_special_tokens else []
            pos = 0
            for word in text.split():
                start = text.index(word, pos)
                pos = start + len(word)
                row.append(TokenSpan(_word_id(word), word, False, start, pos))
            if add_special_tokens:
                row.append(TokenSpan(SEP, "[SEP]", True, len(text), len(text)))
            out.append(row)
        return out

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Mean-pooled vectors through the real scheduler and pooling."""
        hidden = await self.scheduler.submit(pack, options.tenant, options.weight)
        vectors = self.pooler(
            HiddenPack(hidden, pack.lengths).to_hidden_states(), options.normalize, options.dimensions
        )
        return vectors.embeddings

    def _rows(self, collection: str, filter: Any) -> list[int]:
        """Stored rows the filter selects (string columns of the stored dicts are its filter columns)."""
        if self.stored is None:
            raise IndexUnavailable("this service was started without an index; /match is unavailable")
        if collection != "default":
            raise UnknownCollection(
                f"collection {collection!r} does not exist (collections: ['default'])", field="collection"
            )
        if filter is None:
            return list(range(len(self.stored)))
        schema = {
            k: "string"
            for k, v in self.stored[0].items()
            if isinstance(v, str) and k not in ("question", "answer")
        }
        flt = parse_filter(filter, schema)  # type: ignore[arg-type]
        return [
            i
            for i, row in enumerate(self.stored)
            if all(_holds(c.values, row[c.column]) for c in flt.conditions)
        ]

    async def check_search(
        self, collection: str, filter: Any, group: GroupBy | None = None, query: TextQuery | None = None
    ) -> None:
        """Unknown collection (404), bad filter (422), any group_by (422: grouping needs a real index)."""
        self._rows(collection, filter)
        _no_groups(group)
        _dense_only(query)

    async def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = "default",
        filter: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Exact inner-product search over the stored questions (within the filter's rows)."""
        await asyncio.sleep(0)
        _no_groups(group)
        _dense_only(query)
        rows = self._rows(collection, filter)
        assert self.stored is not None
        scores = vectors @ self.stored_vectors[rows].T
        order = np.argsort(-scores, axis=1)[:, :top_k]
        matches = [
            [
                Match(
                    self.stored[rows[j]]["id"],
                    float(scores[i, j]),
                    {k: v for k, v in self.stored[rows[j]].items() if k != "id"},
                )
                for j in row
            ]
            for i, row in enumerate(order)
        ]
        selected = None if filter is None else len(rows)
        return SearchResult(matches, self.version, self.model.fingerprint, selected=selected)

    async def index_status(self) -> dict[str, Any] | None:
        """A fixed in-memory 'index'."""
        if self.stored is None:
            return None
        return {"name": "dummy", "version": self.version, "size": len(self.stored), "refused": None}

    async def collections_status(self) -> dict[str, Any] | None:
        """The one in-memory collection."""
        status = await self.index_status()
        if status is None:
            return None
        return {"memory_budget_bytes": 0, "memory_used_bytes": 0, "collections": {"default": status}}


def _no_groups(group: GroupBy | None) -> None:
    # Grouped search is the index's (index/groups.py), tested on real indexes; the dummy refuses it.
    if group is not None and group.resolve(None) is not None:
        raise InvalidInput("the dummy backend does not group; use a real index", field="group_by")


def _holds(values: tuple[Any, ...], value: Any) -> bool:
    return value in values


def _dense_only(query: TextQuery | None) -> None:
    # Lexical and hybrid modes need a real index's BM25 (index/lexical.py); the dummy has none.
    if query is not None and query.resolve("dense") != "dense":
        raise InvalidInput("the dummy backend has no lexical index: only mode 'dense'", field="mode")
