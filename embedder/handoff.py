"""Compact stage hand-offs: token ids and per-token vectors of real tokens only, merged and re-planned.

What the tokenizer stage ships to the model stage (TokenPack) and what the model stage ships
back (HiddenPack, or pooled vectors), plus the one function that runs several requests' packs
through the model together. Ray-free, shared by the in-process service and the Serve stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedder.batches import HiddenStates, Vectors
from embedder.config import BatchConfig
from embedder.pooling import Pooler, truncate_dims
from embedder.tokenize import Tokenized, plan_batches


@dataclass(frozen=True)
class TokenPack:
    """One request's token ids, unpadded and concatenated (what the tokenizer stage ships).

    Padding is added only inside the backbone, after merging requests, so the hop carries
    int32 ids for real tokens instead of three padded int64 matrices.
    """

    ids: np.ndarray  # int32 (total,)
    type_ids: np.ndarray | None  # int8 (total,), None when all zero (single-segment input)
    lengths: np.ndarray  # int32 (n,) tokens fed to the model (after truncation)
    token_counts: np.ndarray  # int64 (n,) tokens before truncation

    @property
    def size(self) -> int:
        """Texts in the pack."""
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        """Real tokens in the pack (the backbone's batch cost)."""
        return int(self.lengths.sum())

    def offsets(self) -> np.ndarray:
        """Start of each text in `ids` (n + 1 entries)."""
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    def select(self, rows: np.ndarray) -> TokenPack:
        """A pack of the chosen texts, in the order given."""
        off = self.offsets()
        parts = [np.arange(off[r], off[r + 1]) for r in rows]
        take = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        types = None if self.type_ids is None else self.type_ids[take]
        return TokenPack(self.ids[take], types, self.lengths[rows], self.token_counts[rows])


def pack_tokens(tokenized: Tokenized) -> TokenPack:
    """Compact a Tokenized result for shipping to the backbone."""
    ids = np.concatenate(tokenized.ids).astype(np.int32) if tokenized.ids else np.zeros(0, np.int32)
    types = np.concatenate(tokenized.type_ids) if tokenized.type_ids else np.zeros(0, np.int64)
    return TokenPack(
        ids=ids,
        type_ids=types.astype(np.int8) if types.any() else None,
        lengths=tokenized.lengths.astype(np.int32),
        token_counts=tokenized.token_counts.astype(np.int64),
    )


def split_pack(pack: TokenPack, batch_tokens: int) -> list[TokenPack]:
    """Cut a pack into pieces of at most `batch_tokens` real tokens (a text is never split)."""
    if pack.tokens <= batch_tokens:
        return [pack]
    pieces, start, used = [], 0, 0
    for i, n in enumerate(pack.lengths.tolist()):
        if used and used + n > batch_tokens:
            pieces.append(pack.select(np.arange(start, i)))
            start, used = i, 0
        used += n
    pieces.append(pack.select(np.arange(start, pack.size)))
    return pieces


def merge_packs(packs: Sequence[TokenPack], pad_token_id: int) -> Tokenized:
    """Merge several requests' packs into one Tokenized (row order: pack by pack) for batch planning."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    for p in packs:
        off = p.offsets()
        for r in range(p.size):
            ids.append(p.ids[off[r] : off[r + 1]].astype(np.int64))
            t = p.type_ids
            types.append(
                np.zeros(p.lengths[r], np.int64) if t is None else t[off[r] : off[r + 1]].astype(np.int64)
            )
    counts = np.concatenate([p.token_counts for p in packs]) if packs else np.zeros(0, np.int64)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return Tokenized(ids, types, counts, counts > lengths, pad_token_id)


@dataclass(frozen=True)
class HiddenPack:
    """One request's per-token vectors for real tokens only, concatenated (the backbone's output).

    Sending (total_tokens, d) instead of the padded (b, L, d) batch keeps the hop small and
    lets each request travel alone even though it was computed inside a larger batch.
    """

    vectors: np.ndarray  # float32 (total, d)
    lengths: np.ndarray  # int32 (n,)

    def to_hidden_states(self) -> HiddenStates:
        """Re-pad to (n, L, d) with a mask so the one pooling function applies unchanged."""
        n, width = len(self.lengths), int(self.lengths.max(initial=0))
        out = np.zeros((n, width, self.vectors.shape[1]), dtype=np.float32)
        mask = np.zeros((n, width), dtype=np.int64)
        start = 0
        for i, length in enumerate(self.lengths.tolist()):
            out[i, :length] = self.vectors[start : start + length]
            mask[i, :length] = 1
            start += length
        return HiddenStates(out, mask, np.arange(n, dtype=np.int64))


def run_merged(
    packs: Sequence[TokenPack],
    pad_token_id: int,
    batch: BatchConfig,
    forward: Any,
    pooled: bool,
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Run `forward(TokenBatch)` over several packs merged and re-planned by token budget.

    Returns, per pack, either its HiddenPack vectors (total, d) or pooled vectors (n, d), plus
    (texts, padded tokens) of every model call, for batch metrics.
    """
    merged = merge_packs(packs, pad_token_id)
    lengths = merged.lengths
    n = len(lengths)
    row_off = np.concatenate([[0], np.cumsum(lengths)])
    width: int | None = None
    out: np.ndarray | None = None
    calls: list[tuple[int, int]] = []
    for indices in plan_batches(lengths, batch):
        tb = merged.batch(indices)
        result = forward(tb)
        calls.append((tb.size, tb.padded_tokens))
        if pooled:
            emb = result.embeddings
            if out is None:
                width = emb.shape[1]
                out = np.empty((n, width), dtype=np.float32)
            out[result.positions] = emb
            continue
        hs = result.token_embeddings
        if out is None:
            width = hs.shape[2]
            out = np.empty((int(row_off[-1]), width), dtype=np.float32)
        for row, g in enumerate(result.positions.tolist()):
            out[row_off[g] : row_off[g + 1]] = hs[row, : lengths[g]]
    assert out is not None
    per_pack: list[np.ndarray] = []
    text_start = 0
    for p in packs:
        text_end = text_start + p.size
        if pooled:
            per_pack.append(out[text_start:text_end])
        else:
            per_pack.append(out[row_off[text_start] : row_off[text_end]])
        text_start = text_end
    return per_pack, calls


def pool_pack(
    pooler: Pooler, hidden: HiddenPack, normalize: bool | None, dimensions: int | None
) -> np.ndarray:
    """Pooled (n, d') vectors of one request, in its input order."""
    vectors: Vectors = pooler(hidden.to_hidden_states(), normalize=normalize, dimensions=dimensions)
    return vectors.embeddings


def finish_pooled(vectors: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """Apply a dimension cut to vectors pooled in the graph (re-normalising when they were normalised)."""
    return truncate_dims(vectors, dimensions, normalized)


def total_tokens(packs: Sequence[TokenPack]) -> int:
    """Batch cost of queued packs for @serve.batch's batch_size_fn: real tokens."""
    return sum(p.tokens for p in packs)


def join_pieces(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate per-piece outputs of a pack that was split by token budget."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
