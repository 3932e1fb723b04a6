"""Duplicate questions: exact pairs (same normalised text), near pairs (cosine >= threshold), groups.

Ray-free. `jobs/find_duplicates/run.py` reads the inputs through the storage layer and runs the near
search over query shards on Ray actors; everything else lives in this package's Ray-free modules and is tested on its own.
`dedup_rows` runs the stages in order.

Rows are numbered in ascending id order (`sort_by_id`), so a pair of row positions (a < b) is
also the pair of ids (id_a < id_b), and every output is the same whatever order the input
files had.

Exact duplicates: equal normalised texts (the normalisation, version NORMALIZATION, and the
hashes: jobs/find_duplicates/exact.py). Near duplicates: a FAISS k-NN search proposes candidates and the exact cosine decides
(jobs/find_duplicates/near.py). Pairs become groups in jobs/find_duplicates/groups.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.errors import InvalidInput
from jobs.find_duplicates.exact import ExactPairs, exact_pairs
from jobs.find_duplicates.groups import connected_components, groups_table, merge_pairs, pairs_table
from jobs.find_duplicates.near import NearPairs, local_search


@dataclass
class Dedup:
    """Result of one run: the two output tables and what was counted on the way."""

    pairs: pa.Table
    groups: pa.Table
    near: NearPairs
    stats: dict[str, Any] = field(default_factory=dict)


def dedup_rows(
    ids: pa.Array,
    vectors: np.ndarray,
    keys: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
    k: int,
    search: Callable[[], NearPairs] | None = None,
    group_values: pa.Array | None = None,
) -> Dedup:
    """Exact and near pairs, then groups, for rows in ascending id order with unit vectors.

    `keys` are `hash_questions` of the rows' texts (None: no exact stage). `search` runs the
    near stage (the job's runs it on Ray actors); by default it runs here (`local_search`).
    """
    check_threshold(threshold)
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}", field="k")
    n = len(vectors)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    exact = exact_pairs(*keys) if keys is not None else ExactPairs.empty()
    seconds["exact"] = time.perf_counter() - started
    started = time.perf_counter()
    near = search() if search is not None else local_search(vectors, k, threshold)
    seconds["near_stage"] = time.perf_counter() - started  # index + search
    started = time.perf_counter()
    pairs = merge_pairs(vectors, exact, near)
    labels = connected_components(n, pairs.a, pairs.b)
    groups = groups_table(ids, labels)
    table = pairs_table(ids, pairs, group_values)
    seconds["pairs_and_groups"] = time.perf_counter() - started
    stats = {
        "rows": n,
        "exact_pairs": pairs.exact_count,
        "near_pairs": pairs.near_count,
        "pairs": len(pairs.a),
        "near_pairs_found": len(near.a),  # incl. pairs that are also exact
        "groups": groups.num_rows,
        "rows_in_groups": int(pc.sum(groups.column("size")).as_py() or 0),
        "largest_group": int(pc.max(groups.column("size")).as_py() or 0),
        "exact_text_groups": exact.groups,
        "exact_groups_listed_as_star": exact.starred,
        "rows_saturated": near.saturated,
        **_group_counts(table),
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    return Dedup(table, groups, near, stats)


def _group_counts(pairs: pa.Table) -> dict[str, int]:
    """With --group-by: pairs within one value and across values (near-identical, different answers)."""
    if "same_group" not in pairs.column_names:
        return {}
    same = int(pc.sum(pairs.column("same_group")).as_py() or 0)
    return {"pairs_same_group": same, "pairs_across_groups": pairs.num_rows - same}


def check_threshold(threshold: float) -> None:
    """Cosine thresholds live in (0, 1]."""
    if not (isinstance(threshold, int | float) and 0.0 < float(threshold) <= 1.0):
        raise InvalidInput(f"threshold must be in (0, 1], got {threshold!r}", field="threshold")
