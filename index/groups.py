"""Grouped search: the top-k *groups* of a metadata column (Qdrant's search_groups), Ray-free.

A FAQ stores many phrasings of one question, all pointing to one answer; a plain top-5 then
repeats an answer. Grouping by a column (`answer`, an answer id) returns the k best distinct
values instead, each with its best `size` rows.

How: candidates are taken in score order from the same planner the filtered search uses
(index/filtered_search.py: exact where the selection is small or the index is Flat, the ANN
index otherwise, always filling the count it is asked for), and the candidate count is widened
(x4) until k groups each hold `size` rows, every selectable row was seen, or the cap is reached.
Once k distinct groups appear among the best C candidates in exact score order, they are the
top-k groups by best score: a group not seen yet scores at most the C-th candidate. Scores are
the ungrouped search's (exact inner products on Flat / IVF-Flat / HNSW-Flat; exact over the
stored codes on SQ8/PQ).

Rows whose group value is null belong to no group and are never returned (Qdrant does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.errors import InvalidInput
from index.faiss_index import VectorIndex
from index.filtered_search import FilterSearchConfig, search_filtered

# Why a grouped search stopped widening (GroupInfo.stopped).
Stopped = Literal["filled", "exhausted", "capped"]
FILLED: Stopped = "filled"  # k groups, each with `size` rows
EXHAUSTED: Stopped = "exhausted"  # every selectable row (within the filter, >= min_score) was a candidate
CAPPED: Stopped = "capped"  # max_candidates reached first: more groups (or rows of a group) may exist


@dataclass(frozen=True)
class GroupSearchConfig:
    """Tunables of the grouped search's widening."""

    # First candidate count: at least this, and 4 rows per wanted row (FAQ corpora hold ~5-15
    # phrasings per answer, so one pass usually fills k groups).
    first_candidates: int = 64
    # Most candidates one query may examine. 4,096 is the HNSW plan's efSearch cap
    # (FilterSearchConfig.max_ef_search), past which the ANN plan falls back to gathering every
    # selected row; an IVF search of 4,096 ids scans a few lists more. Grouping them is a few
    # numpy passes. Past it the answer says `capped` instead of scanning a 10M-row index.
    max_candidates: int = 4096
    # How much the candidate count grows per widening: few passes, at most ~4/3 of the last one's work.
    growth: int = 4


@dataclass(frozen=True)
class GroupBy:
    """What a request asked about grouping.

    `column`: the metadata column to group by; None with `inherit` means "the collection's
    default group_by, if it has one", None without it means ungrouped (an explicit null).
    `min_score`: rows scoring below are no candidates (None: the index version's default, if any).
    """

    column: str | None = None
    size: int = 1
    inherit: bool = True
    min_score: float | None = None

    def resolve(self, default: str | None) -> str | None:
        """The column this request groups by, given the collection's default."""
        if self.column is not None:
            return self.column
        return default if self.inherit else None


@dataclass(frozen=True)
class GroupInfo:
    """How one query's grouped search went: what the response's `grouping` says."""

    by: str
    size: int
    groups: int  # groups returned (< k when exhausted or capped)
    candidates: int  # rows examined, the best ones by score (within the filter, >= min_score)
    stopped: Stopped


@dataclass(frozen=True)
class GroupedRows:
    """One query's answer: rows best group first (a group's rows best first), per row its group."""

    rows: np.ndarray  # int64 row ids
    scores: np.ndarray  # float32
    group_hits: np.ndarray  # per row: rows of its group among the candidates examined
    info: GroupInfo


