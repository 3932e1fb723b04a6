"""What /info, /v1/models and /v1/collections say about every served model and collection.

Each model's backend reports its own collections; these merge them into the one view clients
have always had (a single model's answer is unchanged but for each collection's `model`), and
describe every model from its ModelInfo (`describe`), its runtime and its probe's state.
"""

from __future__ import annotations

from typing import Any

from service.auth import Caller
from service.core import EmbedService
from service.served_model import ServedModel


async def collections_status(service: EmbedService) -> dict[str, Any] | None:
    """Every model's collections in one map, each naming its model; None without any collection.

    A collection is counted once: in the fused topology with several models every model's backend
    reaches the one Searcher, which names each collection's model itself.
    """
    merged: dict[str, Any] | None = None
    for name, served in _models(service).items():
        status = await served.backend.collections_status()
        if status is None:
            continue
        if merged is None:
            # Every model's CollectionSet has the configured budget and counts its own collections.
            merged = {"memory_budget_bytes": status.get("memory_budget_bytes", 0), "memory_used_bytes": 0}
            merged["collections"] = {}
        for collection, s in (status.get("collections") or {}).items():
            if collection in merged["collections"]:
                continue
            merged["collections"][collection] = {**s, "model": s.get("model") or name}
            merged["memory_used_bytes"] += s.get("memory_bytes", 0)
    return merged


async def models_status(
    service: EmbedService, collections: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Each model's fields of /info (as the top level shows the default's), runtime, readiness and
    the collections it matches (from `collections`, collections_status's answer)."""
    models = _models(service)
    bound: dict[str, list[str]] = {name: [] for name in models}
    for collection, s in ((collections or {}).get("collections") or {}).items():
        bound.setdefault(s["model"], []).append(collection)
    out: dict[str, dict[str, Any]] = {}
    for name, served in models.items():
        out[name] = {
            **served.model.describe(),
            "default": name == service.models.default,
            "topology": served.backend.topology,
            "runtime": await served.backend.runtime(),
            **served.status(),
            "refused": served.refused,
            "requests": served.requests,  # this replica's, since it started
            "tokens": served.tokens,
            "collections": sorted(bound.get(name, [])),
        }
    return out


def visible(status: dict[str, Any] | None, caller: Caller) -> dict[str, Any] | None:
    """collections_status's answer as a key may see it: only its collections, and the memory they use."""
    if status is None or caller.collections is None:
        return status
    mine = {n: s for n, s in (status.get("collections") or {}).items() if caller.may_use(n)}
    used = sum(int(s.get("memory_bytes") or 0) for s in mine.values())
    return {**status, "collections": mine, "memory_used_bytes": used}


def _models(service: EmbedService) -> dict[str, ServedModel]:
    """The served models now, the default first: taken once, because a `serve deploy` may add or
    remove one while these await their backends (set_models swaps the maps between awaits)."""
    return {name: service.served[name] for name in service.models.names}
