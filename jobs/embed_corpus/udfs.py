"""Callable classes for Ray Data map_batches: thin holders of an Encoder that process whole shards.

A batch here is a few shard descriptions (JSON), not corpus rows: each actor reads its shard's
rows itself, so a shard's rows never cross the object store and are written by the one actor
that embedded them, under a file name fixed by the shard id (idempotent on retry). With several
shards per call the actor pipelines them (read + tokenize ahead, write behind, model in between).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import storage
from embedder import Encoder
from embedder.config import BatchConfig, EncoderConfig, session_config
from embedder.errors import EmbedderError, ModelMismatch
from embedder.session import RuntimeInfo
from embedder.tokenize import Tokenized
from index.prompt import NO_PROMPT, DocumentPrompt
from jobs.common.corpus import (
    ColumnSpec,
    Shard,
    quarantine_table,
    read_shard,
    row_ids,
    shard_from_dict,
    split_rows,
)
from jobs.embed_corpus.incremental import ReuseIndex, resolve_reuse, text_hashes
from jobs.embed_corpus.output import embeddings_table, write_shard_outputs
from jobs.embed_corpus.run_state import ShardStats

TOO_LONG_POLICIES = ("truncate", "quarantine")
ERROR_FIELD = "error"  # per-shard result column: "" when the shard succeeded, else the reason


@dataclass(frozen=True)
class ShardTask:
    """Everything an actor needs besides the shard: where to write, which columns, which policy."""

    output: str  # local path or URI
    columns: ColumnSpec
    too_long: str = "truncate"
    # Prepended to every text before tokenizing (the driver chose it: --prompt-name or the model's
    # document prompt), and recorded in each part file's metadata.
    prompt: DocumentPrompt = NO_PROMPT


def shard_to_json(shard: Shard) -> str:
    """Serialise a shard description for a Ray Data row."""
    return json.dumps(dataclasses.asdict(shard))


def shard_from_json(text: str) -> Shard:
    """Inverse of shard_to_json."""
    return shard_from_dict(json.loads(text))


@dataclass
class PreparedShard:
    """A shard read, judged and tokenized, waiting for the model (the CPU-side half of the work).

    `fresh` are the positions (into `texts`) that go through the model; the others took their
    vector from the previous run (`found`).
    """

    shard: Shard
    table: pa.Table
    rows_read: int
    good: np.ndarray  # table row positions of the usable rows
    bad: list[int]  # table row positions to quarantine
    reasons: list[str]
    keys: np.ndarray  # text hashes of the good rows
    vectors: np.ndarray  # float32 (len(good), dim); reused rows filled, fresh rows after encode
    token_counts: np.ndarray
    truncated: np.ndarray
    found: np.ndarray  # bool: vector reused from --previous
    fresh: np.ndarray  # positions into good that need the model
    tokenized: Tokenized  # of the fresh texts
    started: float  # perf_counter when the shard's work began
    tokenize_seconds: float = 0.0
    reuse_seconds: float = 0.0
    encode_seconds: float = 0.0


def prepare_shard(
    encoder: Encoder, shard: Shard, task: ShardTask, reuse: ReuseIndex | None = None
) -> PreparedShard:
    """Read one shard, split good and bad rows, look up reusable vectors and tokenize the rest.

    With `reuse` (an incremental run), rows whose text hash is in the previous run take that
    vector and only the others go through the model; reused rows are still tokenized (about 1% of
    the model's cost) so token counts, truncation and the --too-long policy are exactly a full run's.
    """
    started = time.perf_counter()
    cols = task.columns
    table = read_shard(shard)  # all columns: quarantine keeps the original row
    split = split_rows(table, shard, cols)
    good = split.good
    texts = table.column(cols.text).take(pa.array(good, type=pa.int64())).to_pylist()
    keys = text_hashes(texts, encoder.fingerprint)
    vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    token_counts = np.zeros(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    t_reuse = time.perf_counter()
    found = np.zeros(len(texts), dtype=bool)
    if reuse is not None and len(texts):
        found, files, rows = reuse.find(keys)
        hit = np.flatnonzero(found)
        if len(hit):
            vectors[hit] = reuse.read_vectors(files[hit], rows[hit], keys[hit])
            hits = [texts[i] for i in hit.tolist()]
            tokens = encoder.tokenizer.tokenize(hits, truncate=True, prompt=task.prompt.text)
            token_counts[hit], truncated[hit] = tokens.token_counts, tokens.truncated
    reuse_seconds = time.perf_counter() - t_reuse
    fresh = np.flatnonzero(~found)
    t_tokenize = time.perf_counter()
    fresh_texts = [texts[i] for i in fresh.tolist()]
    tokenized = encoder.tokenizer.tokenize(fresh_texts, truncate=True, prompt=task.prompt.text)
    return PreparedShard(
        shard=shard,
        table=table,
        rows_read=split.rows,
        good=good,
        bad=list(split.bad),
        reasons=list(split.reasons),
        keys=keys,
        vectors=vectors,
        token_counts=token_counts,
        truncated=truncated,
        found=found,
        fresh=fresh,
        tokenized=tokenized,
        started=started,
        tokenize_seconds=time.perf_counter() - t_tokenize,
        reuse_seconds=reuse_seconds,
    )


def encode_shard(encoder: Encoder, prep: PreparedShard) -> PreparedShard:
    """Run the model on the shard's fresh texts (the device-side half; fills prep in place)."""
    t_encode = time.perf_counter()
    encoded = encoder.encode_tokenized(prep.tokenized)
    prep.encode_seconds = time.perf_counter() - t_encode
    fresh = prep.fresh
    prep.vectors[fresh], prep.token_counts[fresh], prep.truncated[fresh] = (
        encoded.vectors,
        encoded.token_counts,
        encoded.truncated,
    )
    return prep


def finish_shard(encoder: Encoder, prep: PreparedShard, task: ShardTask) -> ShardStats:
    """Apply the --too-long policy, build the output tables, write the shard's files; its counts."""
    cols, shard, table = task.columns, prep.shard, prep.table
    bad, reasons = prep.bad, prep.reasons
    keep = np.ones(len(prep.good), dtype=bool)
    if task.too_long == "quarantine":
        keep = ~prep.truncated
        for i in np.flatnonzero(prep.truncated):
            bad.append(int(prep.good[i]))
            reasons.append(f"too long: {prep.token_counts[i]} tokens > max {encoder.max_seq_length}")
    kept = prep.good[keep]
    embeddings = embeddings_table(
        row_ids(table, shard, cols, kept),
        prep.vectors[keep],
        table.select(list(cols.keep)).take(pa.array(kept, type=pa.int64())),
        encoder.fingerprint,
        encoder.artifact.manifest.normalize,
        text_hashes=prep.keys[keep],
        prompt=task.prompt,
    )
    order = np.argsort(bad, kind="stable")  # quarantine rows in input order
    quarantine = quarantine_table(table, np.asarray(bad, np.int64)[order], [reasons[i] for i in order])
    write_shard_outputs(storage.resolve(task.output), shard.shard_id, embeddings, quarantine)
    fed = np.minimum(prep.token_counts[keep], encoder.max_seq_length)
    return ShardStats(
        shard_id=shard.shard_id,
        rows_read=prep.rows_read,
        rows_embedded=int(keep.sum()),
        rows_quarantined=len(bad),
        rows_truncated=int(prep.truncated[keep].sum()),
        tokens=int(fed.sum()),
        # Wall time from the shard's read to its write; overlapping shards each count their own span.
        seconds=time.perf_counter() - prep.started,
        tokenize_seconds=prep.tokenize_seconds,
        encode_seconds=prep.encode_seconds,
        rows_reused=int((prep.found & keep).sum()),
        reuse_seconds=prep.reuse_seconds,
    )


def process_shard(
    encoder: Encoder, shard: Shard, task: ShardTask, reuse: ReuseIndex | None = None
) -> ShardStats:
    """Read, judge, embed and write one shard; returns its counts."""
    return finish_shard(encoder, encode_shard(encoder, prepare_shard(encoder, shard, task, reuse)), task)


# What one shard of a call ends as: its counts, or the project error that stopped it.
Outcome = ShardStats | EmbedderError


def process_shards(
    encoder: Encoder,
    shards: Sequence[Shard],
    task: ShardTask,
    reuse: ReuseIndex | None = None,
    pipelined: bool = True,
) -> list[Outcome]:
    """Process shards in order; one outcome per shard, a failing shard never stops the others.

    Pipelined: while shard i is in the model (this thread), shard i+1 is read and tokenized and
    shard i-1 is written on two helper threads, so the device does not wait for parquet I/O.
    onnxruntime, tokenizers and pyarrow release the GIL, so the three really overlap. Each shard
    is still written whole by finish_shard before its stats exist, so the driver's commit after
    the write (exactly once) is unchanged. At most three shards are in memory at a time, and only
    one thread tokenizes at a time (prepares run one after another).
    """
    if not pipelined or len(shards) < 2:
        return [_sequential(encoder, s, task, reuse) for s in shards]
    outcomes: list[Outcome | None] = [None] * len(shards)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="shard-io") as pool:
        next_prep: Future[PreparedShard] | None = pool.submit(prepare_shard, encoder, shards[0], task, reuse)
        writing: tuple[int, Future[ShardStats]] | None = None
        for i in range(len(shards)):
            assert next_prep is not None
            current = next_prep
            next_prep = (
                pool.submit(prepare_shard, encoder, shards[i + 1], task, reuse)
                if i + 1 < len(shards)
                else None
            )
            try:
                prep = encode_shard(encoder, current.result())
            except EmbedderError as exc:
                outcomes[i] = exc
                continue
            if writing is not None:  # shard i-1's write overlapped shard i's encode; collect it
                outcomes[writing[0]] = _outcome(writing[1])
            writing = (i, pool.submit(finish_shard, encoder, prep, task))
        if writing is not None:
            outcomes[writing[0]] = _outcome(writing[1])
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(shards), "every shard has an outcome"
    return done


