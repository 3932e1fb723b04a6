"""Input corpus for bulk embedding: find parquet files, check schemas, cut shards, judge rows.

Ray-free. The job (jobs/embed_corpus/run.py) calls these in the driver before any work (so wrong
inputs fail fast) and inside its actors (to read one shard and split good rows from bad).
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import storage
from embedder.errors import EmbedderError
from embedder.tokenize import text_problem
from jobs.common.records import from_record

PARQUET_MAGIC = b"PAR1"
REASON = "reason"


class CorpusError(EmbedderError):
    """The input corpus cannot be embedded as asked (no files, not parquet, missing column)."""


@dataclass(frozen=True)
class InputFile:
    """One parquet input file, described from its footer."""

    path: str
    rows: int
    row_group_rows: tuple[int, ...]
    size: int
    mtime_ns: int

    def signature(self) -> list[object]:
        """What identifies this file's content for resume checks (path, size, mtime, rows)."""
        return [self.path, self.size, self.mtime_ns, self.rows]


@dataclass(frozen=True)
class Shard:
    """A deterministic slice [start, stop) of one input file; the unit of work and of resume."""

    shard_id: str
    file: str
    start: int
    stop: int
    first_row: int  # global position of row `start` over all input files in order
    # Offsets (within the shard) of rows whose id appeared earlier in the corpus, and where.
    duplicate_offsets: tuple[int, ...] = ()
    duplicate_first: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        """Rows in the shard."""
        return self.stop - self.start


@dataclass(frozen=True)
class ColumnSpec:
    """Which input columns play which role."""

    text: str
    id: str | None  # None: ids are generated as global row positions
    keep: tuple[str, ...] = field(default_factory=tuple)


def discover_inputs(loc: storage.Location) -> list[storage.Location]:
    """Parquet files named by a file, a directory / prefix (recursive) or a glob.

    Sorted by URI; raises CorpusError when nothing matches, StorageError when the place cannot be listed.
    """
    kind = storage.info(loc).type
    if kind == pafs.FileType.File:
        return [loc]
    if kind == pafs.FileType.Directory:
        root = loc.path.rstrip("/") + "/"
        # Hidden and underscore files are writer bookkeeping (_SUCCESS, .crc), as Spark/Ray Data treat them.
        found = [
            storage.located(loc, f.path)
            for f in storage.list_files(loc)
            if not any(part.startswith((".", "_")) for part in f.path[len(root) :].split("/"))
        ]
    elif loc.is_local:
        found = [storage.located(loc, p) for p in glob.glob(loc.path, recursive=True) if Path(p).is_file()]
    else:
        found = _glob_remote(loc)
    if not found:
        raise CorpusError(f"no input files found at {loc} (a parquet file, a directory or a glob)")
    return sorted(found, key=lambda f: f.uri)


def _glob_remote(loc: storage.Location) -> list[storage.Location]:
    """Object stores cannot glob: list below the pattern's fixed prefix and match names."""
    pattern = loc.path
    fixed = pattern[: min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))]
    base = storage.located(loc, fixed.rsplit("/", 1)[0])
    return [
        storage.located(loc, f.path) for f in storage.list_files(base) if fnmatch.fnmatchcase(f.path, pattern)
    ]


def read_footer(path: storage.Location) -> pq.FileMetaData:
    """A parquet file's footer; CorpusError when the file is not parquet or cannot be read."""
    try:
        head = storage.read_range(path, 0, 4)
        if head != PARQUET_MAGIC:
            raise CorpusError(
                f"{path} is not a parquet file (it does not start with the parquet magic bytes)"
            )
        return storage.parquet_file(path).metadata
    except storage.StorageError as exc:
        raise CorpusError(f"{path} is not a readable parquet file: {exc}") from exc


TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


