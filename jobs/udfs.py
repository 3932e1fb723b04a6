"""Callable classes for Ray Data map_batches: thin holders of an Encoder that process whole shards.

A batch here is a few shard descriptions (JSON), not corpus rows: each actor reads its shard's
rows itself, so a shard's rows never cross the object store and are written by the one actor
that embedded them, under a file name fixed by the shard id (idempotent on retry).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedder import Encoder, storage
from embedder.config import BatchConfig
from embedder.corpus import (
    ColumnSpec,
    Shard,
    quarantine_table,
    read_shard,
    row_ids,
    shard_from_dict,
    split_rows,
)
from embedder.errors import EmbedderError, ModelMismatch
from jobs.embed_output import embeddings_table, write_shard_outputs
from jobs.incremental import ReuseIndex, resolve_reuse, text_hashes
from jobs.run_state import ShardStats

TOO_LONG_POLICIES = ("truncate", "quarantine")
ERROR_FIELD = "error"  # per-shard result column: "" when the shard succeeded, else the reason


@dataclass(frozen=True)
class ShardTask:
    """Everything an actor needs besides the shard: where to write, which columns, which policy."""

    output: str  # local path or URI
    columns: ColumnSpec
    too_long: str = "truncate"


def shard_to_json(shard: Shard) -> str:
    """Serialise a shard description for a Ray Data row."""
    return json.dumps(dataclasses.asdict(shard))


def shard_from_json(text: str) -> Shard:
    """Inverse of shard_to_json."""
    return shard_from_dict(json.loads(text))


def process_shard(
    encoder: Encoder, shard: Shard, task: ShardTask, reuse: ReuseIndex | None = None
) -> ShardStats:
    """Read, judge, embed and write one shard; returns its counts.

    With `reuse` (an incremental run), rows whose text hash is in the previous run take that
    vector and only the others go through the model; reused rows are still tokenized (about 1% of
    the model's cost) so token counts, truncation and the --too-long policy are exactly a full run's.
    """
    started = time.perf_counter()
    cols = task.columns
    table = read_shard(shard)  # all columns: quarantine keeps the original row
    split = split_rows(table, shard, cols)
    good, bad, reasons = split.good, list(split.bad), list(split.reasons)
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
            tokens = encoder.tokenizer.tokenize([texts[i] for i in hit.tolist()], truncate=True)
            token_counts[hit], truncated[hit] = tokens.token_counts, tokens.truncated
    reuse_seconds = time.perf_counter() - t_reuse
    fresh = np.flatnonzero(~found)
    t_encode = time.perf_counter()
    encoded = encoder.encode_detailed([texts[i] for i in fresh.tolist()], truncate=True)
    encode_seconds = time.perf_counter() - t_encode
    vectors[fresh], token_counts[fresh], truncated[fresh] = (
        encoded.vectors,
        encoded.token_counts,
        encoded.truncated,
    )
    keep = np.ones(len(good), dtype=bool)
    if task.too_long == "quarantine":
        keep = ~truncated
        for i in np.flatnonzero(truncated):
            bad.append(int(good[i]))
            reasons.append(f"too long: {token_counts[i]} tokens > max {encoder.max_seq_length}")
    kept = good[keep]
    embeddings = embeddings_table(
        row_ids(table, shard, cols, kept),
        vectors[keep],
        table.select(list(cols.keep)).take(pa.array(kept, type=pa.int64())),
        encoder.fingerprint,
        encoder.artifact.manifest.normalize,
        text_hashes=keys[keep],
    )
    order = np.argsort(bad, kind="stable")  # quarantine rows in input order
    quarantine = quarantine_table(table, np.asarray(bad, np.int64)[order], [reasons[i] for i in order])
    write_shard_outputs(storage.resolve(task.output), shard.shard_id, embeddings, quarantine)
    fed = np.minimum(token_counts[keep], encoder.max_seq_length)
    return ShardStats(
        shard_id=shard.shard_id,
        rows_read=split.rows,
        rows_embedded=int(keep.sum()),
        rows_quarantined=len(bad),
        rows_truncated=int(truncated[keep].sum()),
        tokens=int(fed.sum()),
        seconds=time.perf_counter() - started,
        encode_seconds=encode_seconds,
        rows_reused=int((found & keep).sum()),
        reuse_seconds=reuse_seconds,
    )


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
    ) -> None:
        # Encoder.load re-embeds the probe set, so a drifting runtime on this node refuses to start.
        self.encoder = Encoder.load(artifact, providers=providers, threads=threads, batch=batch)
        if self.encoder.fingerprint != fingerprint:
            raise ModelMismatch(
                f"artifact {artifact} on this node has fingerprint {self.encoder.fingerprint}, "
                f"the driver planned the run with {fingerprint}"
            )
        self.task = task
        self.reuse = resolve_reuse(reuse)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Process each shard in the batch; one stats row per shard, with `error` set when it failed.

        A shard that meets a clear project error (unreadable data pages, disk full, storage
        unreachable) is reported as data, not raised: a raised error reaches the driver wrapped in
        Ray's exceptions with only a remote traceback, while this keeps the one-line message, and
        the other shards of the run still finish and commit, so a rerun has less to do.
        """
        stats, errors = [], []
        for spec in batch["spec"]:
            shard = shard_from_json(str(spec))
            try:
                stats.append(process_shard(self.encoder, shard, self.task, self.reuse))
                errors.append("")
            except EmbedderError as exc:
                stats.append(ShardStats(shard.shard_id, shard.rows, 0, 0, 0, 0))
                errors.append(str(exc) or type(exc).__name__)
        out = {f.name: np.array([getattr(s, f.name) for s in stats]) for f in dataclasses.fields(ShardStats)}
        out[ERROR_FIELD] = np.array(errors, dtype=object)
        return out
