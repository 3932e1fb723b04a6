"""Measuring and tuning an index's recall, and the in-memory build that uses them.

Exact top-k of sample queries (ExactKnn, streamed), recall@k against it, the search-time knob
(nprobe / efSearch) widened until the recall target is met, and `build_in_memory`: build, tune and
measure an index over in-memory vectors. Apart from index.faiss_index (the index itself and its
factory choice) so each module has one job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from index.faiss_index import IndexConfig, VectorIndex, choose_factory, chunks, metric_code


class ExactKnn:
    """Running exact top-k of fixed queries over a corpus streamed in consecutive batches."""

    def __init__(self, queries: np.ndarray, k: int, metric: str) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k, self.metric = int(k), metric
        self.scores = np.full((len(queries), self.k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), self.k), -1, dtype=np.int64)
        self.seen = 0

    def update(self, batch: np.ndarray, first_id: int | None = None) -> None:
        """Fold in a batch whose rows have ids first_id.. (default: continue after the last batch)."""
        start = self.seen if first_id is None else first_id
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        flat = faiss.IndexFlat(batch.shape[1], metric_code(self.metric))
        flat.add(batch)
        d, i = flat.search(self.queries, min(self.k, len(batch)))
        s = d if self.metric == "ip" else -d
        self.merge(s, np.where(i >= 0, i + start, -1))
        self.seen = max(self.seen, start + len(batch))

    def merge(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Fold in another partial top-k (e.g. from a shard)."""
        all_s = np.concatenate([self.scores, scores], axis=1)
        all_i = np.concatenate([self.ids, ids], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.ids = np.take_along_axis(all_i, order, axis=1)


def recall_from_truth(
    index: VectorIndex, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray, k: int = 10
) -> float:
    """Recall@k of `index` against exact neighbours `truth` (k+1 columns), ignoring each query's own row.

    The queries are corpus vectors, so each finds itself; counting that would flatter the index.
    """
    _, got = index.search(queries, k + 1)
    hits = 0
    for qid, t, g in zip(query_ids, truth, got, strict=True):
        want = [x for x in t if x != qid and x >= 0][:k]
        found = [x for x in g if x != qid and x >= 0][:k]
        hits += len(set(want) & set(found))
        hits += k - len(want)  # fewer than k true neighbours exist: nothing to miss
    return hits / (k * max(len(query_ids), 1))


def sample_rows(n: int, size: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Sorted random row positions (without replacement), avoiding `exclude` when there is room."""
    rng = np.random.default_rng(seed)
    pool = np.arange(n) if exclude is None or n - len(exclude) < size else np.setdiff1d(np.arange(n), exclude)
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


def recall_at_k(index: VectorIndex, vectors: np.ndarray, sample: np.ndarray | int, k: int = 10) -> float:
    """Recall@k of `index` on corpus rows `sample` (positions, or a count to draw) vs exact search."""
    if isinstance(sample, int | np.integer):
        sample = sample_rows(len(vectors), int(sample), seed=0)
    queries = np.ascontiguousarray(vectors[sample], dtype=np.float32)
    exact = ExactKnn(queries, k + 1, index.metric)
    for batch in chunks(vectors, 262_144):
        exact.update(batch)
    return recall_from_truth(index, queries, np.asarray(sample), exact.ids, k)


def tune_search(
    index: VectorIndex,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    cfg: IndexConfig,
    start_at: int | None = None,
    stop_at: int | None = None,
) -> float:
    """Widen nprobe / efSearch (doubling) until recall@10 >= cfg.target_recall; returns the recall reached.

    `start_at` / `stop_at` replace the starting value and lower the cap (an update starts from the
    live version's setting and may only widen it so far).
    """
    knob, start, cap = _knob(index, cfg)
    if start_at is not None:
        start = min(max(int(start_at), 1), cap)
    if stop_at is not None:
        cap = max(min(int(stop_at), cap), start)
    if knob is None:
        return recall_from_truth(index, queries, query_ids, truth)
    value = start
    while True:
        params = {knob: value}
        if knob == "nprobe" and "HNSW" in index.factory:
            # The HNSW coarse quantizer must return at least nprobe lists, with some slack.
            params["quantizer_efSearch"] = max(2 * value, 64)
        index.set_search_params(params)
        recall = recall_from_truth(index, queries, query_ids, truth)
        if recall >= cfg.target_recall or value >= cap:
            return recall
        value = min(2 * value, cap)


def search_knob(index: VectorIndex) -> str | None:
    """The runtime parameter tuning widens for this index: "nprobe", "efSearch", or None (exact)."""
    return _knob(index, IndexConfig())[0]


def _knob(index: VectorIndex, cfg: IndexConfig) -> tuple[str | None, int, int]:
    ivf = index.ivf
    if ivf is not None:
        cap = min(cfg.max_nprobe, int(ivf.nlist))
        return "nprobe", min(cfg.nprobe, cap), cap
    if "HNSW" in index.factory:
        return "efSearch", cfg.ef_search, cfg.max_ef_search
    return None, 0, 0


@dataclass(frozen=True)
class BuildReport:
    """What an in-memory build measured."""

    recall_at_10: float
    train_rows: int
    recall_queries: int


def build_in_memory(
    vectors: np.ndarray,
    factory: str = "auto",
    metric: str = "ip",
    cfg: IndexConfig | None = None,
) -> tuple[VectorIndex, BuildReport]:
    """Build, tune and measure an index over in-memory vectors (row i gets id i)."""
    cfg = cfg or IndexConfig()
    n, dim = vectors.shape
    index = VectorIndex.create(dim, choose_factory(n, dim, cfg) if factory == "auto" else factory, metric)
    queries_at = sample_rows(n, cfg.recall_sample, cfg.seed + 1)
    train_at = sample_rows(n, index.train_rows(n, cfg), cfg.seed, exclude=queries_at)
    if len(train_at):
        index.train(vectors[train_at])
    queries = np.ascontiguousarray(vectors[queries_at], dtype=np.float32)
    exact = ExactKnn(queries, 11, metric)
    for batch in _batches(vectors, cfg.add_batch_rows):
        index.add(batch)
        exact.update(batch)
    recall = tune_search(index, queries, queries_at, exact.ids, cfg)
    return index, BuildReport(recall_at_10=recall, train_rows=len(train_at), recall_queries=len(queries_at))


def _batches(vectors: np.ndarray | Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        yield from chunks(vectors, rows)
    else:
        yield from vectors
