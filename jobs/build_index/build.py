"""Build a versioned FAISS index from embeddings parquet: the library behind `python -m jobs.build_index`.

Two streaming passes keep memory bounded by one batch plus the samples: pass 1 writes
metadata.parquet, checks ids and draws the training / recall samples; pass 2 adds vectors (here,
or on Ray actors with shards) and computes exact neighbours of the recall queries on the way.
jobs/build_index/update.py reuses pass 1 and save_version for --update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import storage
from embedder.progress import QUIET, Progress
from index import store as index_store
from index.errors import IndexInvalid
from index.faiss_index import IndexConfig, VectorIndex, choose_factory
from index.filter_columns import FILTERS_FILE, Kind, check_filter_columns, write_filters
from index.lexical import write_lexical
from index.store import IndexManifest
from index.tuning import ExactKnn, sample_rows, tune_search
from jobs.common.embeddings_io import (
    HASH_BYTES,
    EmbeddingsInfo,
    hashes_to_arrow,
    inspect_embeddings,
    read_embeddings,
)
from jobs.common.layout import SUMMARY_FILE

K = 10  # recall@10 is what the manifest records
# The text column BM25 indexes by default: what jobs.embed_corpus embeds by default (--text-column).
DEFAULT_LEXICAL_COLUMN = "question"


class RecallBelowTarget(IndexInvalid):
    """The built index misses too many true neighbours to be published."""


@dataclass(frozen=True)
class BuildResult:
    """A published index version."""

    version: str
    path: str  # local path or URI of the published version
    manifest: IndexManifest

    def summary(self) -> str:
        """One line for logs."""
        m = self.manifest
        return (
            f"CURRENT={self.version} {self.path}: {m.count} x {m.dimension} {m.factory} {m.metric} "
            f"recall@10={m.recall_at_10:.4f} {m.search_params} {m.bytes_per_vector:.0f} B/vector "
            f"built in {m.build_seconds:.1f}s; "
            + (
                f"lexical: {m.lexical['terms']} terms of {m.lexical['column']!r}"
                if m.lexical
                else "no lexical index"
            )
        )


@dataclass(frozen=True)
class Samples:
    """Row positions and vectors drawn in pass 1."""

    train_rows: np.ndarray
    train: np.ndarray
    query_rows: np.ndarray
    queries: np.ndarray
    ids: pa.ChunkedArray  # every row's id, in row order
    vector_hashes: np.ndarray  # (n,) S16, every row's vector hash (index_store.VECTOR_HASH)


def vector_hashes(vectors: np.ndarray) -> np.ndarray:
    """(n,) S16: BLAKE2b-128 of each row's float32 bytes (equal hashes = bit-identical vectors)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    width = v.shape[1] * 4
    raw = v.data.cast("B")
    out = np.empty(len(v), dtype=f"S{HASH_BYTES}")
    for i in range(len(v)):
        out[i] = hashlib.blake2b(raw[i * width : (i + 1) * width], digest_size=HASH_BYTES).digest()
    return out


