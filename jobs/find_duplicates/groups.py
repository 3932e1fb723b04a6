"""Pairs and groups: the exact and near pairs merged, connected components as groups, the output
tables; and the row order every stage shares (ascending id, unit vectors)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.errors import InvalidInput
from jobs.find_duplicates.exact import ExactPairs
from jobs.find_duplicates.near import NearPairs, pair_cosines, unique_pair_positions

# ---- pairs and groups -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """All pairs, each once, ascending (a, b): kind exact wins when both stages found a pair."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    exact: np.ndarray  # bool

    @property
    def exact_count(self) -> int:
        """Pairs of kind exact."""
        return int(self.exact.sum())

    @property
    def near_count(self) -> int:
        """Pairs of kind near."""
        return int(len(self.a) - self.exact.sum())


def merge_pairs(vectors: np.ndarray, exact: ExactPairs, near: NearPairs) -> Pairs:
    """One list: exact pairs (scored by their cosine) and near pairs not already exact."""
    n = len(vectors)
    a = np.concatenate([exact.a, near.a]).astype(np.int64)
    b = np.concatenate([exact.b, near.b]).astype(np.int64)
    score = np.concatenate([pair_cosines(vectors, exact.a, exact.b), near.score]).astype(np.float32)
    keep = unique_pair_positions(a, b, n)  # exact ones come first, so they win
    return Pairs(a[keep], b[keep], score[keep], keep < len(exact.a))


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over n rows and edges (a[i], b[i]): each row's label is the smallest row of its component.

    Vectorised hook-and-compress: every round hooks each root that has an edge to a smaller
    root onto the smallest such root (roots only ever point to smaller rows, so there are no
    cycles), then compresses every path by pointer jumping. Each round with an unsatisfied edge
    removes at least one root, so it terminates; duplicate graphs (small components) take a few.
    """
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            break
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def group_id(members: Sequence[Any]) -> str:
    """Deterministic id of a group: a hash of its sorted member ids (same members, same id)."""
    canon = "\x1f".join(f"{type(m).__name__}:{m}" for m in members)
    return "g-" + hashlib.blake2b(canon.encode("utf-8"), digest_size=8).hexdigest()


def groups_table(ids: pa.Array, labels: np.ndarray) -> pa.Table:
    """Groups (components of 2+ rows): group_id, member_ids (ascending), representative, size.

    The representative is the member with the smallest id (stable as a group grows from day to
    day unless a smaller id joins); rows are in ascending representative order.
    """
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)
    in_group = np.flatnonzero(sizes[labels] >= 2)
    order = in_group[np.argsort(labels[in_group], kind="stable")]  # by label, then by row (= id)
    reps = np.flatnonzero(sizes >= 2)  # a label is its component's smallest row
    counts = sizes[reps]
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    members = ids.take(pa.array(order, pa.int64()))
    member_lists = members.to_pylist()
    group_ids = [group_id(member_lists[offsets[i] : offsets[i + 1]]) for i in range(len(reps))]
    return pa.table(
        {
            "group_id": pa.array(group_ids, pa.string()),
            "member_ids": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), members),
            "representative": ids.take(pa.array(reps, pa.int64())),
            "size": pa.array(counts, pa.int64()),
        }
    )


def pairs_table(ids: pa.Array, pairs: Pairs, group_values: pa.Array | None = None) -> pa.Table:
    """pairs.parquet: id_a < id_b, score (cosine), kind (exact | near); with group values (one per
    row, as `ids`) also same_group: both rows hold the same non-null value."""
    kinds = np.where(pairs.exact, "exact", "near")
    columns = {
        "id_a": ids.take(pa.array(pairs.a, pa.int64())),
        "id_b": ids.take(pa.array(pairs.b, pa.int64())),
        "score": pa.array(pairs.score, pa.float32()),
        "kind": pa.array(kinds.tolist(), pa.string()),
    }
    if group_values is not None:
        a = group_values.take(pa.array(pairs.a, pa.int64()))
        b = group_values.take(pa.array(pairs.b, pa.int64()))
        columns["same_group"] = pc.fill_null(pc.equal(a, b), False)
    return pa.table(columns)


# ---- row order --------------------------------------------------------------------------------


def id_order(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Positions that sort ids ascending; InvalidInput when an id is null or repeated."""
    if ids.null_count:
        raise InvalidInput(f"{ids.null_count} null id(s) in the embeddings", field="id")
    order = pc.sort_indices(ids).to_numpy()
    ranked = ids.take(pa.array(order))
    if len(ranked) > 1:
        same = pc.equal(ranked.slice(1), ranked.slice(0, len(ranked) - 1))
        repeats = pc.sum(same).as_py() or 0
        if repeats:
            first = ranked.filter(pa.concat_arrays([pa.array([False]), _flat(same)]))[0].as_py()
            raise InvalidInput(f"{repeats} repeated id(s) in the embeddings, e.g. {first!r}", field="id")
    return order


def _flat(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    return x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x


def sort_by_id(
    ids: pa.Array | pa.ChunkedArray, vectors: np.ndarray, texts: Sequence[str | None] | None = None
) -> tuple[pa.Array, np.ndarray, list[str | None] | None]:
    """Rows in ascending id order (what `dedup_rows` expects)."""
    order = id_order(ids)
    sorted_texts = None if texts is None else [texts[i] for i in order.tolist()]
    return _flat(ids.take(pa.array(order))), np.ascontiguousarray(vectors[order]), sorted_texts


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place (zero rows stay zero); returns the same array."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, np.maximum(norms, 1e-12), out=vectors)
    return vectors
