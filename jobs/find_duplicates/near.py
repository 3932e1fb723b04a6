"""Near duplicates: a FAISS k-NN search proposes candidates, the exact cosine decides; and the
check of the found pairs against brute-force search on a sample of rows.

Near duplicates: a FAISS k-NN search (k + 1, the row itself is dropped) proposes candidates;
each candidate's cosine is then recomputed exactly from the two vectors, and the pair is kept
when it is >= threshold - SCORE_TOLERANCE (float32 rounding: a vector with itself can give
0.99999994). Scores in the output are these exact cosines, for both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.faiss_index import VectorIndex
from index.tuning import build_in_memory, sample_rows

SCORE_TOLERANCE = 1e-6
# Queries per FAISS call and per exact re-scoring step: (rows * (k+1) * dim) floats gathered at once.
SEARCH_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class NearPairs:
    """Row pairs (a < b, unique) with exact cosine >= threshold, from one or more query shards."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray  # float32 exact cosine
    # Query rows whose k nearest other rows all reached the threshold: they may have more near
    # duplicates than k, which only a larger k would list (their groups are still joined).
    saturated: int = 0

    @classmethod
    def empty(cls) -> NearPairs:
        """No pairs."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0)

    @classmethod
    def concat(cls, parts: Sequence[NearPairs], n: int) -> NearPairs:
        """Several shards' pairs, each pair once (a pair is found from both of its ends)."""
        if not parts:
            return cls.empty()
        a = np.concatenate([p.a for p in parts])
        b = np.concatenate([p.b for p in parts])
        score = np.concatenate([p.score for p in parts])
        keep = unique_pair_positions(a, b, n)
        return cls(a[keep], b[keep], score[keep], sum(p.saturated for p in parts))


def unique_pair_positions(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first occurrence of each (a, b), in ascending (a, b) order."""
    _, first = np.unique(a.astype(np.int64) * n + b.astype(np.int64), return_index=True)
    return first


def pair_cosines(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Row-wise dot products vectors[a] . vectors[b] (cosine for unit vectors), float32."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", vectors[a[s : s + chunk]], vectors[b[s : s + chunk]])
    return out


def near_pairs(
    index: VectorIndex,
    vectors: np.ndarray,
    start: int,
    stop: int,
    k: int,
    threshold: float,
    index_rows: np.ndarray | None = None,
) -> NearPairs:
    """Near duplicates of query rows [start, stop) among all rows, via k-NN on `index`.

    `vectors` are all rows' unit vectors (row order); the index answers with its own row numbers,
    which `index_rows` maps to ours when the index was built elsewhere (None: the same numbering).
    """
    a_parts, b_parts, s_parts, saturated = [], [], [], 0
    cut = threshold - SCORE_TOLERANCE
    for lo in range(start, stop, SEARCH_CHUNK_ROWS):
        hi = min(stop, lo + SEARCH_CHUNK_ROWS)
        _, cand = index.search(vectors[lo:hi], k + 1)
        if index_rows is not None:
            cand = np.where(cand >= 0, index_rows[np.maximum(cand, 0)], -1)
        query = np.repeat(np.arange(lo, hi, dtype=np.int64), k + 1).reshape(hi - lo, k + 1)
        usable = (cand >= 0) & (cand != query)
        # Exact cosine for every candidate: approximate (IVF, PQ) scores never decide a pair.
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        scores[usable] = pair_cosines(vectors, query[usable], cand[usable])
        kept = usable & (scores >= cut)
        saturated += int((kept.sum(axis=1) >= k).sum())
        q, c = query[kept], cand[kept]
        a_parts.append(np.minimum(q, c))
        b_parts.append(np.maximum(q, c))
        s_parts.append(scores[kept])
    if not a_parts:
        return NearPairs.empty()
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    keep = unique_pair_positions(a, b, len(vectors))
    return NearPairs(a[keep], b[keep], s[keep], saturated)


def local_search(vectors: np.ndarray, k: int, threshold: float, factory: str = "auto") -> NearPairs:
    """The near stage in this process: build an index over `vectors`, search every row."""
    if len(vectors) < 2:
        return NearPairs.empty()
    index, _ = build_in_memory(vectors, factory, "ip")
    return near_pairs(index, vectors, 0, len(vectors), k, threshold)


# ---- agreement with exact all-pairs search ----------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Near pairs found vs exact search, for the pairs that touch a sample of query rows."""

    sample: int
    true_pairs: int  # (query, other row) with exact cosine >= threshold
    found_pairs: int  # the same, among the pairs found
    matched: int

    @property
    def recall(self) -> float | None:
        """Share of the true pairs that were found (None: no true pair in the sample)."""
        return self.matched / self.true_pairs if self.true_pairs else None

    @property
    def precision(self) -> float | None:
        """Share of the found pairs that are true (None: nothing found)."""
        return self.matched / self.found_pairs if self.found_pairs else None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the summary."""
        return {
            "sample_rows": self.sample,
            "true_pairs": self.true_pairs,
            "found_pairs": self.found_pairs,
            "recall": None if self.recall is None else round(self.recall, 6),
            "precision": None if self.precision is None else round(self.precision, 6),
        }


def exact_neighbours(
    vectors: np.ndarray, queries: np.ndarray, threshold: float, block: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, other row) with cosine >= threshold, by brute-force matmul against every row."""
    q = np.ascontiguousarray(vectors[queries])
    cut = threshold - SCORE_TOLERANCE
    qs, others = [], []
    for lo in range(0, len(vectors), block):
        sims = q @ vectors[lo : lo + block].T
        qi, j = np.nonzero(sims >= cut)
        qs.append(queries[qi])
        others.append(j.astype(np.int64) + lo)
    qa, ob = np.concatenate(qs), np.concatenate(others)
    mask = qa != ob
    return qa[mask], ob[mask]


def check_agreement(
    vectors: np.ndarray, near: NearPairs, threshold: float, sample: int, seed: int = 0
) -> Agreement:
    """Pair recall and precision of `near` against exact search, for `sample` random query rows.

    Exact search here is the brute-force matmul of each sampled row against all rows, so every
    near duplicate of a sampled question counts, wherever it is in the corpus.
    """
    n = len(vectors)
    queries = sample_rows(n, min(sample, n), seed)
    tq, to = exact_neighbours(vectors, queries, threshold)
    in_sample = np.zeros(n, dtype=bool)
    in_sample[queries] = True
    fa = np.concatenate([near.a[in_sample[near.a]], near.b[in_sample[near.b]]])
    fb = np.concatenate([near.b[in_sample[near.a]], near.a[in_sample[near.b]]])
    truth = np.unique(tq * n + to)
    found = np.unique(fa * n + fb)
    matched = int(np.isin(found, truth, assume_unique=True).sum())
    return Agreement(len(queries), len(truth), len(found), matched)
