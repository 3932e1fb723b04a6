"""Collections: named index roots served by one model, each following its own CURRENT (Ray-free).

A collection is an index root (`indexes/<name>`, local or a URI) with its own versions, CURRENT
and thresholds. `CollectionSet` holds one IndexFollower per collection, so each hot-swaps on its
own with the follower's guarantees (no failed request, a refused version keeps the old one, the
reason in the status). `configure` adds, re-points and removes collections in place, which is
what a `serve deploy` of a changed user_config calls: the model replicas are not restarted.

Memory: each collection's resident bytes (index file, metadata, filter columns) are reported; with
a budget, a version that would take the sum over it is refused like a broken one (the collection's
old version, or nothing if it is new, stays; no other collection is unloaded to make room).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import storage
from embedder.errors import InvalidInput
from index.errors import IndexUnavailable, UnknownCollection
from index.follower import DEFAULT_POLL_SECONDS, IndexFollower
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult
from index.prompt import NO_PROMPT, DocumentPrompt
from index.searcher import IndexSearcher

log = logging.getLogger("qmatch.collections")
DEFAULT = "default"
# URL- and metric-label-safe names; `default` is what the single `index` argument is called.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class CollectionSpec:
    """One collection: its index root, an optional pinned version (None follows CURRENT), the
    name of the model that matches it (None: the service's default model) and the metadata column
    /match groups by when a request does not say (None: ungrouped; index/groups.py)."""

    index: str
    version: str | None = None
    model: str | None = None
    group_by: str | None = None


@dataclass(frozen=True)
class CollectionsConfig:
    """The collection map and its memory budget; the Searcher deployment's (or inline Ingress's) user_config."""

    collections: dict[str, CollectionSpec] = field(default_factory=dict)
    # Resident bytes all collections together may take; 0 = no budget. A version that would
    # push the total over it is refused with the numbers in its reason.
    memory_budget_bytes: int = 0
    # Seconds between looks at each collection's CURRENT (a stat and a small read).
    poll_seconds: float = DEFAULT_POLL_SECONDS


def collections_config(data: Mapping[str, Any] | None) -> CollectionsConfig:
    """Parse {"collections": {name: uri | {"index": uri, "version": pin, "model": name, "group_by": column}},
    "memory_budget_bytes", "poll_seconds"}."""
    data = dict(data or {})
    unknown = set(data) - {"collections", "memory_budget_bytes", "poll_seconds"}
    if unknown:
        raise ValueError(f"unknown collections setting(s) {sorted(unknown)}")
    specs: dict[str, CollectionSpec] = {}
    for name, value in dict(data.get("collections") or {}).items():
        if not _NAME.match(str(name)):
            raise ValueError(f"collection name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        if isinstance(value, str):
            specs[name] = CollectionSpec(value)
        elif isinstance(value, Mapping) and isinstance(value.get("index"), str):
            extra = set(value) - {"index", "version", "model", "group_by"}
            if extra:
                raise ValueError(f"collection {name!r}: unknown key(s) {sorted(extra)}")
            model, group_by = value.get("model"), value.get("group_by")
            if model is not None and not isinstance(model, str):
                raise ValueError(f"collection {name!r}: model must be a model name")
            if group_by is not None and not isinstance(group_by, str):
                raise ValueError(f"collection {name!r}: group_by must be a metadata column name")
            specs[name] = CollectionSpec(
                value["index"], value.get("version") or None, model or None, group_by or None
            )
        else:
            raise ValueError(
                f"collection {name!r}: give an index root (or {{index: <root>, version: <pin>, model: <name>}})"
            )
    budget = int(data.get("memory_budget_bytes") or 0)
    poll = float(data.get("poll_seconds") or DEFAULT_POLL_SECONDS)
    if budget < 0 or poll <= 0:
        raise ValueError("memory_budget_bytes must be >= 0 and poll_seconds > 0")
    return CollectionsConfig(specs, budget, poll)


class CollectionSet:
    """Every collection of one service replica, keyed by name."""

    def __init__(
        self, fingerprint: str, config: CollectionsConfig | None = None, prompt: DocumentPrompt = NO_PROMPT
    ) -> None:
        self.fingerprint = fingerprint
        self.prompt = prompt  # the model's document prompt: every collection's index must agree
        self.config = CollectionsConfig()
        self.followers: dict[str, IndexFollower] = {}
        self._lock = threading.Lock()  # one configure at a time; searches never take it
        if config is not None:
            self.configure(config)

    def configure(self, config: CollectionsConfig) -> None:
        """Add, re-point, re-pin and remove collections in place; the others keep serving."""
        with self._lock:
            self.config = config
            followers = dict(self.followers)
            for name in [n for n in followers if n not in config.collections]:
                followers.pop(name).close()
                log.info("collection %s removed", name)
            self.followers = dict(followers)  # the budget no longer counts removed collections
            for name, spec in config.collections.items():
                root = storage.resolve(spec.index).uri
                current = followers.get(name)
                if current is not None and current.root == root:
                    current.configure(spec.version, config.poll_seconds, spec.group_by)
                    continue
                if current is not None:
                    current.close()
                followers[name] = IndexFollower(
                    root,
                    self.fingerprint,
                    config.poll_seconds,
                    spec.version,
                    self._admitter(name),
                    name,
                    self.prompt,
                    spec.group_by,
                )
                self.followers = dict(
                    followers
                )  # the next one's budget counts this one  # one assignment: searches see the old map or the new one

    def _admitter(self, name: str) -> Any:
        def admit(fresh: IndexSearcher) -> str | None:
            budget = self.config.memory_budget_bytes
            if not budget:
                return None
            others = sum(f.memory_bytes for n, f in self.followers.items() if n != name)
            need = fresh.memory_bytes
            if others + need <= budget:
                return None
            return (
                f"collection {name!r} version {fresh.version} needs {need:,} bytes; other collections use "
                f"{others:,} of the {budget:,}-byte memory budget (memory_budget_bytes); "
                "nothing else was unloaded"
            )

        return admit

    def get(self, name: str) -> IndexFollower:
        """The follower of one collection; UnknownCollection (404) names it."""
        followers = self.followers
        found = followers.get(name)
        if found is not None:
            return found
        if not followers and name == DEFAULT:
            raise IndexUnavailable("this service was started without an index; /match is unavailable")
        raise UnknownCollection(
            f"collection {name!r} does not exist (collections: {sorted(followers) or 'none'})",
            field="collection",
        )

    def check(
        self, name: str, filter_spec: Any, group: GroupBy | None = None, query: TextQuery | None = None
    ) -> None:
        """Refuse an unknown collection (404), a bad filter or group_by column (422) before any model work."""
        if not isinstance(name, str):
            raise InvalidInput("collection must be a string", field="collection")
        self.get(name).check(filter_spec, group, query)

    def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        name: str = DEFAULT,
        filter_spec: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Top-k matches (grouped: top-k groups) from one collection's live version."""
        return self.get(name).search(vectors, top_k, filter_spec, group, query)

    def default_status(self) -> dict[str, Any] | None:
        """Status of the `default` collection (what /info's `index` has always shown), or None."""
        found = self.followers.get(DEFAULT)
        return None if found is None else found.status()

    def status(self) -> dict[str, Any] | None:
        """Every collection's status plus memory used and budget; None without collections."""
        followers = self.followers
        if not followers:
            return None
        return {
            "memory_budget_bytes": self.config.memory_budget_bytes,
            "memory_used_bytes": sum(f.memory_bytes for f in followers.values()),
            "collections": {name: f.status() for name, f in followers.items()},
        }

    def close(self) -> None:
        """Stop following every collection."""
        for f in self.followers.values():
            f.close()
