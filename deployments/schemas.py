"""Request and response bodies: OpenAI embeddings, TEI /embed, /match."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class _Strict(BaseModel):
    # Unknown fields are ignored (clients add their own, e.g. OpenAI's "user"); known fields
    # are strictly typed so a number is never silently taken for a string.
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Strict):
    """POST /v1/embeddings (OpenAI)."""

    input: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = None


class EmbeddingItem(BaseModel):
    """One vector in an OpenAI response."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    """Token usage (tokens the model saw, after truncation)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """OpenAI embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class EmbedRequest(_Strict):
    """POST /embed (text-embeddings-inference)."""

    inputs: StrictStr | list[StrictStr]
    normalize: StrictBool = True
    truncate: StrictBool = True
    dimensions: StrictInt | None = Field(default=None, ge=1)


class MatchRequest(_Strict):
    """POST /match: one `question` or a list of `questions`."""

    question: StrictStr | None = None
    questions: list[StrictStr] | None = None
    top_k: StrictInt = 5
    min_score: StrictFloat | StrictInt | None = None
    truncate: StrictBool = True


class MatchResponse(BaseModel):
    """/match for one question."""

    matches: list[dict[str, Any]]
    index_version: str
    model_fingerprint: str


class MatchResult(BaseModel):
    """One question's matches in a batch /match."""

    question: str
    matches: list[dict[str, Any]]


class MatchBatchResponse(BaseModel):
    """/match for several questions."""

    results: list[MatchResult]
    index_version: str
    model_fingerprint: str