def inspect_inputs(files: Sequence[str | storage.Location], columns: ColumnSpec) -> list[InputFile]:
    """Read every footer; raise CorpusError naming the first unreadable file or wrong column.

    A path or URI (as recorded in _RUN.json) is resolved here, once per file."""
    out: list[InputFile] = []
    for spec in files:
        f = storage.resolve(spec)
        meta = read_footer(f)
        schema = meta.schema.to_arrow_schema()
        wanted = [columns.text, *([columns.id] if columns.id else []), *columns.keep]
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise CorpusError(
                f"{f} has no column(s) {', '.join(map(repr, missing))}; its columns are {schema.names}"
            )
        text_type = schema.field(columns.text).type
        if not any(check(text_type) for check in TEXT_TYPES):
            # Caught here, before any work: a binary or numeric column would otherwise run the whole
            # job and quarantine every row.
            raise CorpusError(f"{f}: text column {columns.text!r} must be a string column, is {text_type}")
        if columns.id:
            id_type = schema.field(columns.id).type
            if not (pa.types.is_integer(id_type) or any(check(id_type) for check in TEXT_TYPES)):
                raise CorpusError(f"{f}: id column {columns.id!r} must be an integer or string, is {id_type}")
        stat = storage.info(f)
        rg_rows = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        mtime_ns = int(stat.mtime_ns) if stat.mtime_ns is not None else 0
        out.append(InputFile(f.uri, meta.num_rows, rg_rows, int(stat.size or 0), mtime_ns))
    return out


def shard_from_dict(data: dict[str, Any]) -> Shard:
    """A Shard from its asdict()/JSON form (lists back to tuples)."""
    return from_record(Shard, data)


def resolve_columns(
    first_file: storage.Location, text: str, id_column: str | None, keep: Sequence[str]
) -> ColumnSpec:
    """Pick the id column: the one named, else 'id' when present, else generated row positions."""
    names = read_footer(first_file).schema.to_arrow_schema().names
    if id_column is None and "id" in names:
        id_column = "id"
    if "id" in keep and id_column != "id":
        raise CorpusError("--keep-columns names 'id', but the output's id column is the --id-column")
    return ColumnSpec(text=text, id=id_column, keep=tuple(k for k in keep if k != id_column))


def plan_shards(inputs: Sequence[InputFile], shard_rows: int) -> list[Shard]:
    """Cut files into shards of about `shard_rows`, on row-group boundaries when they are small enough."""
    shards: list[Shard] = []
    global_row = 0
    for i, f in enumerate(inputs):
        # Candidate cut points: row-group starts, plus extra cuts inside row groups bigger than a shard.
        cuts = [0]
        position = 0
        for n in f.row_group_rows:
            cuts.extend(range(position + shard_rows, position + n, shard_rows))
            position += n
            cuts.append(position)
        start = 0
        for cut in cuts[1:]:
            if cut - start >= shard_rows or cut == f.rows:
                if cut > start:
                    shards.append(Shard(f"{i:05d}-{start:010d}", f.path, start, cut, global_row + start))
                start = cut
        global_row += f.rows
    return shards


