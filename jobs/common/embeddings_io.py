"""Read and write the embeddings parquet contract (docs/contracts.md) with plain pyarrow.

Writer: used by the embed job and by tests. Reader: streams row batches so an index build's
memory stays bounded by one batch, whatever the corpus size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import storage
from embedder.errors import ModelMismatch
from index.errors import IndexInvalid
from index.prompt import NO_PROMPT, DocumentPrompt
from jobs.common.layout import PART_GLOB, is_part_file

FINGERPRINT_KEY = b"qm.fingerprint"
DIMENSION_KEY = b"qm.dimension"
NORMALIZED_KEY = b"qm.normalized"
# The prompt the vectors were embedded with (index.prompt): its text ("" = none) and name (absent = none).
PROMPT_KEY = b"qm.prompt"
PROMPT_NAME_KEY = b"qm.prompt_name"
EMBEDDING = "embedding"
# Hash of the exact text each vector was made from, with the artifact fingerprint (16 bytes,
# jobs/embed_corpus/incremental.py): lets a later run reuse the vector. Bookkeeping, not a passthrough column.
TEXT_HASH = "qm_text_hash"
HASH_BYTES = 16
RESERVED_COLUMNS = ("id", EMBEDDING, TEXT_HASH)


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 -> fixed_size_list<float32>[dim] (not a tensor extension type)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])


def hashes_to_arrow(keys: np.ndarray) -> pa.FixedSizeBinaryArray:
    """(n,) S16 hashes -> fixed_size_binary(16) (one buffer copy, no per-row objects)."""
    keys = np.ascontiguousarray(keys, dtype=f"S{HASH_BYTES}")
    data = pa.py_buffer(keys.tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(HASH_BYTES), len(keys), [None, data])


def hashes_from_arrow(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """fixed_size_binary(16) column (no nulls) -> (n,) S16 array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_binary(arr.type) or arr.type.byte_width != HASH_BYTES or arr.null_count:
        raise IndexInvalid(
            f"'{TEXT_HASH}' must be fixed_size_binary({HASH_BYTES}) without nulls, is {arr.type}"
        )
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    start = arr.offset * HASH_BYTES
    return raw[start : start + len(arr) * HASH_BYTES].view(f"S{HASH_BYTES}").copy()


def embeddings_table(
    ids: pa.Array,
    vectors: np.ndarray,
    passthrough: pa.Table,
    fingerprint: str,
    normalized: bool,
    text_hashes: np.ndarray | None = None,
    prompt: DocumentPrompt = NO_PROMPT,
) -> pa.Table:
    """id, embedding (fixed_size_list<float32>[dim]), passthrough columns, qm_text_hash, qm.* file metadata."""
    columns = {"id": ids, EMBEDDING: embedding_array(vectors)}
    for name in passthrough.column_names:
        columns[name] = passthrough.column(name).combine_chunks()
    if text_hashes is not None:
        columns[TEXT_HASH] = hashes_to_arrow(text_hashes)
    metadata = {
        FINGERPRINT_KEY: fingerprint.encode(),
        DIMENSION_KEY: str(vectors.shape[1]).encode(),
        NORMALIZED_KEY: b"true" if normalized else b"false",
        PROMPT_KEY: prompt.text.encode(),
    }
    if prompt.name is not None:
        metadata[PROMPT_NAME_KEY] = prompt.name.encode()
    return pa.table(columns).replace_schema_metadata(metadata)


def prompt_of(metadata: Mapping[bytes, bytes] | None) -> DocumentPrompt:
    """The prompt a file's metadata records (files written before prompts: none)."""
    meta = metadata or {}
    name = meta.get(PROMPT_NAME_KEY)
    return DocumentPrompt(name.decode() if name is not None else None, meta.get(PROMPT_KEY, b"").decode())


