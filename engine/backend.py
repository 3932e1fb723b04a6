"""The `Backend` protocol every topology implements, and the per-request values that cross it.

The service (service.core.EmbedService) only ever talks to a Backend: tokenize texts, encode a
TokenPack, search vectors, report status. The in-process backend (engine.inprocess), the
Serve-handle backends (deployments.handle_backends) and the test dummy (testkit.dummy_backend)
are interchangeable, so the HTTP contract is tested once (with the dummy) and holds for all.
"Backend" as in TEI: what the front end hands its work to, wherever that work runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from embedder.handoff import TokenPack
from engine.model_info import ModelInfo
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult


@dataclass(frozen=True)
class EmbedOptions:
    """Per-request options: the prompt (applied when tokenizing), pooling, and whose request it is."""

    normalize: bool | None = None  # None: the artifact's own setting
    dimensions: int | None = None  # None: full dimension
    # A key of the model's prompts; None: its default prompt (none when it has no default).
    prompt_name: str | None = None
    # Whose request: the API key's name and its fair-share weight (the model scheduler shares
    # passes round-robin across tenants). Plain values: the engine knows nothing of keys or HTTP.
    tenant: str = ""
    weight: int = 1


@dataclass(frozen=True)
class TokenSpan:
    """One token of /tokenize."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class Backend(Protocol):
    """Tokenize -> encode -> search, however and wherever they run."""

    model: ModelInfo
    topology: str

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Token ids (truncated to max length) plus counts before truncation; `prompt` prepended to each text."""
        ...

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with their text and character offsets (POST /tokenize)."""
        ...

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """(n, d') float32 sentence vectors in pack order."""
        ...

    async def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = "default",
        filter: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Top-k matches per vector from a collection's live index (within the filter's rows).

        `group` (None: the collection's default group_by, if any): the top-k groups of a column.
        Raises IndexUnavailable without an index, UnknownCollection (404), InvalidInput (a bad
        filter or group_by column).
        """
        ...

    async def check_search(
        self, collection: str, filter: Any, group: GroupBy | None = None, query: TextQuery | None = None
    ) -> None:
        """Refuse an unknown collection, a bad filter or group_by before any model work (same errors as search)."""
        ...

    async def index_status(self) -> dict[str, Any] | None:
        """Live version, size, last refusal of the `default` collection; None when it has none."""
        ...

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection's status and the memory budget (index/collections.py); None without any."""
        ...

    async def runtime(self) -> dict[str, Any]:
        """The model's runtime (embedder.session.RuntimeInfo.as_dict): backend, precision, device, CPU units."""
        ...
