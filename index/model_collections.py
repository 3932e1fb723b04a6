"""Collections split by the model that matches them: one CollectionSet per model (Ray-free).

A collection names its model (`CollectionSpec.model`, None: the default model). Each model's
CollectionSet checks the fingerprint and document prompt of that model only, so an index built by
another artifact or prompt is refused with its reason while the other collections keep serving.
`split_by_model` is the one place the binding is computed: the in-process ModelSet
(engine/model_set.py) and the fused topology's one Searcher deployment (deployments/searcher.py,
`CollectionsByModel`) both use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from index.collections import DEFAULT, CollectionsConfig, CollectionSet, CollectionSpec
from index.errors import IndexUnavailable, UnknownCollection
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult
from index.prompt import DocumentPrompt


def split_by_model(
    config: CollectionsConfig, models: Sequence[str], default: str
) -> tuple[dict[str, CollectionsConfig], dict[str, str]]:
    """Each model's share of the collections and collection -> model; an unknown model is a ValueError.

    Checked whole before anything changes, so a refused map leaves every model's collections as
    they were. The memory budget applies to each model's share on its own.
    """
    parts: dict[str, dict[str, CollectionSpec]] = {name: {} for name in models}
    bound: dict[str, str] = {}
    for name, spec in config.collections.items():
        model = spec.model or default
        if model not in parts:
            raise ValueError(
                f"collection {name!r} names model {model!r}, which this service does not serve "
                f"(models: {', '.join(models)})"
            )
        parts[model][name] = spec
        bound[name] = model
    return {name: replace(config, collections=specs) for name, specs in parts.items()}, bound


class CollectionsByModel:
    """Every collection of one search replica, each in the CollectionSet of the model it names."""

    def __init__(self, models: Mapping[str, tuple[str, DocumentPrompt]], default: str) -> None:
        """`models`: name -> (fingerprint, document prompt); `default`: the model of unbound collections."""
        if default not in models:
            raise ValueError(f"default model {default!r} is not one of {sorted(models)}")
        self.default = default
        self.sets = {name: CollectionSet(fp, prompt=prompt) for name, (fp, prompt) in models.items()}
        self.bound: dict[str, str] = {}

    def configure(self, config: CollectionsConfig) -> None:
        """Add, re-point and remove collections in place, each under its model."""
        parts, bound = split_by_model(config, list(self.sets), self.default)
        for name, part in parts.items():
            self.sets[name].configure(part)
        self.bound = bound

    def _set_of(self, collection: str, asker: str | None = None) -> CollectionSet:
        model = self.bound.get(collection)
        if model is not None and asker is not None and asker != model:
            # The caller's binding is older or newer than this replica's (a `serve deploy` reaches
            # the Ingress and the Searcher at slightly different moments): searching with the
            # other model's vector would answer wrongly, so the request is retried instead.
            raise IndexUnavailable(f"collection {collection!r} is being re-bound to model {model!r}; retry")
        if model is not None:
            return self.sets[model]
        if not self.bound and collection == DEFAULT:
            raise IndexUnavailable("this service was started without an index; /match is unavailable")
        raise UnknownCollection(
            f"collection {collection!r} does not exist (collections: {sorted(self.bound) or 'none'})",
            field="collection",
        )

    def check(
        self,
        collection: str,
        filter_spec: Any,
        model: str | None = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> None:
        """Refuse an unknown collection (404), a bad filter or group_by (422) before any model work.

        `model`: the model the caller will embed the question with (503 if the collection is bound
        to another one here).
        """
        self._set_of(collection, model).check(collection, filter_spec, group, query)

    def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = DEFAULT,
        filter_spec: Any = None,
        model: str | None = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Top-k matches (grouped: groups) from one collection's live version (`model`: the vectors' model)."""
        return self._set_of(collection, model).search(vectors, top_k, collection, filter_spec, group, query)

    def default_status(self) -> dict[str, Any] | None:
        """The `default` collection's status (or None without it)."""
        model = self.bound.get(DEFAULT)
        return None if model is None else self.sets[model].default_status()

    def status(self) -> dict[str, Any] | None:
        """Every collection's status (each naming its model), memory used and the budget; None without any."""
        merged: dict[str, Any] | None = None
        for model, one in self.sets.items():
            status = one.status()
            if status is None:
                continue
            if merged is None:
                merged = {"memory_budget_bytes": status["memory_budget_bytes"], "memory_used_bytes": 0}
                merged["collections"] = {}
            merged["memory_used_bytes"] += status["memory_used_bytes"]
            for name, s in status["collections"].items():
                merged["collections"][name] = {**s, "model": model}
        return merged

    def close(self) -> None:
        """Stop following every collection."""
        for one in self.sets.values():
            one.close()
