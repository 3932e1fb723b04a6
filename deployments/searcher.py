"""Searcher deployment: vectors -> top-k matches from each collection's live index version, hot-swapped in place."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from ray import serve

from index.collections import DEFAULT, CollectionSet, collections_config
from index.groups import GroupBy
from index.matches import SearchResult
from index.prompt import NO_PROMPT, DocumentPrompt


@serve.deployment
class Searcher:
    """A CollectionSet (index/collections.py) behind a handle; the collection map is its user_config."""

    def __init__(self, fingerprint: str, threads: int = 1, prompt: DocumentPrompt = NO_PROMPT) -> None:
        # One OpenMP thread by default: a request searches a handful of queries, where extra
        # threads only add wake-up cost and spin on cores the model replica needs.
        faiss.omp_set_num_threads(threads)
        # `prompt`: the model's document prompt; an index embedded with another one is refused.
        self.collections = CollectionSet(fingerprint, prompt=prompt)

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: {"collections": {name: root | {index, version}}, "memory_budget_bytes", "poll_seconds"}.

        A `serve deploy` that changes it adds, re-points or removes collections in this replica,
        without restarting it or any model replica.
        """
        self.collections.configure(collections_config(config))

    def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = DEFAULT,
        filter: Any = None,
        group: GroupBy | None = None,
    ) -> SearchResult:
        """Matches (grouped: groups) per vector; IndexUnavailable (503), UnknownCollection (404), InvalidInput (422)."""
        return self.collections.search(vectors, top_k, collection, filter, group)

    def check(self, collection: str, filter: Any, group: GroupBy | None = None) -> None:
        """Refuse an unknown collection, a bad filter or group_by before the request's model work."""
        self.collections.check(collection, filter, group)

    def info(self) -> dict[str, Any] | None:
        """The `default` collection's live version, size and last refusal (None without it)."""
        return self.collections.default_status()

    def collections_status(self) -> dict[str, Any] | None:
        """Every collection, its memory and the budget."""
        return self.collections.status()

    def __del__(self) -> None:
        self.collections.close()
