"""Search within a row mask: a plan per request from the filter's selectivity, always filling top_k.

Ray-free. Two plans (the choice Qdrant's cardinality estimate and Lucene's exact fall-back make):

- exact: gather the selected rows' vectors from the index itself (`reconstruct_batch`; IVF keeps
  a row -> list map for it) and score them with one matrix product. Chosen when the selection is
  smaller than what an unfiltered IVF search scans (FilterSearchConfig): its cost is the
  selection's size, and it is exact by construction. A Flat index is always searched exactly
  (a gather, or one BLAS product over all rows with the unselected ones masked).
  What "exact" means per index: Flat / IVF-Flat / HNSW-Flat store the float vectors, so scores
  are the true inner products. SQ8 / PQ indexes keep only codes: the gathered vectors are the
  decoded codes, the same values the ANN search scores against, so scores and ranking equal what
  an exhaustive search of that index would return (not the float vectors' scores; nothing keeps
  those in memory).
- ann: the index's own search with an `IDSelectorBitmap` (SearchParametersIVF / -HNSW `sel`).
  IVF tests the bitmap before computing a distance, so probing more lists costs a bit test per
  stored id, not a distance: nprobe is raised to base/selectivity so the expected number of
  selected rows scanned matches an unfiltered search's (the same recall on filters that do not
  follow the clusters). Any query still short of min(top_k, selected) is searched again with
  twice the breadth; at nprobe = nlist an IVF search is exhaustive over the selection, so it
  always fills. HNSW with a narrow selector can return fewer than k (faiss#3186): efSearch is
  doubled up to its cap, then the exact plan finishes the job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from index.faiss_index import VectorIndex


@dataclass(frozen=True)
class FilterSearchConfig:
    """Tunables of the filtered-search planner."""

    # The exact plan's cost is the selection's size (gather + score each row); the IVF plan's is
    # about what an unfiltered search scans (nprobe x rows per list distances, see _ann) plus a
    # bit test per id of the wider probe. Exact is chosen while the selection is at most
    # exact_per_scanned x the unfiltered scan, never below exact_min_rows (a gather of 1,024
    # rows of dim 384 is ~0.3 ms) nor above exact_max_rows (25 MB to read at dim 384).
    exact_per_scanned: float = 1.0
    exact_min_rows: int = 1024
    exact_max_rows: int = 16_384
    # Highest efSearch the HNSW plan widens to before handing short queries to the exact plan.
    max_ef_search: int = 4096


def exact_limit(index: VectorIndex, cfg: FilterSearchConfig) -> int:
    """Largest selection the exact plan takes for this index (see FilterSearchConfig)."""
    ivf = index.ivf
    if ivf is None:
        return cfg.exact_max_rows
    nprobe = int(index.search_params.get("nprobe", ivf.nprobe))
    scanned = nprobe * index.size / max(int(ivf.nlist), 1)
    return int(min(cfg.exact_max_rows, max(cfg.exact_min_rows, cfg.exact_per_scanned * scanned)))


@dataclass(frozen=True)
class FilteredHits:
    """Per query top-k (scores, row ids; -1 beyond the hits), the plan taken and the selection size."""

    scores: np.ndarray
    rows: np.ndarray
    plan: str  # "exact" | "ann" | "none" (nothing selected)
    selected: int
    breadth: int = 0  # nprobe / efSearch of the last ANN pass (0 for exact)


def ensure_gatherable(index: VectorIndex) -> int:
    """Let the exact plan reconstruct rows of an IVF index (a row -> list map); returns its bytes.

    Ids are row positions 0..n-1 (index.faiss_index), so the dense array map fits: 8 bytes a row.
    """
    ivf = index.ivf
    if ivf is None:
        return 0
    if ivf.direct_map.no():
        ivf.make_direct_map(True)
    return int(index.size) * 8


def search_filtered(
    index: VectorIndex, queries: np.ndarray, k: int, mask: np.ndarray, cfg: FilterSearchConfig | None = None
) -> FilteredHits:
    """Top-k per query among the rows where `mask` is True: min(k, selected) hits each."""
    cfg = cfg or FilterSearchConfig()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.flatnonzero(mask)
    want = min(int(k), len(rows))
    if want == 0:
        empty = np.full((len(q), int(k)), -1, np.int64)
        return FilteredHits(np.full(empty.shape, -np.inf, np.float32), empty, "none", 0)
    if len(rows) <= exact_limit(index, cfg):
        scores, ids = exact_topk(index, q, rows, k)
        return FilteredHits(scores, ids, "exact", len(rows))
    flat = _flat_vectors(index)
    if flat is not None:  # Flat scores every row anyway: one BLAS product, unselected rows masked
        scores, ids = _masked_topk(index, q, flat, mask, k)
        return FilteredHits(scores, ids, "exact", len(rows))
    return _ann(index, q, k, mask, rows, want, cfg)


def _flat_vectors(index: VectorIndex) -> np.ndarray | None:
    """A zero-copy (n, d) view of a Flat index's float vectors, or None for other indexes."""
    flat = faiss.downcast_index(index.index)
    if not isinstance(flat, faiss.IndexFlat) or index.size == 0:
        return None
    return faiss.rev_swig_ptr(flat.get_xb(), index.size * index.dimension).reshape(
        index.size, index.dimension
    )


