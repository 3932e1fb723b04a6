"""Several models in one service: named backends, the default one, and which collection each matches.

Each model is its own `Backend` (its own artifact, ModelScheduler and collections), so a pass, an
overload or a bad input of one model never touches another's: fairness and fault isolation stay
per model, as they were for the one model. A collection names its model (`CollectionSpec.model`,
None: the default model); `split` hands each model only the collections bound to it, so each
model's CollectionSet refuses an index built by another artifact or another document prompt with
its reason, as it always has, while the other collections keep serving.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.backend import Backend
from engine.errors import UnknownModel
from engine.inprocess import InProcessBackend
from index.collections import CollectionsConfig
from index.errors import UnknownCollection
from index.model_collections import split_by_model


class ModelSet:
    """The models one service serves, keyed by the name requests give in their `model` field."""

    def __init__(self, backends: Mapping[str, Backend], default: str | None = None) -> None:
        if not backends:
            raise ValueError("a service needs at least one model")
        for name, backend in backends.items():
            if backend.model.name != name:  # responses report model.name: the two must agree
                raise ValueError(f"model {name!r}: its backend reports the name {backend.model.name!r}")
        self.backends = dict(backends)
        self.default = default if default is not None else next(iter(self.backends))
        if self.default not in self.backends:
            raise ValueError(f"default model {self.default!r} is not one of the models {self.names}")
        # collection -> model name, from the last `split` (empty: every collection is the default's).
        self.bound: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        """The served models' names, the default first."""
        return [self.default, *(n for n in self.backends if n != self.default)]

    def get(self, name: str | None) -> Backend:
        """The backend of a model name (None: the default model).

        With one model, any name is that model: OpenAI clients must send a `model` (LangChain's
        default is "text-embedding-ada-002"), and a one-model service has always ignored it.
        """
        if name is None or len(self.backends) == 1:
            return self.backends[self.default]
        found = self.backends.get(name)
        if found is None:
            raise UnknownModel(f"model {name!r} is not served here (models: {', '.join(self.names)})")
        return found

    def model_of(self, collection: str) -> str:
        """The name of the model that matches a collection (the default for one it does not know)."""
        return self.bound.get(collection, self.default)

    def for_collection(self, collection: str) -> Backend:
        """The backend holding a collection; an unknown one is a 404 listing every model's collections."""
        if len(self.backends) > 1 and self.bound and collection not in self.bound:
            raise UnknownCollection(
                f"collection {collection!r} does not exist (collections: {sorted(self.bound)})",
                field="collection",
            )
        return self.backends[self.model_of(collection)]

    def split(self, config: CollectionsConfig) -> dict[str, CollectionsConfig]:
        """Each model's share of the collections; a collection naming an unknown model is refused.

        The memory budget applies to each model's collections on their own (each CollectionSet
        counts what it holds).
        """
        parts, self.bound = split_by_model(config, list(self.backends), self.default)
        return parts

    def configure(self, config: CollectionsConfig) -> None:
        """Bind the collections to the in-process models (python -m service, the inline topology).

        Checked before anything changes, so a refused map leaves every model's collections as they were.
        """
        parts = self.split(config)
        for name, part in parts.items():
            backend = self.backends[name]
            if isinstance(backend, InProcessBackend):
                backend.collections.configure(part)

    def close(self) -> None:
        """Stop every in-process model's collection followers."""
        for backend in self.backends.values():
            if isinstance(backend, InProcessBackend):
                backend.collections.close()
