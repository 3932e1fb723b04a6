"""Searcher deployment: vectors -> top-k matches from the live index version, hot-swapped in place."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from ray import serve

from service.index_follower import IndexFollower
from service.stages import SearchResult


@serve.deployment
class Searcher:
    """An IndexFollower (service/index_follower.py) behind a handle."""

    def __init__(self, index_root: str, fingerprint: str, threads: int = 1) -> None:
        # One OpenMP thread by default: a request searches a handful of queries, where extra
        # threads only add wake-up cost and spin on cores the model replica needs.
        faiss.omp_set_num_threads(threads)
        self.follower = IndexFollower(index_root, fingerprint)

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: {"index_version": pin or null to follow CURRENT, "poll_seconds": float}."""
        config = config or {}
        poll = config.get("poll_seconds")
        self.follower.configure(config.get("index_version"), None if poll is None else float(poll))

    def search(self, vectors: np.ndarray, top_k: int) -> SearchResult:
        """Matches per vector; raises IndexUnavailable (503) when no version is loaded."""
        return self.follower.search(vectors, top_k)

    def info(self) -> dict[str, Any]:
        """Live version, size and the last refusal (if any)."""
        return self.follower.status()

    def __del__(self) -> None:
        self.follower.close()
