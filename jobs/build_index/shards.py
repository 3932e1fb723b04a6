"""Sharded index build on Ray: one trained IVF quantizer, shards added in parallel, merged into one.

The driver trains the quantizer on a sample (jobs.build_index pass 1); each actor receives the
trained, empty index and a set of embeddings files, adds their vectors with their global row ids
and computes exact neighbours of the recall queries over its rows; the driver merges the inverted
lists (faiss.merge_into) and the partial top-k. Because every shard shares one quantizer, the
merged index has exactly the lists a single-machine build would have.
"""

from __future__ import annotations

import heapq

import faiss
import numpy as np
import ray

from index.errors import IndexInvalid
from index.faiss_index import IndexConfig, VectorIndex
from index.tuning import ExactKnn
from jobs.common.embeddings_io import EmbeddingsInfo, read_embeddings


def ensure_ray() -> None:
    """Connect to the cluster (default address, as under `ray job submit`) unless already connected."""
    if not ray.is_initialized():
        ray.init()


def assign_files(rows_per_file: tuple[int, ...], shards: int) -> list[list[int]]:
    """Split files into at most `shards` groups of similar row counts (largest file first)."""
    groups: list[tuple[int, int, list[int]]] = [(0, g, []) for g in range(min(shards, len(rows_per_file)))]
    heapq.heapify(groups)
    for i in sorted(range(len(rows_per_file)), key=lambda j: -rows_per_file[j]):
        rows, g, files = heapq.heappop(groups)
        files.append(i)
        heapq.heappush(groups, (rows + rows_per_file[i], g, files))
    return [sorted(files) for _, _, files in sorted(groups, key=lambda t: t[1]) if files]


@ray.remote(num_cpus=1)
class ShardBuilder:
    """Adds one group of files to a copy of the trained empty index."""

    def build(
        self,
        empty_index: np.ndarray,
        factory: str,
        metric: str,
        info: EmbeddingsInfo,
        files: list[int],
        queries: np.ndarray,
        k: int,
        batch_rows: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (serialised shard index, exact top-k scores, exact top-k row ids) over its rows."""
        index = VectorIndex.from_bytes(empty_index, factory, metric)
        exact = ExactKnn(queries, k, metric)
        for batch in read_embeddings(info, columns=[], batch_rows=batch_rows, files=files):
            assert batch.vectors is not None
            index.add(batch.vectors, np.arange(batch.first_row, batch.first_row + batch.size))
            exact.update(batch.vectors, batch.first_row)
        return index.to_bytes(), exact.scores, exact.ids


def add_sharded(
    index: VectorIndex,
    info: EmbeddingsInfo,
    queries: np.ndarray,
    k: int,
    shards: int,
    cfg: IndexConfig,
) -> tuple[VectorIndex, np.ndarray]:
    """Add every vector of `info` to the trained, empty IVF `index` on actors; returns (index, exact ids)."""
    if index.ivf is None:
        raise IndexInvalid(
            f"sharded builds need an IVF factory (merge works on inverted lists), got {index.factory}"
        )
    if not index.index.is_trained or index.size:
        raise IndexInvalid("add_sharded needs a trained, empty index")
    ensure_ray()
    groups = assign_files(info.rows_per_file, shards)
    empty = ray.put(index.to_bytes())
    q = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
    actors = [ShardBuilder.remote() for _ in groups]  # type: ignore[attr-defined]
    refs = [
        a.build.remote(empty, index.factory, index.metric, info, g, q, k, cfg.add_batch_rows)
        for a, g in zip(actors, groups, strict=True)
    ]
    exact = ExactKnn(queries, k, index.metric)
    try:
        for ref in refs:  # merge in a fixed order so the result does not depend on finishing order
            data, scores, ids = ray.get(ref)
            part = VectorIndex.from_bytes(data, index.factory, index.metric)
            # shift_ids=False: shards carry global row ids already.
            faiss.merge_into(index.index, part.index, False)
            exact.merge(scores, ids)
    finally:
        for a in actors:
            ray.kill(a)
    if index.size != info.count:
        raise IndexInvalid(f"sharded build holds {index.size} vectors, expected {info.count}")
    return index, exact.ids