def build(
    embeddings: str | Path | storage.Location,
    out: str | Path | storage.Location,
    factory: str = "auto",
    metric: str = "ip",
    shards: int = 0,
    cfg: IndexConfig | None = None,
    update_note: dict[str, Any] | None = None,
    filter_columns: Sequence[str] = (),
    progress: Progress = QUIET,
    lexical: bool = True,
    lexical_column: str | None = None,
) -> BuildResult:
    """Build a new version under `out` from an embeddings directory and make it CURRENT.

    `update_note`: recorded as the manifest's `update` when `--update` fell back to this full build.
    `filter_columns`: passthrough columns stored in their compact form for filtered /match.
    `progress`: step lines and row bars on stderr (the CLI's; silent by default for callers).
    `lexical`: also build the BM25 index (index/lexical.py) of `lexical_column` (None: `question`,
    skipped when the embeddings have no such column; a named column that is missing is refused).
    """
    cfg = cfg or IndexConfig()
    started = time.perf_counter()
    # The public entry: paths and URIs become Locations here, once; everything below takes those.
    embeddings, out = storage.resolve(embeddings), storage.resolve(out)
    info = inspect_embeddings(embeddings)
    filters = filter_kinds(info, filter_columns)  # refuse a bad column before any work
    # Shards merge inverted lists, so a sharded build is IVF even where auto would pick Flat.
    chosen = choose_factory(info.count, info.dimension, cfg) if factory == "auto" else factory
    if factory == "auto" and shards > 1 and chosen == "Flat":
        chosen = choose_factory(info.count, info.dimension, cfg, "ivf")
    index = VectorIndex.create(info.dimension, chosen, metric)
    query_rows = sample_rows(info.count, cfg.recall_sample, cfg.seed + 1)
    train_rows = sample_rows(info.count, index.train_rows(info.count, cfg), cfg.seed, exclude=query_rows)

    storage.check_bucket(out)
    storage.make_dirs(out)
    version = index_store.new_version_name()
    staged = index_store.staging_dir(out, version)
    try:
        progress.say(f"{info.count} vectors of dimension {info.dimension} -> {chosen} ({metric})")
        with progress.rows(info.count, "pass 1: metadata, ids, samples") as bar:
            samples = pass_one(info, staged / index_store.METADATA_FILE, train_rows, query_rows, cfg, bar)
        if len(train_rows):  # Flat and HNSW,Flat need no training: no step to announce
            with progress.step(f"training {chosen} on {len(samples.train)} vectors"):
                index.train(samples.train)
        if shards > 1:
            from jobs.build_index.shards import add_sharded  # imports ray only when asked for

            with progress.step(f"pass 2: adding {info.count} vectors on {shards} Ray actors"):
                index, truth = add_sharded(index, info, samples.queries, K + 1, shards, cfg)
        else:
            with progress.rows(info.count, "pass 2: adding vectors") as bar:
                truth = _add_local(index, info, samples.queries, cfg, bar)
        with progress.step(f"recall@10 check and search tuning on {len(samples.query_rows)} queries"):
            recall = tune_search(index, samples.queries, samples.query_rows, truth, cfg)
        if recall < cfg.target_recall:
            # The gate: a version that cannot find the true neighbours is never published.
            raise RecallBelowTarget(
                f"{chosen} reached recall@10 {recall:.4f} < target {cfg.target_recall} on "
                f"{len(samples.query_rows)} held-out queries, even at {index.search_params}; not published "
                "(CURRENT unchanged). Use a less compressed --factory, or QM_INDEX_TARGET_RECALL to accept less."
            )
        progress.say(f"recall@10 {recall:.4f} at {index.search_params}; writing the version")
        manifest = save_version(
            staged,
            index,
            info,
            factory=chosen,
            metric=metric,
            recall=recall,
            started=started,
            embeddings=embeddings,
            cfg=cfg,
            shards=max(shards, 1),
            update=update_note,
            filters=filters,
            lexical_column=lexical_choice(lexical, lexical_column, info),
        )
        with progress.step(f"publishing version {version}"):
            path = index_store.publish(out, staged, version).uri
    except BaseException:
        index_store.discard(staged)  # CURRENT still names the previous, complete version
        raise
    return BuildResult(version=version, path=path, manifest=manifest)


