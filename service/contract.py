"""Request and response bodies of every route: OpenAI embeddings and models, TEI /embed and
/tokenize, /match, /info, /ready. These models are both the validation and the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from index.groups import GroupBy, GroupInfo

TokenIds = list[StrictInt]


class _Request(BaseModel):
    # Unknown fields are ignored (clients add their own, e.g. OpenAI's "user"); known fields
    # are strictly typed so a number is never silently taken for a string.
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Request):
    """POST /v1/embeddings (OpenAI). `input` may also be token ids of *this model's* tokenizer."""

    input: StrictStr | list[StrictStr] | TokenIds | list[TokenIds] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists "
        "(ids of this model's own tokenizer, see POST /tokenize; not OpenAI's cl100k ids).",
        examples=["How do I reset my password?"],
    )
    model: StrictStr | None = Field(
        default=None,
        description="Which served model (GET /v1/models); omitted: the default model. With one model "
        "any name is that model.",
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(
        default=None, ge=1, description="Cut vectors to this many dimensions."
    )
    user: StrictStr | None = None
    prompt_name: StrictStr | None = Field(
        default=None,
        description="Which of the model's prompts to prepend to each text (see GET /info `prompts`), as "
        "sentence-transformers' encode(prompt_name=...); omitted: the model's default prompt, if any.",
        examples=["query"],
    )


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


class ModelCard(BaseModel):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qmatch"
    # The model's prompts (name -> text) and default prompt name: what `prompt_name` may be.
    prompts: dict[str, str] = Field(default_factory=dict)
    default_prompt_name: str | None = None
    # What a client needs to pick a model: vector length, tokens per text, how it runs.
    dimension: int | None = None
    max_seq_length: int | None = None
    runtime: dict[str, Any] = Field(default_factory=dict)
    default: bool = False  # the model used when a request names none
    ready: bool | None = None


class ModelList(BaseModel):
    """GET /v1/models (OpenAI)."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbedRequest(_Request):
    """POST /embed (text-embeddings-inference)."""

    inputs: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    model: StrictStr | None = Field(
        default=None, description="Which served model (GET /v1/models); omitted: the default model."
    )
    normalize: StrictBool = True
    truncate: StrictBool = True
    dimensions: StrictInt | None = Field(default=None, ge=1)
    prompt_name: StrictStr | None = Field(
        default=None,
        description="Which of the model's prompts to prepend to each text (see GET /info `prompts`), as "
        "sentence-transformers' encode(prompt_name=...); omitted: the model's default prompt, if any.",
        examples=["query"],
    )


class TokenizeRequest(_Request):
    """POST /tokenize (text-embeddings-inference)."""

    inputs: StrictStr | list[StrictStr]
    model: StrictStr | None = Field(
        default=None, description="Which served model (GET /v1/models); omitted: the default model."
    )
    add_special_tokens: StrictBool = True


class SimpleToken(BaseModel):
    """One token as TEI's /tokenize reports it (start/stop are character offsets)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class MatchRequest(_Request):
    """POST /match: one `question` or a list of `questions`."""

    question: StrictStr | None = Field(default=None, examples=["I forgot my password"])
    questions: list[StrictStr] | None = None
    top_k: StrictInt = Field(default=5, description="Matches per question, 1..max_top_k (see /info).")
    min_score: StrictFloat | StrictInt | None = Field(default=None, description="Drop matches scoring below.")
    truncate: StrictBool = True
    collection: StrictStr = Field(
        default="default", description="Which collection (index) to search; see GET /v1/collections."
    )
    filter: dict[str, Any] | None = Field(
        default=None,
        description="Search only rows whose filter columns match, all conditions ANDed: "
        '{"category": "billing"}, {"language": {"in": ["de", "en"]}}, '
        '{"updated": {"gte": "2024-01-01", "lt": "2025-01-01"}} (operators eq, in, gte, gt, lte, lt).',
        examples=[{"category": "billing", "language": {"in": ["de", "en"]}}],
    )
    group_by: StrictStr | None = Field(
        default=None,
        description="Return the top_k distinct values of this stored column (e.g. `answer`) instead of the "
        "top_k questions: per group its best group_size questions. Omitted: the collection's default "
        "group_by (GET /info `collections.<name>.group_by`), if it has one; null: ungrouped even then.",
        examples=["answer"],
    )
    group_size: StrictInt = Field(
        default=1, description="Questions per group, 1..10 (with group_by or a collection's default)."
    )
    mode: StrictStr | None = Field(
        default=None,
        description="dense (vectors), lexical (BM25 over the stored questions' words) or hybrid "
        "(alpha * dense + (1 - alpha) * BM25 / the query's best BM25; alpha fitted per index version by "
        "jobs.fit_hybrid). Omitted: the collection's default (GET /info `default_mode`; dense until fitted).",
        examples=["hybrid"],
    )

    def group(self) -> GroupBy:
        """The grouping asked for: group_by absent means the collection's default, an explicit null none."""
        return GroupBy(self.group_by, self.group_size, inherit="group_by" not in self.model_fields_set)


class MatchItem(BaseModel):
    """A stored question: its id, similarity score and the stored columns (question, answer, ...)."""

    model_config = ConfigDict(extra="allow")

    id: int | str
    score: float
    # Grouped /match only: the group's value (of the group_by column) and how many of the group's
    # questions were among the candidates the search examined (`grouping.candidates`).
    group_value: Any = Field(
        default=None, description="Grouped /match: this question's group (its group_by value)."
    )
    group_hits: int | None = Field(
        default=None,
        description="Grouped /match: questions of this group among the `grouping.candidates` best-scoring rows "
        "examined (within the filter, at least min_score); all of the group's matching rows when "
        "`grouping.stopped` is `exhausted`, otherwise a lower bound.",
    )


class Grouping(BaseModel):
    """How one question's grouped search went (only with grouping)."""

    by: str = Field(description="The column grouped by.")
    group_size: int
    groups: int = Field(
        description="Groups returned (fewer than top_k when `stopped` is exhausted or capped)."
    )
    candidates: int = Field(
        description="Rows examined, the best-scoring first (within the filter, >= min_score)."
    )
    stopped: Literal["filled", "exhausted", "capped"] = Field(
        description="filled: top_k groups with group_size questions each; exhausted: every row that could "
        "match was examined (the collection or filter holds fewer groups or rows); capped: the candidate cap "
        "(4,096 rows) was reached first, so more groups may exist."
    )

    @classmethod
    def of(cls, info: GroupInfo) -> Grouping:
        """The response form of one query's index.groups.GroupInfo."""
        return cls(
            by=info.by,
            group_size=info.size,
            groups=info.groups,
            candidates=info.candidates,
            stopped=info.stopped,
        )


class _MatchAnswer(BaseModel):
    """What every /match answer carries besides its matches."""

    index_version: str
    model_fingerprint: str
    collection: str = "default"
    model: str | None = None  # the collection's model
    # Rows of the collection the request's filter selected (only with a filter).
    filter_selected: int | None = None
    mode: str = "dense"  # the mode the search ran in
    alpha: float | None = None  # the hybrid weight used (hybrid only)


class MatchResponse(_MatchAnswer):
    """/match for one question (grouped: best group first, a group's questions together, best first)."""

    matches: list[MatchItem]
    grouping: Grouping | None = None  # only when grouped


class MatchResult(BaseModel):
    """One question's matches in a batch /match."""

    question: str
    matches: list[MatchItem]
    grouping: Grouping | None = None  # only when grouped


class MatchBatchResponse(_MatchAnswer):
    """/match for several questions."""

    results: list[MatchResult]


class CollectionInfo(BaseModel):
    """One collection in GET /v1/collections."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str | None
    model: str | None = None  # the model that matches this collection
    size: int | None = None
    dimension: int | None = None
    # name -> {"type": "string" | "int" | "timestamp", "dtype", "values", "unit"}
    filter_columns: dict[str, Any] = Field(default_factory=dict)
    default_min_score: float | None = None
    # The column /match groups by when a request gives no group_by (None: ungrouped).
    group_by: str | None = None
    memory_bytes: int = 0  # incl. the BM25 postings of its lexical index
    refused: dict[str, Any] | None = None
    # The version's lexical index (manifest record: column, tokenizer, terms), None: dense only.
    lexical: dict[str, Any] | None = None
    default_mode: str = "dense"  # what /match runs without `mode` (hybrid once alpha is fitted)
    hybrid_alpha: float = 1.0  # the fitted hybrid weight (1.0: dense, unfitted)
    # Hybrid /match's default min_score, fitted with alpha (None: none); dense's is default_min_score.
    hybrid_min_score: float | None = None


class CollectionList(BaseModel):
    """GET /v1/collections."""

    object: Literal["list"] = "list"
    data: list[CollectionInfo]
    memory_budget_bytes: int
    memory_used_bytes: int


class HealthResponse(BaseModel):
    """GET /health."""

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """GET /ready when ready."""

    ready: bool
    model_fingerprint: str
    # Every model's readiness (the default decides /ready's status; a failed other model is
    # refused for its own requests only).
    models: dict[str, Any] | None = None


class InfoResponse(BaseModel):
    """GET /info: model, topology, index, limits."""

    model: str
    model_fingerprint: str
    dimension: int
    max_seq_length: int
    precision: str
    pooling: str
    normalize: bool
    # The model's prompts (name -> text), its default prompt name, and the prompts /match gives
    # questions (encode_query rule) and an index's documents must have had (encode_document rule).
    prompts: dict[str, str] = Field(default_factory=dict)
    default_prompt_name: str | None = None
    query_prompt_name: str | None = None
    document_prompt_name: str | None = None
    topology: str
    # Which backend, precision, device and CPU units produce the vectors (and why: "reason").
    runtime: dict[str, Any]
    ready: bool
    not_ready_reason: str | None
    index: dict[str, Any] | None
    # Every collection's status (index, memory_bytes, refusal) with the budget; null without any.
    collections: dict[str, Any] | None = None
    limits: dict[str, Any]
    # The top-level model fields are the default model's; every model (with its runtime,
    # readiness and collections) is here.
    default_model: str | None = None
    models: dict[str, Any] | None = None
    # The asking key's name, and per key requests, tokens and refusals (by status) in the
    # replica that answered: a key sees its own row, an admin key (every collection and route) all.
    key: str | None = None
    keys: dict[str, Any] | None = None


class OpenAIErrorDetail(BaseModel):
    """The inner error object."""

    message: str
    type: str
    param: str | None
    code: int


class OpenAIError(BaseModel):
    """Error body of the OpenAI-style routes (/v1/*, /match, /info, /ready)."""

    error: OpenAIErrorDetail


class TEIError(BaseModel):
    """Error body of the TEI routes (/embed, /tokenize)."""

    error: str
    error_type: str