def write_embeddings_parquet(
    path: str | os.PathLike[str],
    ids: Sequence[Any] | np.ndarray,
    vectors: np.ndarray,
    columns: Mapping[str, Sequence[Any]] | None = None,
    fingerprint: str = "",
    normalized: bool = True,
    row_group_rows: int = 65_536,
    prompt: DocumentPrompt = NO_PROMPT,
) -> str:
    """Write one embeddings parquet file through the job's own table builder (embeddings_table).

    For tools and tests that produce embeddings outside the job: the file is what the job writes.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"vectors {vectors.shape} do not match {len(ids)} ids")
    id_arr = pa.array(ids, type=pa.int64()) if _all_ints(ids) else pa.array([str(i) for i in ids])
    passthrough = pa.table({name: pa.array(values) for name, values in (columns or {}).items()})
    table = embeddings_table(id_arr, vectors, passthrough, fingerprint, normalized, prompt=prompt)
    return storage.write_parquet(path, table, row_group_size=row_group_rows).uri


def _all_ints(ids: Sequence[Any] | np.ndarray) -> bool:
    if isinstance(ids, np.ndarray):
        return bool(np.issubdtype(ids.dtype, np.integer))
    return all(isinstance(i, int | np.integer) for i in ids)


@dataclass(frozen=True)
class EmbeddingsInfo:
    """What an embeddings directory holds, from parquet footers only (no data read)."""

    files: tuple[storage.Location, ...]
    rows_per_file: tuple[int, ...]
    dimension: int
    fingerprint: str
    normalized: bool
    id_type: str  # "int64" | "string"
    passthrough: tuple[str, ...]
    text_hash: bool = False  # the files carry TEXT_HASH (written by jobs.embed_corpus)
    prompt: DocumentPrompt = NO_PROMPT  # the prompt every file's vectors were embedded with

    @property
    def count(self) -> int:
        """Total rows over all files."""
        return sum(self.rows_per_file)

    @property
    def first_rows(self) -> tuple[int, ...]:
        """Global row position of each file's first row (files in sorted order)."""
        starts, total = [], 0
        for rows in self.rows_per_file:
            starts.append(total)
            total += rows
        return tuple(starts)


def embedding_files(root: storage.Location) -> list[storage.Location]:
    """The part-*.parquet files of an embeddings directory, sorted (quarantine/ excluded)."""
    if not storage.is_dir(root):
        raise IndexInvalid(f"embeddings directory {root} does not exist")
    files = [
        storage.located(root, f.path)
        for f in storage.list_files(root, recursive=False)
        if is_part_file(f.base_name)
    ]
    if not files:
        raise IndexInvalid(f"no embeddings files ({PART_GLOB}) in {root}")
    return files


def _name(loc: storage.Location) -> str:
    return loc.name


def inspect_embeddings(directory: str | os.PathLike[str] | storage.Location) -> EmbeddingsInfo:
    """Check every file's schema and metadata agree (fingerprint, dimension, columns) and summarise.

    A path or URI is resolved here, once (callers inside the jobs pass the Location they hold)."""
    files = embedding_files(storage.resolve(directory))
    fingerprints: dict[str, list[str]] = {}
    prompts: dict[DocumentPrompt, list[str]] = {}
    first: tuple[int, str, tuple[str, ...], bool, bool] | None = None
    rows: list[int] = []
    schemas = [(f, storage.parquet_file(f).metadata) for f in files]
    for f, meta in schemas:
        file_meta = meta.schema.to_arrow_schema().metadata or {}
        fp = file_meta.get(FINGERPRINT_KEY, b"").decode()
        fingerprints.setdefault(fp, []).append(_name(f))
        prompts.setdefault(prompt_of(file_meta), []).append(_name(f))
    if len(fingerprints) > 1:  # checked first: a different model is the root cause of any other mismatch
        detail = "; ".join(f"{fp or '<none>'}: {', '.join(names[:3])}" for fp, names in fingerprints.items())
        raise ModelMismatch(f"embeddings files come from different model artifacts ({detail})")
    if len({p.text for p in prompts}) > 1:  # same model, other prompt: vectors that do not compare
        detail = "; ".join(f"{p.describe()}: {', '.join(names[:3])}" for p, names in prompts.items())
        raise ModelMismatch(f"embeddings files were embedded with different prompts ({detail})")
    for f, meta in schemas:
        shape = _file_shape(f, meta.schema.to_arrow_schema())
        if first is None:
            first = shape
        elif shape[:3] != first[:3] or shape[4] != first[4]:
            raise IndexInvalid(
                f"{_name(f)}: dimension/id type/columns {shape[:3]} (text hash {shape[4]}) differ from "
                f"{_name(files[0])}'s {first[:3]} (text hash {first[4]})"
            )
        rows.append(meta.num_rows)
    assert first is not None
    dim, id_type, passthrough, normalized, text_hash = first
    return EmbeddingsInfo(
        files=tuple(files),
        rows_per_file=tuple(rows),
        dimension=dim,
        fingerprint=next(iter(fingerprints)),
        normalized=normalized,
        id_type=id_type,
        passthrough=passthrough,
        text_hash=text_hash,
        prompt=next(iter(prompts)),
    )


