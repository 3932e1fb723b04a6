"""FAISS vector index: choose a factory, train, add with row ids, search, save/load, measure recall.

Ray-free. Row id i in the index is row i of the index's metadata table (docs/contracts.md), so
corpus ids of any type (int or string) live in the metadata, never inside FAISS.
Scores are always "higher is better": the inner product for metric "ip" (cosine on normalised
vectors) and the negated squared L2 distance for metric "l2".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import faiss
import numpy as np

from embedder.errors import InvalidInput
from index.errors import IndexInvalid

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass(frozen=True)
class IndexConfig:
    """Tunables for building and searching an index; recorded in every index manifest."""

    # Exact search is fast enough (a few ms per query on 2 cores at dim 384) below this size,
    # and exact means recall 1.0 with no training (DESIGN.md: Flat below ~100k).
    flat_max: int = 100_000
    # IVF-Flat keeps full vectors (bytes/vector = 4*dim) and is the best recall/speed trade up
    # to ~1M; beyond, the coarse quantizer uses HNSW so assigning vectors to lists stays cheap.
    ivf_max: int = 1_000_000
    # Index memory the auto factory may use. IVF-Flat is chosen while its full float32 vectors
    # fit (2.78M vectors at dim 384); past that, IVF-SQ8 (1 byte per dimension). Measured by
    # `python -m bench.index scale` (bench/results/index_scale.json): SQ8 keeps recall@10 within ~0.01 of
    # IVF-Flat at a quarter of the memory, while SQ6 (0.92) and refine-free PQ (< 0.4) miss
    # the 0.95 target on sentence-embedding-like data. 10M x 384 in SQ8 is 3.65 GiB.
    memory_budget_bytes: int = 4 * 1024**3
    # nlist = lists_per_sqrt * sqrt(N), rounded to a power of two; FAISS guidance is 4..16.
    # 4 keeps lists long enough that a small nprobe already finds most neighbours.
    lists_per_sqrt: float = 4.0
    # k-means costs ~ nlist^2 * train_per_list; 8192 lists train in ~4 min on 2 cores and keep
    # lists short enough at 10M (1,220 vectors each) for a ~1 ms single query at nprobe 16.
    # sqrt-rule's 16384 at 10M would take ~15 min to train for little gain.
    max_nlist: int = 8192
    # k-means needs >= 39 points per centroid (FAISS warns below); 64 gives stable centroids
    # while keeping training to a sample, not the corpus.
    train_per_list: int = 64
    # Cap on training rows so the sample fits in memory (1M x 384 float32 = 1.5 GB).
    max_train_rows: int = 1_000_000
    # PQ codebooks have 256 centroids per sub-quantizer: they need this many rows at least.
    min_pq_train_rows: int = 65_536
    # Starting search breadth; tuning doubles it until target_recall is met on the held-out sample.
    nprobe: int = 8
    ef_search: int = 64
    # Upper bounds for tuning, so a hopeless index cannot turn into an exhaustive scan silently.
    max_nprobe: int = 1024
    max_ef_search: int = 1024
    # Recall@10 the tuned index must reach on a sample of the corpus' own vectors.
    target_recall: float = 0.95
    # `build_index --update` may widen nprobe / efSearch to at most this many times the current
    # version's value to keep target_recall; needing more means the trained quantizer no longer
    # fits the data (drift), and the update retrains from scratch instead of slowing every search.
    update_max_widen: int = 2
    # Queries for the recall check: 1000 gives a +-0.7% standard error on recall@10.
    recall_sample: int = 1000
    # Rows per add() call: bounded memory while adding; large enough to amortise FAISS overhead.
    add_batch_rows: int = 65_536
    # Seed for every sample drawn (training, recall queries) so builds are reproducible.
    seed: int = 1234


def metric_code(metric: str) -> int:
    """FAISS metric constant for "ip" or "l2"."""
    try:
        return METRICS[metric]
    except KeyError:
        raise InvalidInput(
            f"metric must be one of {sorted(METRICS)}, got {metric!r}", field="metric"
        ) from None


def _pow2(x: float) -> int:
    return int(2 ** round(math.log2(max(x, 1.0))))


def full_vector_bytes(n: int, dim: int) -> int:
    """Index memory of IVF-Flat: float32 vectors plus an int64 id each."""
    return n * (4 * dim + 8)


def sq8_bytes(n: int, dim: int) -> int:
    """Index memory of IVF-SQ8: one byte per dimension plus an int64 id each."""
    return n * (dim + 8)


def choose_factory(n: int, dim: int, cfg: IndexConfig | None = None, kind: str = "auto") -> str:
    """FAISS factory string for n vectors of `dim` (kind: auto | flat | ivf | hnsw | compressed).

    auto: exact Flat below flat_max; IVF-Flat while full vectors fit memory_budget_bytes;
    IVF-SQ8 beyond (also when SQ8 itself exceeds the budget: the cheaper codes measured here
    cannot reach the recall target, and the recall gate would refuse them anyway).
    """
    cfg = cfg or IndexConfig()
    if kind == "auto":
        if n < cfg.flat_max:
            kind = "flat"
        elif full_vector_bytes(n, dim) > cfg.memory_budget_bytes:
            kind = "compressed"
        else:
            kind = "ivf"
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32"
    # Never more lists than the data can train (train_per_list points each), nor than max_nlist.
    nlist = min(
        _pow2(cfg.lists_per_sqrt * math.sqrt(n)),
        _pow2(max(n / cfg.train_per_list, 1)),
        cfg.max_nlist,
    )
    quantizer = "_HNSW32" if n > cfg.ivf_max else ""
    if kind == "ivf":
        return f"IVF{max(nlist, 1)}{quantizer},Flat"
    if kind == "compressed":
        return f"IVF{max(nlist, 1)}{quantizer},SQ8"
    raise InvalidInput(f"unknown index kind {kind!r}", field="factory")


@dataclass
class VectorIndex:
    """A FAISS index plus what it takes to use it: factory, metric and search parameters."""

    index: faiss.Index
    factory: str
    metric: str
    search_params: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, dim: int, factory: str, metric: str = "ip") -> VectorIndex:
        """An empty (untrained) index from a factory string."""
        try:
            index = faiss.index_factory(int(dim), factory, metric_code(metric))
        except RuntimeError as exc:
            raise InvalidInput(f"bad FAISS factory {factory!r}: {exc}", field="factory") from exc
        _clip_scalar_quantizer_range(index)
        return cls(index=index, factory=factory, metric=metric)

    @property
    def dimension(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    @property
    def size(self) -> int:
        """Number of vectors stored."""
        return int(self.index.ntotal)

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        """The IVF layer if this is an IVF index (possibly behind a pre-transform), else None."""
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def train_rows(self, n: int, cfg: IndexConfig) -> int:
        """How many sample rows training should use for a corpus of n (0 if no training is needed)."""
        if self.index.is_trained:
            return 0
        ivf = self.ivf
        want = cfg.train_per_list * (ivf.nlist if ivf is not None else 1)
        if "PQ" in self.factory:
            want = max(want, cfg.min_pq_train_rows)
        return int(min(n, want, cfg.max_train_rows))

    def train(self, sample: np.ndarray) -> None:
        """Train quantizers (no-op for indexes that need none)."""
        if not self.index.is_trained:
            try:
                self.index.train(_f32(sample, self.dimension))
            except RuntimeError as exc:  # e.g. fewer training points than IVF lists
                raise IndexInvalid(f"training {self.factory} on {len(sample)} vectors failed: {exc}") from exc

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Add vectors; ids default to the next row positions (ntotal, ntotal+1, ...)."""
        x = _f32(vectors, self.dimension)
        if ids is None:
            self.index.add(x)
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.ivf is not None:
            self.index.add_with_ids(x, ids)
        elif (
            ids.size
            and ids[0] == self.size
            and np.array_equal(ids, np.arange(self.size, self.size + len(ids)))
        ):
            self.index.add(x)  # Flat/HNSW number rows sequentially, which is what these ids ask for
        else:
            raise IndexInvalid(f"{self.factory} cannot take arbitrary ids; add rows in order or use IVF")

    def set_search_params(self, params: Mapping[str, int]) -> None:
        """Apply runtime parameters (nprobe, efSearch, quantizer_efSearch)."""
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self.index, name, int(value))
        self.search_params = {**self.search_params, **{k: int(v) for k, v in params.items()}}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids), best first; scores higher-is-better; id -1 where fewer than k exist."""
        q = _f32(queries, self.dimension)
        dist, ids = self.index.search(q, int(k))
        return (dist if self.metric == "ip" else -dist), ids

    def to_bytes(self) -> np.ndarray:
        """Serialised index (uint8 array), e.g. to ship to a Ray actor."""
        return faiss.serialize_index(self.index)

    @classmethod
    def from_bytes(
        cls, data: np.ndarray, factory: str, metric: str, params: Mapping[str, int] | None = None
    ) -> VectorIndex:
        """Inverse of to_bytes."""
        out = cls(index=faiss.deserialize_index(data), factory=factory, metric=metric)
        if params:
            out.set_search_params(params)
        return out

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the index file; returns its size in bytes."""
        faiss.write_index(self.index, os.fspath(path))
        return os.path.getsize(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        factory: str,
        metric: str,
        params: Mapping[str, int] | None = None,
        mmap: bool = False,
    ) -> VectorIndex:
        """Read an index file and re-apply its search parameters.

        mmap: map the inverted lists instead of reading them (IVF only; others read normally),
        for checks that must not hold a second copy of a many-GiB index in memory.
        """
        try:
            index = faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as exc:
            raise IndexInvalid(f"cannot read FAISS index {path}: {exc}") from exc
        out = cls(index=index, factory=factory, metric=metric)
        if params:
            out.set_search_params(params)
        return out

    def bytes_per_vector(self) -> float:
        """Serialised size divided by vector count (includes lists, codebooks, graph links)."""
        return float(self.to_bytes().nbytes) / max(self.size, 1)


def _clip_scalar_quantizer_range(index: faiss.Index) -> None:
    """Train SQ ranges on the 0.1% / 99.9% quantiles of each dimension instead of min / max.

    With min / max a few outliers stretch the 256 steps over a wide range; clipping them costs
    those outliers a little and buys every other value finer steps. Measured on 1M clustered
    vectors, IVF2048,SQ8: recall@10 0.9806 -> 0.9832 at the same nprobe (RS_optim: 0.981, and
    its training took minutes).
    """
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    sq = getattr(faiss.downcast_index(ivf), "sq", None)
    if sq is not None:
        sq.rangestat = faiss.ScalarQuantizer.RS_quantiles
        sq.rangestat_arg = 0.001


def _f32(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidInput(f"expected vectors of shape (n, {dim}), got {x.shape}", field="vectors")
    return x


def chunks(vectors: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """Consecutive row slices of at most `rows` rows."""
    for start in range(0, len(vectors), rows):
        yield vectors[start : start + rows]
