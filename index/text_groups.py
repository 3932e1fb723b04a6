"""Grouped lexical and hybrid search: widen the fused candidates until k groups fill (Ray-free).

The same rule as dense grouping (index/groups.py): start with enough candidates for 4 rows per
wanted row, grow them x4 until k groups each hold `size` rows, every selectable row was a
candidate, or the cap (GroupSearchConfig.max_candidates) is reached. Without widening, a FAQ
whose best 100 candidates are phrasings of a few answers returned fewer than k groups.

A candidate list at depth n (`Candidates`) is, per mode: lexical, the BM25 top-n within the
selection; hybrid, the fusion of the dense top-n and the lexical top-n (index/hybrid.py). Its
`bound` is the best score a row outside it can have (hybrid: alpha * the n-th dense score +
(1 - alpha) * the n-th BM25 / the query's best; lexical: the n-th BM25), so a min_score above
the bound means nothing better is left: the search stops there as dense does when its
candidates end under min_score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from index.groups import GroupBy, GroupedRows, GroupSearchConfig, pick_groups
from index.hybrid import CANDIDATES


@dataclass(frozen=True)
class Candidates:
    """One query's candidates at some depth, best first, and what lies beyond them."""

    rows: np.ndarray  # int64
    scores: np.ndarray  # float32
    exhausted: bool  # every selectable row that can score was a candidate
    bound: float  # the best score of a row outside `rows` (-inf when exhausted)


def first_depth(k: int, group: GroupBy, cfg: GroupSearchConfig) -> int:
    """The first candidate depth: the fusion's usual depth, and 4 rows per wanted row."""
    return min(cfg.max_candidates, max(CANDIDATES, cfg.first_candidates, 4 * k * group.size))


def search_text_groups(
    candidates: Callable[[int, int], Candidates],
    queries: int,
    keys: np.ndarray,
    k: int,
    group: GroupBy,
    column: str,
    cfg: GroupSearchConfig,
) -> list[GroupedRows]:
    """Per query (0..queries-1) its top-k groups; `candidates(query, depth)` gives its list at a depth."""
    out = []
    for qi in range(queries):
        depth = first_depth(k, group, cfg)
        while True:
            found = candidates(qi, depth)
            rows, scores = found.rows, found.scores
            below = False
            if group.min_score is not None:
                keep = scores >= group.min_score
                rows, scores = rows[keep], scores[keep]
                below = found.bound < group.min_score  # no row left outside can pass
            capped = depth >= cfg.max_candidates
            grouped = pick_groups(rows, scores, keys, k, group, column, found.exhausted or below, capped)
            if grouped is not None:
                out.append(grouped)
                break
            depth = min(cfg.max_candidates, depth * cfg.growth)
    return out