def group_keys(metadata: pa.Table, column: str) -> np.ndarray:
    """Per row a dense int code of its `column` value (-1 for null); InvalidInput if it cannot group."""
    if column not in metadata.column_names:
        have = ", ".join(metadata.column_names)
        raise InvalidInput(
            f"group_by: {column!r} is not a column of this collection (columns: {have})", field="group_by"
        )
    values = metadata.column(column)
    kind = values.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
        raise InvalidInput(
            f"group_by: column {column!r} holds {kind}; group by a string or integer column",
            field="group_by",
        )
    encoded = pc.dictionary_encode(values).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    if encoded.null_count:
        codes = np.where(encoded.is_null().to_numpy(zero_copy_only=False), -1, codes)
    # int32: 4 bytes a row kept per grouped column (dictionary indices are int32 already).
    return np.asarray(codes, dtype=np.int32)


def search_groups(
    index: VectorIndex,
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    group: GroupBy,
    column: str,
    mask: np.ndarray | None = None,
    cfg: GroupSearchConfig | None = None,
    filter_cfg: FilterSearchConfig | None = None,
) -> list[GroupedRows]:
    """Per query the top-k groups of `keys` (one code per row) among the rows `mask` selects."""
    cfg = cfg or GroupSearchConfig()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    mask = np.ones(index.size, dtype=bool) if mask is None else mask
    mask = mask & (keys >= 0)  # null-group rows are never candidates
    available = int(mask.sum())
    count = min(available, cfg.max_candidates, max(cfg.first_candidates, 4 * k * group.size))
    out: list[GroupedRows | None] = [None] * len(q)
    todo = np.arange(len(q))
    while len(todo):
        hits = search_filtered(index, q[todo], max(count, 1), mask, filter_cfg)
        still = []
        for j, qi in enumerate(todo):
            found = _group_one(hits.scores[j], hits.rows[j], keys, k, group, column, count, available, cfg)
            if found is None:
                still.append(qi)
            else:
                out[qi] = found
        todo = np.asarray(still, dtype=np.int64)
        count = min(available, cfg.max_candidates, count * cfg.growth)
    return [g for g in out if g is not None]


def _group_one(
    scores: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    k: int,
    group: GroupBy,
    column: str,
    count: int,
    available: int,
    cfg: GroupSearchConfig,
) -> GroupedRows | None:
    """Group one query's candidates; None when it must widen (not filled, not exhausted, not capped)."""
    keep = rows >= 0
    below = False
    if group.min_score is not None:
        passing = scores >= group.min_score
        below = bool((keep & ~passing).any())  # candidates end under min_score: nothing better is left
        keep &= passing
    exhausted = below or count >= available
    return pick_groups(
        rows[keep], scores[keep], keys, k, group, column, exhausted, count >= cfg.max_candidates
    )


def pick_groups(
    rows: np.ndarray,
    scores: np.ndarray,
    keys: np.ndarray,
    k: int,
    group: GroupBy,
    column: str,
    exhausted: bool,
    capped: bool,
) -> GroupedRows | None:
    """The top-k groups of best-first candidates, each its best `size` rows; None to widen.

    None when fewer than k groups hold `size` rows and the candidates were neither every
    selectable row (`exhausted`) nor the most one query may examine (`capped`). Shared by every
    mode: dense here, lexical and hybrid over their fused lists (index/text_groups.py).
    """
    codes = keys[rows]
    uniq, first, counts = np.unique(codes, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")[:k]  # by first appearance: by best score
    top, top_counts = uniq[order], counts[order]
    filled = len(top) == k and bool((top_counts >= group.size).all())
    if not (filled or exhausted or capped):
        return None
    stopped = FILLED if filled else (EXHAUSTED if exhausted else CAPPED)
    picked: list[np.ndarray] = []
    hits: list[np.ndarray] = []
    for code, n in zip(top.tolist(), top_counts.tolist(), strict=True):
        members = np.flatnonzero(codes == code)[: group.size]  # candidates are best first
        picked.append(members)
        hits.append(np.full(len(members), n, np.int64))
    at = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    info = GroupInfo(column, group.size, len(top), len(rows), stopped)
    return GroupedRows(rows[at], scores[at], np.concatenate(hits) if hits else at, info)