def _sequential(encoder: Encoder, shard: Shard, task: ShardTask, reuse: ReuseIndex | None) -> Outcome:
    try:
        return process_shard(encoder, shard, task, reuse)
    except EmbedderError as exc:
        return exc


def _outcome(future: Future[ShardStats]) -> Outcome:
    try:
        return future.result()
    except EmbedderError as exc:
        return exc


def runtime_label(runtime: RuntimeInfo) -> str:
    """One string per runtime for shard markers: "backend/precision/device units" (what made the vectors)."""
    return f"{runtime.backend}/{runtime.precision}/{runtime.device} {','.join(runtime.cpu_units) or '-'}"


class EmbedShards:
    """map_batches UDF: loads the artifact once per actor, verifies its fingerprint, embeds shards.

    `reuse` (incremental runs): the driver's ReuseIndex, as a Ray object ref fetched once per
    actor (zero-copy from the node's object store).
    """

    def __init__(
        self,
        artifact: str,
        fingerprint: str,
        task: ShardTask,
        providers: Sequence[str] = ("cpu",),
        threads: int = 1,
        batch: BatchConfig | None = None,
        reuse: Any = None,
        pipelined: bool = True,
        backend: str | None = None,
        precision: str | None = None,
        cuda_tf32: bool | None = None,
    ) -> None:
        # None: the node's QM_SESSION_* environment, else auto (embedder.runtime_choice).
        session = session_config({"cuda_tf32": cuda_tf32} if cuda_tf32 is not None else None)
        config = EncoderConfig(session=session)
        # Encoder.load re-embeds the probe set, so a drifting runtime on this node refuses to start.
        self.encoder = Encoder.load(
            artifact,
            providers=providers,
            threads=threads,
            batch=batch,
            config=config,
            backend=backend,
            precision=precision,
        )
        self.runtime = runtime_label(self.encoder.runtime)
        if self.encoder.fingerprint != fingerprint:
            raise ModelMismatch(
                f"artifact {artifact} on this node has fingerprint {self.encoder.fingerprint}, "
                f"the driver planned the run with {fingerprint}"
            )
        self.task = task
        self.reuse = resolve_reuse(reuse)
        # Several shards per call (map_batches batch_size > 1): overlap their I/O with the model.
        self.pipelined = pipelined

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Process each shard in the batch; one stats row per shard, with `error` set when it failed.

        A shard that meets a clear project error (unreadable data pages, disk full, storage
        unreachable) is reported as data, not raised: a raised error reaches the driver wrapped in
        Ray's exceptions with only a remote traceback, while this keeps the one-line message, and
        the other shards of the run still finish and commit, so a rerun has less to do.
        """
        shards = [shard_from_json(str(spec)) for spec in batch["spec"]]
        stats, errors = [], []
        for shard, outcome in zip(
            shards, process_shards(self.encoder, shards, self.task, self.reuse, self.pipelined), strict=True
        ):
            if isinstance(outcome, EmbedderError):
                stats.append(ShardStats(shard.shard_id, shard.rows, 0, 0, 0, 0))
                errors.append(str(outcome) or type(outcome).__name__)
            else:
                stats.append(dataclasses.replace(outcome, runtime=self.runtime))
                errors.append("")
        out = {f.name: np.array([getattr(s, f.name) for s in stats]) for f in dataclasses.fields(ShardStats)}
        out[ERROR_FIELD] = np.array(errors, dtype=object)
        return out
