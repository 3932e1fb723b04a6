"""What a search answers: the matches per query and which index version gave them.

Built by the index follower (index/follower.py) and read by the service; they cross Serve
handles from the Searcher deployment, so they are plain frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from index.groups import GroupInfo


@dataclass(frozen=True)
class Match:
    """One stored question found for a query."""

    id: int | str
    score: float
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON form: id, score, then the stored columns."""
        return {"id": self.id, "score": self.score, **self.fields}


@dataclass(frozen=True)
class SearchResult:
    """Matches per query, best first, and which index version answered."""

    matches: list[list[Match]]
    index_version: str
    fingerprint: str
    # min_score /match applies when a request gives none (the version's thresholds.json), or None.
    default_min_score: float | None = None
    # Rows the request's filter selected in this version (None without a filter).
    selected: int | None = None
    collection: str = "default"
    # Per query, how its grouped search went (None: an ungrouped search); see index/groups.py.
    grouping: list[GroupInfo] | None = None
    mode: str = "dense"  # the mode the search ran in (index/hybrid.py)
    alpha: float | None = None  # the hybrid weight used (hybrid mode only)
