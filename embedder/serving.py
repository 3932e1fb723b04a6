"""Ray-free serving logic: request limits, compact stage hand-offs, token-budget merging, base64.

The Serve deployments are thin adapters around these functions, so everything that touches
numbers (packing, padding, splitting, encoding) is testable without a cluster.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedder.config import BatchConfig, from_mapping
from embedder.errors import InputTooLong, InvalidInput, TooManyInputs
from embedder.pooler import Pooler
from embedder.pooling import truncate_dims
from embedder.tokenize import Tokenized, check_texts, plan_batches
from embedder.types import HiddenStates, Vectors


@dataclass(frozen=True)
class ServingConfig:
    """HTTP-facing limits; settable from build_app args and QM_SERVE_* environment variables."""

    # Texts per request; OpenAI allows 2048, but one request then holds the backbone for seconds
    # on CPU and starves everyone else. 256 keeps a worst-case request under ~3 s here.
    max_inputs: int = 256
    # Request body bytes; 256 inputs of ~4 KB text each fit, a runaway upload does not.
    max_body_bytes: int = 2_000_000
    # End-to-end deadline per request (408 after it); a client may ask for less with X-Timeout-Seconds.
    request_timeout_s: float = 30.0
    # Requests one ingress replica works on at once before answering 429: beyond this, queueing in
    # the ingress only adds latency the client could better spend retrying another replica.
    max_in_flight: int = 128
    # Seconds a client is told to wait (Retry-After) after 429/503.
    retry_after_s: int = 1
    # Bearer key required on the API routes when non-empty (probes and the page stay open).
    api_key: str = ""
    # /match defaults and bounds.
    default_top_k: int = 5
    max_top_k: int = 100
    # Seconds between readiness probe attempts until the first one passes.
    probe_interval_s: float = 1.0
    # Ingress micro-batching: chain passes in flight at once (2 lets one batch tokenize while
    # the previous one is in the backbone) and texts merged into one pass.
    batch_parallel: int = 2
    batch_max_texts: int = 256


def serving_config(data: dict[str, Any] | None) -> ServingConfig:
    """ServingConfig from a mapping, with QM_SERVE_<FIELD> environment overrides."""
    return from_mapping(ServingConfig, data, env_prefix="QM_SERVE_")


def as_text_list(value: str | list[str], field: str, max_inputs: int) -> list[str]:
    """Normalise a str-or-list input to a list, refusing empty lists, empty texts and oversize lists."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise InvalidInput(f"{field}: must contain at least one text", field=field)
    if len(texts) > max_inputs:
        raise TooManyInputs(f"{field}: {len(texts)} inputs; at most {max_inputs} per request", field=field)
    check_texts(texts, field)
    return texts


def check_lengths(token_counts: np.ndarray, max_tokens: int, truncate: bool, field: str) -> None:
    """Raise InputTooLong (with the token count) for the first text over max length when truncate is off."""
    if truncate:
        return
    over = np.flatnonzero(np.asarray(token_counts) > max_tokens)
    if len(over):
        i = int(over[0])
        where = f"{field}[{i}]" if len(token_counts) > 1 else field
        raise InputTooLong(
            f"{where} has {int(token_counts[i])} tokens; the model accepts at most {max_tokens} "
            "(send truncate=true to cut it)",
            token_count=int(token_counts[i]),
            max_tokens=max_tokens,
            field=where,
        )


@dataclass(frozen=True)
class TokenPack:
    """One request's token ids, unpadded and concatenated (what the tokenizer stage ships).

    Padding is added only inside the backbone, after merging requests, so the hop carries
    int32 ids for real tokens instead of three padded int64 matrices.
    """

    ids: np.ndarray  # int32 (total,)
    type_ids: np.ndarray | None  # int8 (total,), None when all zero (single-segment input)
    lengths: np.ndarray  # int32 (n,) tokens fed to the model (after truncation)
    token_counts: np.ndarray  # int64 (n,) tokens before truncation

    @property
    def size(self) -> int:
        """Texts in the pack."""
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        """Real tokens in the pack (the backbone's batch cost)."""
        return int(self.lengths.sum())

    def offsets(self) -> np.ndarray:
        """Start of each text in `ids` (n + 1 entries)."""
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    def select(self, rows: np.ndarray) -> TokenPack:
        """A pack of the chosen texts, in the order given."""
        off = self.offsets()
        parts = [np.arange(off[r], off[r + 1]) for r in rows]
        take = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        types = None if self.type_ids is None else self.type_ids[take]
        return TokenPack(self.ids[take], types, self.lengths[rows], self.token_counts[rows])


def pack_tokens(tokenized: Tokenized) -> TokenPack:
    """Compact a Tokenized result for shipping to the backbone."""
    ids = np.concatenate(tokenized.ids).astype(np.int32) if tokenized.ids else np.zeros(0, np.int32)
    types = np.concatenate(tokenized.type_ids) if tokenized.type_ids else np.zeros(0, np.int64)
    return TokenPack(
        ids=ids,
        type_ids=types.astype(np.int8) if types.any() else None,
        lengths=tokenized.lengths.astype(np.int32),
        token_counts=tokenized.token_counts.astype(np.int64),
    )