def _masked_topk(
    index: VectorIndex, q: np.ndarray, vectors: np.ndarray, mask: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(index.metric, q, vectors)
    s[:, ~mask] = -np.inf
    return _topk(s, np.arange(len(mask)), k, int(mask.sum()))


def exact_topk(index: VectorIndex, q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of `q` over the given rows, from the vectors the index holds."""
    ensure_gatherable(index)  # normally done at load; a no-op then
    vectors = index.index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
    return _topk(_scores(index.metric, q, vectors), rows, k, len(rows))


def _scores(metric: str, q: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(queries, rows) scores, higher is better: inner product, or negated squared L2."""
    if metric == "ip":
        return q @ vectors.T
    return -((q * q).sum(1, keepdims=True) - 2 * q @ vectors.T + (vectors * vectors).sum(1)[None, :])


def _topk(s: np.ndarray, rows: np.ndarray, k: int, valid: int) -> tuple[np.ndarray, np.ndarray]:
    """Best min(k, valid) columns of `s` per query (as `rows` ids), padded with -1 to k."""
    take = min(k, valid)
    scores = np.full((len(s), k), -np.inf, np.float32)
    ids = np.full((len(s), k), -1, np.int64)
    if take == 0:
        return scores, ids
    if take < s.shape[1]:
        part = np.argpartition(-s, take - 1, axis=1)[:, :take]
    else:
        part = np.tile(np.arange(s.shape[1]), (len(s), 1))
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    scores[:, :take] = np.take_along_axis(s, best, axis=1)
    ids[:, :take] = rows[best]
    return scores, ids


def _ann(
    index: VectorIndex,
    q: np.ndarray,
    k: int,
    mask: np.ndarray,
    rows: np.ndarray,
    want: int,
    cfg: FilterSearchConfig,
) -> FilteredHits:
    """ANN with a bitmap selector, widened per short query until each has `want` hits."""
    bitmap = np.packbits(mask, bitorder="little")  # IDSelectorBitmap: bit i of byte i//8, LSB first
    sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
    selectivity = len(rows) / max(index.size, 1)
    ivf = index.ivf
    if ivf is not None:
        base = int(index.search_params.get("nprobe", ivf.nprobe))
        breadth, cap = min(ivf.nlist, max(base, math.ceil(base / selectivity))), int(ivf.nlist)
    elif "HNSW" in index.factory:
        base = int(index.search_params.get("efSearch", 64))
        breadth, cap = max(base, k), cfg.max_ef_search
    else:
        breadth, cap = 0, 0  # Flat: a selector search is exhaustive already
    scores = np.full((len(q), k), -np.inf, np.float32)
    ids = np.full((len(q), k), -1, np.int64)
    todo = np.arange(len(q))
    while len(todo):
        params = _params(index, sel, breadth)
        d, i = index.index.search(q[todo], k, params=params)
        scores[todo] = d if index.metric == "ip" else -d
        ids[todo] = i
        todo = todo[(ids[todo] >= 0).sum(1) < want]
        if not len(todo) or breadth >= cap:
            break
        breadth = min(cap, breadth * 2)
    if len(todo):  # HNSW at its cap: the graph cannot reach enough selected rows
        scores[todo], ids[todo] = exact_topk(index, q[todo], rows, k)
    # A selector search scores with the index's own distance; keep "higher is better" for l2.
    return FilteredHits(scores, ids, "ann", len(rows), breadth)


def _params(index: VectorIndex, sel: faiss.IDSelector, breadth: int) -> faiss.SearchParameters:
    """Per-call parameters carrying the selector (never set on the shared index: other searches run)."""
    params: faiss.SearchParameters
    if index.ivf is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = breadth
    elif "HNSW" in index.factory:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss' stubs
        params.efSearch = breadth  # type: ignore[attr-defined]
    else:
        params = faiss.SearchParameters()
    params.sel = sel
    return params
