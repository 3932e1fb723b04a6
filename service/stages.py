"""The `Stages` protocol every topology implements, and the typed values that cross it.

An EmbedService only ever talks to a Stages: tokenize texts, encode a TokenPack, search
vectors. The in-process, Serve-graph, Serve-fused and dummy implementations are interchangeable,
so the HTTP contract is tested once (with the dummy) and holds for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from embedder.handoff import TokenPack
from embedder.prompts import Prompts


@dataclass(frozen=True)
class ModelInfo:
    """What the service needs to know about the model it serves (from the artifact manifest)."""

    name: str
    fingerprint: str
    dimension: int
    max_seq_length: int
    precision: str
    pooling: str
    normalize: bool
    pooling_in_graph: bool
    vocab_size: int
    # Vectors of embedder.probe.PROBE_TEXTS stored in the artifact; /ready compares against them
    # within the tolerance of the precision the model replicas run (embedder.probe.probe_floor).
    probe_vectors: np.ndarray = field(repr=False, compare=False)
    # The model's prompts (name -> text) and default prompt name (embedder.prompts): /embed's
    # prompt_name picks one, /match takes the query rule's, an index must have the document rule's.
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def prompt_set(self) -> Prompts:
        """The prompts with sentence-transformers' rules for choosing one."""
        return Prompts(self.prompts, self.default_prompt_name)


@dataclass(frozen=True)
class EmbedOptions:
    """Per-request options: the prompt (applied when tokenizing) and pooling."""

    normalize: bool | None = None  # None: the artifact's own setting
    dimensions: int | None = None  # None: full dimension
    # A key of the model's prompts; None: its default prompt (none when it has no default).
    prompt_name: str | None = None


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


@dataclass(frozen=True)
class TokenSpan:
    """One token of /tokenize."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class Stages(Protocol):
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
        self, vectors: np.ndarray, top_k: int, collection: str = "default", filter: Any = None
    ) -> SearchResult:
        """Top-k matches per vector from a collection's live index (within the filter's rows).

        Raises IndexUnavailable without an index, UnknownCollection (404), InvalidInput (a bad filter).
        """
        ...

    async def check_search(self, collection: str, filter: Any) -> None:
        """Refuse an unknown collection or a bad filter before any model work (same errors as search)."""
        ...

    async def index_status(self) -> dict[str, Any] | None:
        """Live version, size, last refusal of the `default` collection; None when it has none."""
        ...

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection's status and the memory budget (service/collections.py); None without any."""
        ...

    async def runtime(self) -> dict[str, Any]:
        """The model's runtime (embedder.session.RuntimeInfo.as_dict): backend, precision, device, CPU units."""
        ...
