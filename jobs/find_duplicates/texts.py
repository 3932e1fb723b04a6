"""The rows of a duplicates run: ids, unit vectors and texts in ascending id order, and where the
exact stage's texts come from (a passthrough column or the embed job's corpus), checked first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import storage
from jobs.common.corpus import ColumnSpec, CorpusError, discover_inputs, inspect_inputs
from jobs.common.embeddings_io import EmbeddingsInfo, read_embeddings
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.groups import id_order, unit_rows


@dataclass
class Rows:
    """Every embeddings row in ascending id order: ids, unit vectors, texts (or None)."""

    ids: pa.Array
    vectors: np.ndarray
    texts: list[str | None] | None
    text_source: str  # "corpus" | "embeddings" | "none"
    texts_missing: int = 0  # rows whose id the corpus does not have
    group_values: pa.Array | None = None  # the --group-by column, in the same order


def text_source(cfg: DedupConfig, info: EmbeddingsInfo) -> tuple[str, list[storage.Location]]:
    """Where the exact stage's texts come from, checked before any data is read."""
    if not cfg.exact:
        return "none", []
    if cfg.corpus:
        files = discover_inputs(storage.resolve(cfg.corpus))
        spec = ColumnSpec(text=cfg.text_column, id=cfg.id_column or None)
        inspect_inputs(files, spec)
        if cfg.id_column:
            for f in files:
                id_type = storage.parquet_file(f).schema_arrow.field(cfg.id_column).type
                is_int = pa.types.is_integer(id_type)
                if is_int != (info.id_type == "int64"):
                    raise CorpusError(
                        f"{f.uri}: id column {cfg.id_column!r} is {id_type}, the embeddings' ids are {info.id_type}"
                    )
        elif info.id_type != "int64":
            raise CorpusError("--id-column '' means row positions, but the embeddings' ids are strings")
        return "corpus", files
    if cfg.text_column in info.passthrough:
        text_type = storage.parquet_file(info.files[0]).schema_arrow.field(cfg.text_column).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise CorpusError(
                f"embeddings column {cfg.text_column!r} must be a string column, is {text_type}"
            )
        return "embeddings", []
    raise CorpusError(
        f"no texts for the exact stage: the embeddings have no column {cfg.text_column!r} "
        f"(they have {list(info.passthrough)}); give --corpus <the embed job's input>, "
        "name a passthrough column with --text-column, or pass --no-exact"
    )


def read_rows(
    cfg: DedupConfig, info: EmbeddingsInfo, source: str, corpus_files: list[storage.Location]
) -> Rows:
    """Vectors (unit length) and texts in ascending id order; two passes keep one copy of the vectors."""
    id_parts = [b.table.column("id") for b in read_embeddings(info, columns=["id"], vectors=False)]
    ids_all = pa.chunked_array([c for col in id_parts for c in col.chunks], type=id_parts[0].type)
    order = id_order(ids_all)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    vectors = np.empty((info.count, info.dimension), dtype=np.float32)
    texts: list[str | None] | None = [None] * info.count if source == "embeddings" else None
    columns = [cfg.text_column] if source == "embeddings" else []
    if cfg.group_by and cfg.group_by not in columns:
        columns.append(cfg.group_by)
    group_parts: list[tuple[np.ndarray, pa.Array]] = []
    for batch in read_embeddings(info, columns=columns):
        assert batch.vectors is not None
        at = position[batch.first_row : batch.first_row + batch.size]
        vectors[at] = batch.vectors
        if texts is not None:
            for p, t in zip(at.tolist(), batch.table.column(cfg.text_column).to_pylist(), strict=True):
                texts[p] = t if isinstance(t, str) else None
        if cfg.group_by:
            group_parts.append((at, batch.table.column(cfg.group_by).combine_chunks()))
    if not info.normalized:
        unit_rows(vectors)  # cosine is what the threshold means
    ids = ids_all.take(pa.array(order)).combine_chunks()
    rows = Rows(ids=ids, vectors=vectors, texts=texts, text_source=source)
    if group_parts:  # put each batch's values at its rows' sorted positions
        at = np.concatenate([a for a, _ in group_parts])
        values = pa.concat_arrays([v for _, v in group_parts])
        rows.group_values = values.take(pa.array(np.argsort(at, kind="stable")))
    if source == "corpus":
        rows.texts, rows.texts_missing = corpus_texts(cfg, corpus_files, ids)
    return rows


def corpus_texts(
    cfg: DedupConfig, files: list[storage.Location], ids: pa.Array
) -> tuple[list[str | None], int]:
    """Each id's text from the original input (first occurrence of an id wins, as in the embed job)."""
    id_chunks, text_chunks, offset = [], [], 0
    for f in files:
        cols = [cfg.text_column] + ([cfg.id_column] if cfg.id_column else [])
        table = storage.read_parquet(f, columns=cols)
        if cfg.id_column:
            col = table.column(cfg.id_column)
            id_chunks.append(col.cast(pa.int64()) if pa.types.is_integer(col.type) else col.cast(pa.string()))
        else:
            id_chunks.append(pa.chunked_array([pa.array(np.arange(offset, offset + table.num_rows))]))
        offset += table.num_rows
        text_chunks.append(table.column(cfg.text_column).cast(pa.string()))
    corpus_ids = pa.chunked_array(
        [c for col in id_chunks for c in col.chunks], type=ids.type
    ).combine_chunks()
    corpus_text = pa.chunked_array([c for col in text_chunks for c in col.chunks], type=pa.string())
    where = pc.index_in(ids, value_set=corpus_ids)
    missing = where.null_count
    texts = corpus_text.take(where).to_pylist()
    return texts, int(missing)
