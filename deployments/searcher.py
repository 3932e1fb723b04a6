"""Searcher deployment: vectors -> top-k matches from each collection's live index version, hot-swapped in place."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from ray import serve

from index.collections import DEFAULT, CollectionSet, collections_config
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult
from index.model_collections import CollectionsByModel
from index.prompt import NO_PROMPT, DocumentPrompt


@serve.deployment
class Searcher:
    """A CollectionSet (index/collections.py) behind a handle; the collection map is its user_config.

    With `models` (the fused topology serving several models: name -> (fingerprint, document
    prompt), the default first), each collection is checked against the model it names
    (index/model_collections.py), and its status names that model.
    """

    def __init__(
        self,
        fingerprint: str,
        threads: int = 1,
        prompt: DocumentPrompt = NO_PROMPT,
        models: dict[str, tuple[str, DocumentPrompt]] | None = None,
    ) -> None:
        # One OpenMP thread by default: a request searches a handful of queries, where extra
        # threads only add wake-up cost and spin on cores the model replica needs.
        faiss.omp_set_num_threads(threads)
        # `prompt`: the model's document prompt; an index embedded with another one is refused.
        self.collections: CollectionSet | CollectionsByModel = (
            CollectionsByModel(models, next(iter(models)))
            if models
            else CollectionSet(fingerprint, prompt=prompt)
        )

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
        model: str | None = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Matches (grouped: groups) per vector; IndexUnavailable (503), UnknownCollection (404), InvalidInput (422).

        `model`: the name of the model that embedded `vectors` (several models: a collection bound
        to another one is a retryable 503, never a search with the wrong model's vector).
        `group`: the request's group_by (None: the collection's default, index/groups.py).
        """
        if isinstance(self.collections, CollectionsByModel):
            return self.collections.search(vectors, top_k, collection, filter, model, group, query)
        return self.collections.search(vectors, top_k, collection, filter, group, query)

    def check(
        self,
        collection: str,
        filter: Any,
        model: str | None = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> None:
        """Refuse an unknown collection, a bad filter or group_by before the request's model work."""
        if isinstance(self.collections, CollectionsByModel):
            self.collections.check(collection, filter, model, group, query)
        else:
            self.collections.check(collection, filter, group, query)

    def info(self) -> dict[str, Any] | None:
        """The `default` collection's live version, size and last refusal (None without it)."""
        return self.collections.default_status()

    def collections_status(self) -> dict[str, Any] | None:
        """Every collection, its memory and the budget."""
        return self.collections.status()

    def __del__(self) -> None:
        self.collections.close()