def split_pack(pack: TokenPack, batch_tokens: int) -> list[TokenPack]:
    """Cut a pack into pieces of at most `batch_tokens` real tokens (a text is never split)."""
    if pack.tokens <= batch_tokens:
        return [pack]
    pieces, start, used = [], 0, 0
    for i, n in enumerate(pack.lengths.tolist()):
        if used and used + n > batch_tokens:
            pieces.append(pack.select(np.arange(start, i)))
            start, used = i, 0
        used += n
    pieces.append(pack.select(np.arange(start, pack.size)))
    return pieces


def merge_packs(packs: Sequence[TokenPack], pad_token_id: int) -> Tokenized:
    """Merge several requests' packs into one Tokenized (row order: pack by pack) for batch planning."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    for p in packs:
        off = p.offsets()
        for r in range(p.size):
            ids.append(p.ids[off[r] : off[r + 1]].astype(np.int64))
            t = p.type_ids
            types.append(
                np.zeros(p.lengths[r], np.int64) if t is None else t[off[r] : off[r + 1]].astype(np.int64)
            )
    counts = np.concatenate([p.token_counts for p in packs]) if packs else np.zeros(0, np.int64)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return Tokenized(ids, types, counts, counts > lengths, pad_token_id)


@dataclass(frozen=True)
class HiddenPack:
    """One request's per-token vectors for real tokens only, concatenated (the backbone's output).

    Sending (total_tokens, d) instead of the padded (b, L, d) batch keeps the hop small and
    lets each request travel alone even though it was computed inside a larger batch.
    """

    vectors: np.ndarray  # float32 (total, d)
    lengths: np.ndarray  # int32 (n,)

    def to_hidden_states(self) -> HiddenStates:
        """Re-pad to (n, L, d) with a mask so the one pooling function applies unchanged."""
        n, width = len(self.lengths), int(self.lengths.max(initial=0))
        out = np.zeros((n, width, self.vectors.shape[1]), dtype=np.float32)
        mask = np.zeros((n, width), dtype=np.int64)
        start = 0
        for i, length in enumerate(self.lengths.tolist()):
            out[i, :length] = self.vectors[start : start + length]
            mask[i, :length] = 1
            start += length
        return HiddenStates(out, mask, np.arange(n, dtype=np.int64))


def run_merged(
    packs: Sequence[TokenPack],
    pad_token_id: int,
    batch: BatchConfig,
    forward: Any,
    pooled: bool,
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Run `forward(TokenBatch)` over several packs merged and re-planned by token budget.

    Returns, per pack, either its HiddenPack vectors (total, d) or pooled vectors (n, d), plus
    (texts, padded tokens) of every model call, for batch metrics.
    """
    merged = merge_packs(packs, pad_token_id)
    lengths = merged.lengths
    n = len(lengths)
    row_off = np.concatenate([[0], np.cumsum(lengths)])
    width: int | None = None
    out: np.ndarray | None = None
    calls: list[tuple[int, int]] = []
    for indices in plan_batches(lengths, batch):
        tb = merged.batch(indices)
        result = forward(tb)
        calls.append((tb.size, tb.padded_tokens))
        if pooled:
            emb = result.embeddings
            if out is None:
                width = emb.shape[1]
                out = np.empty((n, width), dtype=np.float32)
            out[result.positions] = emb
            continue
        hs = result.token_embeddings
        if out is None:
            width = hs.shape[2]
            out = np.empty((int(row_off[-1]), width), dtype=np.float32)
        for row, g in enumerate(result.positions.tolist()):
            out[row_off[g] : row_off[g + 1]] = hs[row, : lengths[g]]
    assert out is not None
    per_pack: list[np.ndarray] = []
    text_start = 0
    for p in packs:
        text_end = text_start + p.size
        if pooled:
            per_pack.append(out[text_start:text_end])
        else:
            per_pack.append(out[row_off[text_start] : row_off[text_end]])
        text_start = text_end
    return per_pack, calls


def pool_pack(
    pooler: Pooler, hidden: HiddenPack, normalize: bool | None, dimensions: int | None
) -> np.ndarray:
    """Pooled (n, d') vectors of one request, in its input order."""
    vectors: Vectors = pooler(hidden.to_hidden_states(), normalize=normalize, dimensions=dimensions)
    return vectors.embeddings