def save_version(
    staged: Path,
    index: VectorIndex,
    info: EmbeddingsInfo,
    *,
    factory: str,
    metric: str,
    recall: float,
    started: float,
    embeddings: storage.Location,
    cfg: IndexConfig,
    shards: int,
    update: dict[str, Any] | None,
    filters: dict[str, Kind] | None = None,
    lexical_column: str | None = None,
) -> IndexManifest:
    """Write index.faiss, filters.parquet (if asked) and manifest.json into a staged version.

    The filter columns are read back from the staged metadata.parquet, so they follow its row
    order (= FAISS ids) in full builds and updates alike.
    """
    size = index.save(staged / index_store.INDEX_FILE)
    described: dict[str, dict[str, Any]] = {}
    if filters:
        table = pq.read_table(staged / index_store.METADATA_FILE, columns=list(filters))
        described = write_filters(table, filters, staged / FILTERS_FILE)
    # BM25 over the whole staged metadata, for updates too: idf is a corpus statistic, so a
    # patched lexical index would drift from a fresh one; the rebuild is a small part of the job.
    lexical = write_lexical(staged, index_store.METADATA_FILE, lexical_column) if lexical_column else None
    manifest = IndexManifest(
        factory=factory,
        metric=metric,
        count=index.size,
        dimension=index.dimension,
        fingerprint=info.fingerprint,
        recall_at_10=round(recall, 4),
        bytes_per_vector=round(size / max(index.size, 1), 2),
        build_seconds=round(time.perf_counter() - started, 2),
        search_params=index.search_params,
        id_type=info.id_type,
        columns=info.passthrough,
        source_summary=_source_summary(embeddings),
        config=dataclasses.asdict(cfg),
        shards=shards,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        update=update,
        filters=described,
        # Servers refuse the version unless their model gives documents this prompt (index.prompt).
        document_prompt_name=info.prompt.name,
        document_prompt=info.prompt.text,
        lexical=lexical,
    )
    (staged / index_store.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def lexical_choice(lexical: bool, column: str | None, info: EmbeddingsInfo) -> str | None:
    """The text column to build BM25 over, or None for none (--no-lexical, or no `question` column)."""
    if not lexical:
        return None
    if column is not None:
        if column not in info.passthrough:
            raise IndexInvalid(
                f"--lexical-column {column!r} is not a column of the embeddings "
                f"(columns: {', '.join(info.passthrough) or 'none'})"
            )
        return column
    return DEFAULT_LEXICAL_COLUMN if DEFAULT_LEXICAL_COLUMN in info.passthrough else None


def filter_kinds(info: EmbeddingsInfo, names: Sequence[str]) -> dict[str, Kind]:
    """Kinds of the asked filter columns, checked against the embeddings' schema."""
    if not names:
        return {}
    if not info.files:
        raise IndexInvalid("no embeddings files to take filter columns from")
    return check_filter_columns(list(names), storage.parquet_file(info.files[0]).schema_arrow)


def pass_one(
    info: EmbeddingsInfo,
    metadata_path: Path,
    train_rows: np.ndarray,
    query_rows: np.ndarray,
    cfg: IndexConfig,
    bar: Any = None,
) -> Samples:
    """Write metadata.parquet (with each row's vector hash), refuse duplicate ids, gather the samples."""
    wanted = np.union1d(train_rows, query_rows)
    picked = np.empty((len(wanted), info.dimension), dtype=np.float32)
    ids: list[pa.ChunkedArray] = []
    hashes: list[np.ndarray] = []
    writer: pq.ParquetWriter | None = None
    try:
        for batch in read_embeddings(info, batch_rows=cfg.add_batch_rows):
            assert batch.vectors is not None
            hashes.append(vector_hashes(batch.vectors))
            table = batch.table.replace_schema_metadata(None).append_column(
                index_store.VECTOR_HASH, hashes_to_arrow(hashes[-1])
            )
            if writer is None:
                writer = pq.ParquetWriter(metadata_path, table.schema)
            writer.write_table(table)
            ids.append(table.column("id"))
            lo, hi = np.searchsorted(wanted, [batch.first_row, batch.first_row + batch.size])
            picked[lo:hi] = batch.vectors[wanted[lo:hi] - batch.first_row]
            if bar is not None:
                bar.update(batch.size)
    finally:
        if writer is not None:
            writer.close()
    all_ids = pa.chunked_array([c for col in ids for c in col.chunks])
    _refuse_duplicates(all_ids)
    at = {row: i for i, row in enumerate(wanted.tolist())}
    return Samples(
        train_rows=train_rows,
        train=picked[[at[r] for r in train_rows.tolist()]],
        query_rows=query_rows,
        queries=picked[[at[r] for r in query_rows.tolist()]],
        ids=all_ids,
        vector_hashes=np.concatenate(hashes) if hashes else np.zeros(0, f"S{HASH_BYTES}"),
    )


def _refuse_duplicates(ids: pa.ChunkedArray) -> None:
    counts = pc.value_counts(ids)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dupes):
        examples = [d["values"] for d in dupes.to_pylist()[:5]]
        raise IndexInvalid(f"{len(dupes)} duplicate id(s) in the embeddings, e.g. {examples}")


def _add_local(
    index: VectorIndex, info: EmbeddingsInfo, queries: np.ndarray, cfg: IndexConfig, bar: Any = None
) -> np.ndarray:
    """Pass 2 on this machine: add every vector with its row id; exact neighbours on the way."""
    exact = ExactKnn(queries, K + 1, index.metric)
    for batch in read_embeddings(info, columns=[], batch_rows=cfg.add_batch_rows):
        assert batch.vectors is not None
        index.add(batch.vectors, np.arange(batch.first_row, batch.first_row + batch.size))
        exact.update(batch.vectors, batch.first_row)
        if bar is not None:
            bar.update(batch.size)
    return exact.ids


def _source_summary(embeddings: storage.Location) -> dict | None:
    path = embeddings.child(SUMMARY_FILE)
    if not storage.is_file(path):
        return None
    summary: dict = storage.read_json(path)
    return summary