def _file_shape(f: storage.Location, schema: pa.Schema) -> tuple[int, str, tuple[str, ...], bool, bool]:
    if "id" not in schema.names or EMBEDDING not in schema.names:
        raise IndexInvalid(f"{_name(f)}: needs columns 'id' and '{EMBEDDING}', has {schema.names}")
    emb = schema.field(EMBEDDING).type
    if not pa.types.is_fixed_size_list(emb) or not pa.types.is_float32(emb.value_type):
        raise IndexInvalid(f"{_name(f)}: '{EMBEDDING}' must be fixed_size_list<float32>, is {emb}")
    id_t = schema.field("id").type
    if pa.types.is_integer(id_t):
        id_type = "int64"
    elif pa.types.is_string(id_t) or pa.types.is_large_string(id_t):
        id_type = "string"
    else:
        raise IndexInvalid(f"{_name(f)}: 'id' must be int64 or string, is {id_t}")
    declared = (schema.metadata or {}).get(DIMENSION_KEY)
    if declared is not None and int(declared) != emb.list_size:
        raise IndexInvalid(f"{_name(f)}: qm.dimension says {int(declared)}, embeddings have {emb.list_size}")
    passthrough = tuple(n for n in schema.names if n not in RESERVED_COLUMNS)
    normalized = (schema.metadata or {}).get(NORMALIZED_KEY, b"true") == b"true"
    return emb.list_size, id_type, passthrough, normalized, TEXT_HASH in schema.names


@dataclass(frozen=True)
class EmbeddingBatch:
    """Consecutive rows of one file: global position of the first row, vectors, other columns."""

    first_row: int
    vectors: np.ndarray | None  # (n, dim) float32; None when the embedding column was not read
    table: pa.Table  # id + passthrough columns (only those asked for)

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return self.table.num_rows if self.vectors is None else len(self.vectors)


def to_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """fixed_size_list<float32>[dim] column -> (n, dim) float32 (flatten respects slices)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def read_embeddings(
    info: EmbeddingsInfo,
    columns: Sequence[str] | None = None,
    vectors: bool = True,
    batch_rows: int = 65_536,
    files: Sequence[int] | None = None,
) -> Iterator[EmbeddingBatch]:
    """Stream batches in global row order; `columns` = id/passthrough columns to keep (default all)."""
    keep = ["id", *info.passthrough] if columns is None else list(columns)
    read_cols = keep + ([EMBEDDING] if vectors else [])
    for i in files if files is not None else range(len(info.files)):
        position = info.first_rows[i]
        for rb in storage.parquet_file(info.files[i]).iter_batches(batch_size=batch_rows, columns=read_cols):
            mat = to_matrix(rb.column(EMBEDDING)) if vectors else None
            table = pa.Table.from_batches([rb]).select(keep)
            yield EmbeddingBatch(first_row=position, vectors=mat, table=table)
            position += rb.num_rows