def finish_pooled(vectors: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """Apply a dimension cut to vectors pooled in the graph (re-normalising when they were normalised)."""
    return truncate_dims(vectors, dimensions, normalized)


def encode_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def probe_agreement(stored: np.ndarray, served: np.ndarray) -> float:
    """Lowest row-wise cosine between the artifact's probe vectors and the ones the service returned."""
    a = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
    b = served / np.maximum(np.linalg.norm(served, axis=1, keepdims=True), 1e-12)
    return float(np.einsum("ij,ij->i", a, b).min()) if len(a) else 1.0


def total_tokens(packs: Sequence[TokenPack]) -> int:
    """Batch cost of queued packs for @serve.batch's batch_size_fn: real tokens."""
    return sum(p.tokens for p in packs)


def join_pieces(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate per-piece outputs of a pack that was split by token budget."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass(frozen=True)
class BatchTuning:
    """Backbone batching knobs, changeable at runtime through the deployment's user_config."""

    # Real tokens merged from queued requests into one backbone pass (the planner then cuts
    # that into padded onnxruntime calls of at most batch.batch_tokens).
    batch_tokens: int = 8192
    # Texts per onnxruntime call.
    max_batch_size: int = 128
    # How long the first queued request waits for company. Batches also form naturally while the
    # model is busy (it runs on the replica's event loop), so a short wait costs little latency
    # at concurrency 1 and still merges bursts.
    max_wait_ms: float = 2.0

    @property
    def batch(self) -> BatchConfig:
        """The planner config for one onnxruntime call."""
        return BatchConfig(batch_tokens=self.batch_tokens, max_batch_size=self.max_batch_size)


def batch_tuning(data: dict[str, Any] | None) -> BatchTuning:
    """BatchTuning from a user_config mapping, with QM_BACKBONE_<FIELD> environment overrides."""
    return from_mapping(BatchTuning, data, env_prefix="QM_BACKBONE_")


class MicroBatcher:
    """Runs concurrent jobs together: at once when idle, merged while earlier batches are in flight.

    This is batching at the ingress hop: under load, one tokenizer / backbone / pooling / search
    call serves many HTTP requests, so the per-call cost of each Serve hop is paid per batch, not
    per request. At concurrency 1 nothing waits (no timer), unlike a fixed batch window.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Awaitable[list[Any]]],
        max_parallel: int,
        max_items: int,
        size: Callable[[Any], int] = lambda _job: 1,
    ) -> None:
        self._run = run
        self.max_parallel = max_parallel
        self.max_items = max_items
        self._size = size
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running = 0
        self.batch_sizes: list[int] = []  # recent batch sizes (jobs), for metrics and tests

    async def submit(self, job: Any) -> Any:
        """Queue a job and wait for its result (an exception result is raised here)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        self._kick()
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    def _kick(self) -> None:
        while self._pending and self._running < self.max_parallel:
            taken, used = 0, 0
            for job, _ in self._pending:
                n = self._size(job)
                if taken and used + n > self.max_items:
                    break
                taken, used = taken + 1, used + n
            batch, self._pending = self._pending[:taken], self._pending[taken:]
            batch = [(j, f) for j, f in batch if not f.done()]  # drop requests that gave up
            if not batch:
                continue
            self._running += 1
            self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
            asyncio.get_running_loop().create_task(self._go(batch))

    async def _go(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            results: list[Any] = await self._run([job for job, _ in batch])
        except Exception as exc:  # the whole batch failed: every job gets the error
            results = [exc] * len(batch)
        finally:
            self._running -= 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        self._kick()


@dataclass(frozen=True)
class EmbedJob:
    """One request's share of an ingress batch."""

    texts: list[str]
    truncate: bool
    normalize: bool | None
    dimensions: int | None
    field: str
    top_k: int | None = None  # None: vectors only; else search and keep this many
    min_score: float | None = None

    @property
    def group(self) -> tuple[bool | None, int | None, bool]:
        """Jobs with the same key share one pooling (and search) call."""
        return (self.normalize, self.dimensions, self.top_k is not None)


@dataclass(frozen=True)
class JobResult:
    """Vectors (or matches) of one job plus its token counts."""

    vectors: np.ndarray | None
    matches: list[list[dict[str, Any]]] | None
    index_version: str | None
    lengths: np.ndarray

    def need_vectors(self) -> np.ndarray:
        """The vectors of an embedding job."""
        assert self.vectors is not None, "an embedding job always carries vectors"
        return self.vectors

    def need_matches(self) -> list[list[dict[str, Any]]]:
        """The matches of a search job."""
        assert self.matches is not None, "a search job always carries matches"
        return self.matches


def row_ranges(jobs: Sequence[EmbedJob]) -> list[tuple[int, int]]:
    """[start, end) of each job's texts in the batch's concatenated text list."""
    out, start = [], 0
    for job in jobs:
        out.append((start, start + len(job.texts)))
        start += len(job.texts)
    return out


def cut_matches(matches: list[dict[str, Any]], top_k: int, min_score: float | None) -> list[dict[str, Any]]:
    """A job's own top_k and min_score applied to matches searched with the batch's largest top_k."""
    return [m for m in matches[:top_k] if min_score is None or m["score"] >= min_score]
