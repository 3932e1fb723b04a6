"""The near stage on Ray: one index (built in a Ray task, or a checked --index version) in the object
store once, a pool of search actors over query shards, and the brute-force check as a Ray task."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util import ActorPool

import storage
from embedder.errors import ModelMismatch
from embedder.progress import QUIET, Progress
from index import store as index_store
from index.errors import IndexInvalid
from index.faiss_index import VectorIndex
from index.tuning import build_in_memory
from jobs.common.embeddings_io import EmbeddingsInfo
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.near import Agreement, NearPairs, check_agreement, near_pairs


@dataclass(frozen=True)
class IndexBlob:
    """A serialised index and how to use it: what crosses the object store to the search actors."""

    data: np.ndarray  # faiss.serialize_index bytes (uint8)
    factory: str
    metric: str
    search_params: dict[str, int]
    # Index row -> our row (ascending id order); None when the index numbers rows as we do.
    index_rows: np.ndarray | None
    description: dict[str, Any]

    @classmethod
    def of(cls, index: VectorIndex, index_rows: np.ndarray | None, source: str, **facts: Any) -> IndexBlob:
        """The blob of `index`, described as `source` (loaded / built) with its factory, metric,
        search parameters and the given `facts` (root, version, recall, ...)."""
        params = dict(index.search_params)
        return cls(
            data=index.to_bytes(),
            factory=index.factory,
            metric=index.metric,
            search_params=params,
            index_rows=index_rows,
            description={
                "source": source,
                "factory": index.factory,
                "metric": index.metric,
                "search_params": dict(params),
                **facts,
            },
        )


def check_index(cfg: DedupConfig, root: storage.Location, info: EmbeddingsInfo) -> str:
    """The --index version to use, from its manifest alone: refused if made from another model."""
    assert cfg.index is not None
    version = cfg.index_version or index_store.current_version(root)
    if version is None:
        raise IndexInvalid(f"{cfg.index}: no CURRENT index version (build one or pass --index-version)")
    manifest = index_store.verify_version(root.child(version))
    if manifest.fingerprint != info.fingerprint:
        raise ModelMismatch(
            f"index {cfg.index} version {version} was built from model {manifest.fingerprint or '<none>'}, "
            f"the embeddings come from {info.fingerprint or '<none>'}"
        )
    if manifest.dimension != info.dimension or manifest.count != info.count:
        raise IndexInvalid(
            f"index {cfg.index} version {version} holds {manifest.count} x {manifest.dimension} vectors, "
            f"the embeddings {info.count} x {info.dimension}: rebuild it from these embeddings or omit --index"
        )
    return version


def load_index(cfg: DedupConfig, root: storage.Location, version: str, ids: pa.Array) -> IndexBlob:
    """The checked index version, refused unless it holds exactly these embeddings' ids."""
    assert cfg.index is not None
    loaded = index_store.open_version(root, version)
    index_ids = loaded.metadata.column("id")
    if index_ids.type != ids.type:
        raise IndexInvalid(f"index ids are {index_ids.type}, the embeddings' ids are {ids.type}")
    rows = pc.index_in(index_ids, value_set=ids)
    if rows.null_count or len(index_ids) != len(ids):
        raise IndexInvalid(
            f"index {cfg.index} version {version} holds other rows than the embeddings "
            f"({len(index_ids)} ids, {rows.null_count} not in the embeddings; embeddings have {len(ids)}): "
            "rebuild it from these embeddings or omit --index"
        )
    mapping = rows.to_numpy(zero_copy_only=False).astype(np.int64)
    same = bool(np.array_equal(mapping, np.arange(len(mapping))))
    return IndexBlob.of(
        loaded.index,
        None if same else mapping,
        "loaded",
        root=root.uri,
        version=version,
        recall_at_10=loaded.manifest.recall_at_10,
    )


@ray.remote(num_cpus=1)
def built_index(vectors: np.ndarray, factory: str, threads: int) -> IndexBlob:
    """index.tuning.build_in_memory over all rows (inner product, tuned to recall@10), serialised for
    the search actors: a Ray task, so the build runs off the driver's node."""
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index, report = build_in_memory(vectors, factory, "ip")
    return IndexBlob.of(
        index,
        None,
        "built",
        recall_at_10=round(report.recall_at_10, 4),
        build_seconds=round(time.perf_counter() - started, 3),
    )


@ray.remote(num_cpus=1)
class NearSearcher:
    """One search actor: deserialises the index once, then answers query shards."""

    def __init__(self, blob: IndexBlob, vectors: np.ndarray, k: int, threshold: float) -> None:
        faiss.omp_set_num_threads(1)  # one CPU reserved, one thread
        self.index = VectorIndex.from_bytes(blob.data, blob.factory, blob.metric, blob.search_params)
        self.index_rows = blob.index_rows
        self.vectors = vectors  # read-only view of the object store copy
        self.k, self.threshold = k, threshold

    def search(self, start: int, stop: int) -> NearPairs:
        """Near pairs of query rows [start, stop)."""
        return near_pairs(self.index, self.vectors, start, stop, self.k, self.threshold, self.index_rows)


@ray.remote(num_cpus=1)
def checked(vectors: np.ndarray, near: NearPairs, threshold: float, sample: int, seed: int) -> Agreement:
    """check_agreement in a Ray task (one thread), off the driver."""
    faiss.omp_set_num_threads(1)
    return check_agreement(vectors, near, threshold, sample, seed)


def search_on_ray(
    cfg: DedupConfig, vectors_ref: ray.ObjectRef, blob_ref: ray.ObjectRef, n: int, progress: Progress = QUIET
) -> NearPairs:
    """Query shards over a pool of search actors; a row bar on stderr."""
    shards = [(lo, min(n, lo + cfg.shard_rows)) for lo in range(0, n, cfg.shard_rows)]
    actors = [
        NearSearcher.remote(blob_ref, vectors_ref, cfg.k, cfg.threshold)  # type: ignore[attr-defined]
        for _ in range(min(cfg.workers, max(len(shards), 1)))
    ]
    parts: list[NearPairs] = []
    try:
        pool = ActorPool(actors)
        with progress.rows(n, f"near search ({len(actors)} actors, k={cfg.k})") as bar:
            for part, (lo, hi) in zip(
                pool.map(lambda actor, s: actor.search.remote(*s), shards), shards, strict=True
            ):
                parts.append(part)
                bar.update(hi - lo)
    finally:
        for actor in actors:
            ray.kill(actor)  # each holds an index copy: free it before the check
    return NearPairs.concat(parts, n)
