"""EmbedService: requests in, typed results out, through any engine `Backend`.

Each request is validated on its own (texts, token ids, counts, lengths, token budget) before
it can share any merged call with other requests, so one client's bad input never fails
another's request. Backends merge requests internally (model scheduler) and re-run members alone
if a merged call fails anyway.

Several models: the service holds one backend per model (engine.model_set.ModelSet), each with
its own scheduler and probe (service.served_model); a request picks one by its `model` field,
/match by its collection's model.

It lives in service/, not engine/, because what it enforces is the HTTP contract's: the limits
of ServingConfig, admission (429), the service's own refusals (TooManyInputs, NotReady) and the
public message of /ready. The engine below it knows nothing of those.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedder.errors import EmptyInput, InputTooLong, InvalidInput
from embedder.handoff import TokenPack
from embedder.tokenize import check_texts, text_problem
from engine.backend import Backend, EmbedOptions, TokenSpan
from engine.model_info import ModelInfo
from engine.model_set import ModelSet
from index.errors import UnknownCollection
from index.groups import GroupBy, GroupInfo
from index.hybrid import MODES, TextQuery
from index.matches import Match
from service.admission import Admission
from service.auth import OPEN, AuthConfig, Caller, KeyTable
from service.config import ServingConfig
from service.errors import Forbidden, TooManyInputs, TooManyTokens
from service.metrics import note_model, note_tokens
from service.served_model import ServedModel
from service.usage import KeyUsage

Inputs = str | list[str] | list[int] | list[list[int]]
# Most questions per group of a grouped /match: past the best few, a group's rows are more
# phrasings of the same question; top_k (100) x 10 rows also stays well inside the grouped
# search's 4,096-candidate cap (index.groups.GroupSearchConfig).
MAX_GROUP_SIZE = 10


@dataclass(frozen=True)
class Embedded:
    """Vectors of one request and the tokens the model saw."""

    vectors: np.ndarray
    prompt_tokens: int
    model: str = ""  # the name of the model that made them


@dataclass(frozen=True)
class Matched:
    """Matches per question and the index version that answered."""

    matches: list[list[Match]]
    index_version: str
    collection: str = "default"
    selected: int | None = None  # rows the filter selected (None without a filter)
    model: str = ""  # the collection's model
    model_fingerprint: str = ""
    grouping: list[GroupInfo] | None = None  # per question, when grouped
    mode: str = "dense"  # the search mode used (index/hybrid.py)
    alpha: float | None = None  # the hybrid weight (hybrid only)


class EmbedService:
    """The service's behaviour, independent of HTTP and of where the backends run."""

    def __init__(
        self,
        backend: Backend | Mapping[str, Backend] | ModelSet,
        config: ServingConfig,
        default_model: str | None = None,
        auth: AuthConfig | None = None,
    ) -> None:
        if isinstance(backend, ModelSet):
            self.models = backend
        elif isinstance(backend, Mapping):
            self.models = ModelSet(backend, default_model)
        else:  # the one-model form: its backend is the default model
            self.models = ModelSet({backend.model.name: backend}, default_model)
        self.served = {name: ServedModel(b) for name, b in self.models.backends.items()}
        default = self.served[self.models.default]
        # The default model's backend and ModelInfo: what /info's top-level fields have always shown.
        self.backend: Backend = default.backend
        self.model: ModelInfo = default.model
        self.config = config
        # Why a stage the requests need has no live replica ("" while none is missing): set by
        # whatever can see the stages (the Serve ingress's deployments.stage_watch), so /ready
        # tells a load balancer when a model node is gone, not only before the first probe.
        self.unavailable = ""
        self.admission = Admission(config.max_in_flight, config.max_queued_tokens, config.retry_after_s)
        self.usage = KeyUsage()  # per-key requests, tokens, refusals (/info; a metrics exporter reads it)
        self.keys = self._key_table(config, auth)

    def _key_table(self, config: ServingConfig, auth: AuthConfig | None) -> KeyTable:
        keys = KeyTable(config.api_key, auth)
        self.admission.weights = dict(keys.weights)
        return keys

    def reconfigure(self, config: ServingConfig, auth: AuthConfig | None = None) -> None:
        """Apply new limits and a new key table without dropping requests in flight.

        The table is built first and swapped in one assignment: a request sees the old keys or the
        new ones, never a mix, and a bad table (refused here) leaves the old one serving.
        """
        keys = KeyTable(config.api_key, auth)
        self.config = config
        self.admission.max_in_flight = config.max_in_flight
        self.admission.max_queued_tokens = config.max_queued_tokens
        self.admission.retry_after_s = config.retry_after_s
        self.admission.weights = dict(keys.weights)
        self.keys = keys

    def set_models(self, backends: Mapping[str, Backend]) -> None:
        """Serve exactly these models from now on (a `serve deploy` that adds or removes one).

        The default model must stay (it is what the replica was started with). A model whose
        backend is unchanged keeps its probe state and counters; a request already running on a
        removed model finishes on it; a new model's probe starts with the next request.
        """
        if self.models.default not in backends:
            raise ValueError(f"the default model {self.models.default!r} cannot be removed without a restart")
        models = ModelSet(backends, self.models.default)
        models.bound = {c: m for c, m in self.models.bound.items() if m in backends}
        kept = {n: s for n, s in self.served.items() if n in backends and s.backend is backends[n]}
        served = {name: kept.get(name) or ServedModel(b) for name, b in backends.items()}
        # Both maps are swapped by single assignments, the served one first as a superset, so a
        # request between them finds its model in both.
        gone = [s for n, s in self.served.items() if served.get(n) is not s]
        self.served = {**self.served, **served}
        self.models = models
        self.served = served
        for old in gone:
            old.stop_probe()

    def serving(self, model: str | None) -> ServedModel:
        """The model a request names (None: the default): 404 if unknown, 503 if its probe failed."""
        served = self.served[self.models.get(model).model.name]
        note_model(served.name)  # the request's metrics carry the model it was given to
        served.check_serving(self.config.retry_after_s)
        return served

    # ---- readiness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """/ready's answer: the default model passed its probe (the others' states are in /info)
        and no stage is without a live replica."""
        return self.served[self.models.default].ready and not self.unavailable

    @property
    def not_ready_reason(self) -> str:
        """Why the default model is not ready ("" once it is)."""
        return self.unavailable or self.served[self.models.default].not_ready_reason

    def start_probe(self) -> None:
        """Start every model's readiness probe loop (idempotent; needs a running event loop)."""
        for served in self.served.values():
            served.start_probe(self.config.probe_interval_s)

    async def probe(self) -> None:
        """Probe every model once (raises the first failure)."""
        for served in self.served.values():
            await served.probe()

    # ---- requests --------------------------------------------------------------------------

    async def embed(
        self,
        inputs: Inputs,
        field: str,
        truncate: bool = True,
        options: EmbedOptions | None = None,
        model: str | None = None,
        caller: Caller = OPEN,
    ) -> Embedded:
        """Vectors for one request's texts or token ids, in input order (texts get the options' prompt)."""
        served = self.serving(model)
        options = replace(options or EmbedOptions(), tenant=caller.name, weight=caller.weight)
        self._check_options(options, served.model)
        prompt = self._prompt(inputs, options.prompt_name, served.model)
        pack = await self._pack(inputs, field, truncate, served, prompt)
        return Embedded(await self._encode(pack, options, served), pack.tokens, served.name)

    async def match(
        self,
        questions: str | list[str],
        top_k: int,
        min_score: float | None,
        field: str,
        truncate: bool = True,
        collection: str = "default",
        filter: Any = None,
        group: GroupBy | None = None,
        caller: Caller = OPEN,
        mode: str | None = None,
    ) -> Matched:
        """Stored questions closest to each question, best first (in one collection, within a filter).

        `group`: group_by as asked (None: the collection's default); grouped, top_k counts groups.
        A key may match only in its collections (403 naming only the one asked for, before any
        work); a request without `collection` means "default", allowed only if the key may use it.
        """
        if not caller.may_use(collection):
            raise Forbidden(f"this key may not use collection {collection!r}", param="collection")
        if not 1 <= top_k <= self.config.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.config.max_top_k}", field="top_k")
        if min_score is not None and not math.isfinite(min_score):
            raise InvalidInput("min_score must be a finite number", field="min_score")
        group = replace(group or GroupBy(), min_score=None if min_score is None else float(min_score))
        if not 1 <= group.size <= MAX_GROUP_SIZE:
            raise InvalidInput(f"group_size must be between 1 and {MAX_GROUP_SIZE}", field="group_size")
        if group.column is not None and not group.column.strip():
            raise InvalidInput("group_by must name a column (null: ungrouped)", field="group_by")
        if mode is not None and mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}", field="mode")
        query = TextQuery(mode, tuple(self._texts(questions, field)))
        with _only_own(caller, collection):
            backend = self.models.for_collection(collection)  # the collection's model (404 if unknown)
            plain = filter is None and collection == "default" and mode in (None, "dense")
            if not plain or group != GroupBy(min_score=group.min_score):
                # An unknown collection (404), a bad filter, group_by or mode (422): before any model work.
                await backend.check_search(collection, filter, group, query)
        served = self.serving(backend.model.name)
        # Questions are queries: sentence-transformers' encode_query rule picks their prompt, as the
        # index's documents got the encode_document rule's (index.prompt refuses any other index).
        prompts = served.model.prompt_set()
        pack = await self._pack(questions, field, truncate, served, prompts.resolve(prompts.query_name()))
        vectors = await self._encode(pack, EmbedOptions(tenant=caller.name, weight=caller.weight), served)
        with _only_own(caller, collection):
            result = await backend.search(vectors, top_k, collection, filter, group, query)
        if min_score is None:
            min_score = result.default_min_score  # the index version's stored threshold, if any
        matches = result.matches
        if min_score is not None:
            matches = [[m for m in row if m.score >= min_score] for row in result.matches]
        return Matched(
            matches,
            result.index_version,
            collection,
            result.selected,
            served.name,
            served.model.fingerprint,
            result.grouping,
            result.mode,
            result.alpha,
        )

    async def _encode(self, pack: TokenPack, options: EmbedOptions, served: ServedModel) -> np.ndarray:
        """Vectors of a validated pack, holding its tokens of the model-queue budget meanwhile."""
        with self.admission.tokens(pack.tokens, options.tenant):
            vectors = await served.backend.encode(pack, options)
        served.count(pack.tokens)
        self.usage.tokens(options.tenant, pack.tokens)
        note_tokens(pack.tokens)
        return vectors

    async def tokenize(
        self, inputs: str | list[str], add_special_tokens: bool, model: str | None = None
    ) -> list[list[TokenSpan]]:
        """Tokens of each text with offsets (TEI /tokenize), by the named model's tokenizer."""
        served = self.serving(model)
        texts = self._texts(inputs, "inputs")
        return await served.backend.explain(texts, add_special_tokens)

    # ---- validation ------------------------------------------------------------------------

    def _check_options(self, options: EmbedOptions, model: ModelInfo) -> None:
        if options.dimensions is not None and not 1 <= options.dimensions <= model.dimension:
            raise InvalidInput(f"dimensions must be between 1 and {model.dimension}", field="dimensions")
        if options.normalize is False and model.pooling_in_graph and model.normalize:
            raise InvalidInput(
                "normalize=false is not available: the model normalises inside its graph", field="normalize"
            )

    def _prompt(self, inputs: Inputs, prompt_name: str | None, model: ModelInfo) -> str:
        """The prompt text for a request's texts; 422 for an unknown name or a name with token ids."""
        prompts = model.prompt_set()
        prompts.check(prompt_name)
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], str):
            if prompt_name is not None:
                raise InvalidInput(
                    "prompt_name applies to texts; token ids are taken as given (include the prompt's tokens)",
                    field="prompt_name",
                )
            return ""
        return prompts.resolve(prompt_name)

    def _texts(self, inputs: str | Sequence[str], field: str) -> list[str]:
        if isinstance(inputs, str):
            problem = text_problem(inputs)
            if problem is not None:
                raise EmptyInput(f"{field}: {problem}", field=field)
            return [inputs]
        texts = list(inputs)
        self._check_count(len(texts), field)
        check_texts(texts, field)
        return texts

    def _check_count(self, n: int, field: str) -> None:
        if n == 0:
            raise InvalidInput(f"{field}: must contain at least one input", field=field)
        if n > self.config.max_inputs:
            raise TooManyInputs(
                f"{field}: {n} inputs; at most {self.config.max_inputs} per request", field=field
            )

    async def _pack(
        self, inputs: Inputs, field: str, truncate: bool, served: ServedModel, prompt: str = ""
    ) -> TokenPack:
        """Validate one request's inputs and turn them into a TokenPack (tokenizing texts after the prompt)."""
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], str):
            pack = self._pack_ids(inputs, field, truncate, served.model)  # type: ignore[arg-type]
        else:
            texts = self._texts(inputs, field)  # type: ignore[arg-type]
            pack = await served.backend.tokenize(texts, prompt)
            if not truncate:
                check_lengths(
                    pack.token_counts, served.model.max_seq_length, field, single=isinstance(inputs, str)
                )
        if pack.tokens > self.config.max_request_tokens:
            raise TooManyTokens(
                f"{field}: {pack.tokens} tokens in one request; at most {self.config.max_request_tokens} "
                "(split the request)",
                field=field,
            )
        return pack

    def _pack_ids(
        self, inputs: list[int] | list[list[int]], field: str, truncate: bool, model: ModelInfo
    ) -> TokenPack:
        rows: list[list[int]] = [inputs] if isinstance(inputs[0], int) else inputs  # type: ignore[list-item]
        self._check_count(len(rows), field)
        limit, vocab = model.max_seq_length, model.vocab_size
        for i, ids in enumerate(rows):
            where = f"{field}[{i}]" if len(rows) > 1 else field
            if not ids:
                raise InvalidInput(f"{where}: an empty list of token ids", field=where)
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidInput(
                    f"{where}: token id {bad} is outside this model's vocabulary (0..{vocab - 1})",
                    field=where,
                )
            if len(ids) > limit and not truncate:
                raise InputTooLong(
                    f"{where} has {len(ids)} tokens; the model accepts at most {limit} (send truncate=true to cut it)",
                    token_count=len(ids),
                    max_tokens=limit,
                    field=where,
                )
        counts = np.array([len(r) for r in rows], np.int64)
        kept = [r[:limit] for r in rows]
        return TokenPack(
            ids=np.fromiter((t for r in kept for t in r), np.int32, count=int(sum(map(len, kept)))),
            type_ids=None,
            lengths=np.array([len(r) for r in kept], np.int32),
            token_counts=counts,
        )


@contextmanager
def _only_own(caller: Caller, collection: str) -> Iterator[None]:
    """An unknown collection's 404 lists every collection: a scoped key gets it without the list."""
    try:
        yield
    except UnknownCollection as exc:
        if caller.collections is None:
            raise
        raise UnknownCollection(f"collection {collection!r} does not exist", field=exc.field) from None


def check_lengths(token_counts: np.ndarray, max_tokens: int, field: str, single: bool) -> None:
    """Raise InputTooLong (with the token count) for the first text over max length."""
    over = np.flatnonzero(np.asarray(token_counts) > max_tokens)
    if len(over):
        i = int(over[0])
        where = field if single else f"{field}[{i}]"
        raise InputTooLong(
            f"{where} has {int(token_counts[i])} tokens; the model accepts at most {max_tokens} "
            "(send truncate=true to cut it)",
            token_count=int(token_counts[i]),
            max_tokens=max_tokens,
            field=where,
        )