def auto_shard_rows(total_rows: int, workers: int) -> int:
    """Rows per shard: about 8 shards per worker for balance, 256..8192 so resume loses little work."""
    return int(min(8192, max(256, -(-total_rows // max(1, 8 * workers)))))


def find_duplicate_ids(inputs: Sequence[InputFile], id_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Global positions of rows whose id occurred earlier, and the position of that first occurrence.

    A pre-pass over the id column only (cheap next to embedding), so every worker knows, without a
    shuffle, which of its rows are later duplicates; the first occurrence in file/row order wins.
    """
    chunks = [storage.read_parquet(f.path, columns=[id_column]).column(0) for f in inputs]
    if not chunks or sum(len(c) for c in chunks) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    types = {c.type for c in chunks}
    if len(types) > 1:
        raise CorpusError(
            f"id column {id_column!r} has different types across files: {sorted(map(str, types))}"
        )
    ids = pa.chunked_array([a for c in chunks for a in c.chunks], type=chunks[0].type)
    order = pc.array_sort_indices(ids).to_numpy()  # stable: equal ids keep file/row order
    ranked = ids.take(pa.array(order))
    if len(order) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = pc.equal(ranked.slice(1), ranked.slice(0, len(order) - 1))
    same_np = same.combine_chunks().fill_null(False).to_numpy(zero_copy_only=False)
    later = np.flatnonzero(same_np) + 1  # sorted positions that repeat their predecessor
    if not len(later):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # First occurrence of each run of equal ids: walk back to the run start.
    run_start = np.maximum.accumulate(np.where(np.concatenate([[False], same_np]), 0, np.arange(len(order))))
    return order[later].astype(np.int64), order[run_start[later]].astype(np.int64)


def attach_duplicates(shards: Sequence[Shard], positions: np.ndarray, first: np.ndarray) -> list[Shard]:
    """Give each shard the offsets of its duplicate-id rows (positions are global row numbers)."""
    order = np.argsort(positions)
    positions, first = positions[order], first[order]
    out = []
    for s in shards:
        lo, hi = np.searchsorted(positions, [s.first_row, s.first_row + s.rows])
        offsets = tuple(int(p - s.first_row) for p in positions[lo:hi])
        firsts = tuple(int(p) for p in first[lo:hi])
        out.append(Shard(s.shard_id, s.file, s.start, s.stop, s.first_row, offsets, firsts))
    return out


def read_shard(shard: Shard, columns: Sequence[str] | None = None) -> pa.Table:
    """Rows [start, stop) of the shard's file, reading only the row groups that hold them."""
    pf = storage.parquet_file(shard.file)
    groups, first_row_of_first_group, position = [], None, 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if position < shard.stop and position + n > shard.start:
            groups.append(i)
            if first_row_of_first_group is None:
                first_row_of_first_group = position
        position += n
    # A footer can be valid while data pages are corrupt (bad compression, truncated pages): that
    # surfaces here, as one StorageError naming the file and the rows, never a raw OSError.
    with storage.errors_named(f"{shard.file} (rows {shard.start}-{shard.stop})", "read"):
        table = pf.read_row_groups(groups, columns=list(columns) if columns is not None else None)
    return table.slice(shard.start - (first_row_of_first_group or 0), shard.rows)


@dataclass(frozen=True)
class RowSplit:
    """Which rows of a shard can be embedded, and why the others cannot."""

    good: np.ndarray  # int64 offsets into the shard table
    bad: np.ndarray  # int64 offsets
    reasons: list[str]  # one per bad offset

    @property
    def rows(self) -> int:
        """Rows judged."""
        return len(self.good) + len(self.bad)


def split_rows(table: pa.Table, shard: Shard, columns: ColumnSpec) -> RowSplit:
    """Judge each row: null id, unusable text (null / non-string / blank) or duplicate id -> quarantine."""
    problems: dict[int, str] = {}
    if columns.id is not None:
        for null_at in np.flatnonzero(table.column(columns.id).is_null().to_numpy(zero_copy_only=False)):
            problems[int(null_at)] = "null id"
    for i, value in enumerate(table.column(columns.text).to_pylist()):
        if i not in problems and (problem := text_problem(value)) is not None:
            problems[i] = problem
    for offset, first in zip(shard.duplicate_offsets, shard.duplicate_first, strict=True):
        problems.setdefault(offset, f"duplicate id (first seen at input row {first})")
    bad = np.array(sorted(problems), dtype=np.int64)
    good = np.setdiff1d(np.arange(table.num_rows, dtype=np.int64), bad, assume_unique=True)
    return RowSplit(good=good, bad=bad, reasons=[problems[int(i)] for i in bad])


def row_ids(table: pa.Table, shard: Shard, columns: ColumnSpec, offsets: np.ndarray) -> pa.Array:
    """Ids of the chosen rows: the id column's values, or global row positions when there is none."""
    if columns.id is None:
        return pa.array(shard.first_row + offsets, type=pa.int64())
    col = table.column(columns.id).take(pa.array(offsets, type=pa.int64())).combine_chunks()
    return col.cast(pa.int64()) if pa.types.is_integer(col.type) else col.cast(pa.string())


def quarantine_table(table: pa.Table, offsets: np.ndarray, reasons: Sequence[str]) -> pa.Table:
    """The original rows at `offsets` plus a `reason` column."""
    rows = table.take(pa.array(offsets, type=pa.int64()))
    if REASON in rows.column_names:  # keep the input's own column; ours wins the name
        rows = rows.rename_columns([f"input_{n}" if n == REASON else n for n in rows.column_names])
    return rows.append_column(REASON, pa.array(list(reasons), type=pa.string()))
