"""Filter columns of an index version: a compact, fast-to-test copy of some metadata columns.

Ray-free. `build_index --filter-columns category,updated` writes `filters.parquet` beside the
index (row i = FAISS id i, like metadata.parquet); a server loads it into numpy arrays:

- string columns: dictionary codes (uint16 while the dictionary has < 65,535 values, else int32)
  plus the dictionary; an equality test is one integer compare per row;
- integer columns: int64; timestamp and date columns: int64 in the column's unit (dates as
  days), so ranges are two integer compares per row.

At most 8 bytes per row per column, whatever the strings' length. Nulls get a code no value
maps to (strings) or are kept in a separate mask (numbers), so they never match a condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedder.errors import InvalidInput
from index.errors import IndexInvalid

FILTERS_FILE = "filters.parquet"
Kind = Literal["string", "int", "timestamp"]
# uint16 codes leave one value for null; past that the codes are int32 (null = -1).
_UINT16_MAX_VALUES = 65_535


def column_kind(name: str, arrow_type: pa.DataType) -> Kind:
    """The filter kind of an arrow column type; refuses types a filter cannot test."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "timestamp"
    raise InvalidInput(
        f"filter column {name!r} has type {arrow_type}; filter columns must be strings, integers, "
        "timestamps or dates",
        field="filter_columns",
    )


def check_filter_columns(names: Sequence[str], schema: pa.Schema) -> dict[str, Kind]:
    """Kinds of the asked filter columns; each must be a passthrough column of the embeddings."""
    out: dict[str, Kind] = {}
    for name in names:
        if name in ("id", "embedding") or name not in schema.names:
            have = [n for n in schema.names if n not in ("id", "embedding") and not n.startswith("qm_")]
            raise InvalidInput(
                f"filter column {name!r} is not a passthrough column of the embeddings (have {have}); "
                "keep it with the embed job's --keep-columns",
                field="filter_columns",
            )
        out[name] = column_kind(name, schema.field(name).type)
    return out


@dataclass(frozen=True)
class FilterColumn:
    """One column in its compact form."""

    name: str
    kind: Kind
    values: np.ndarray  # codes (string) or int64 (int, timestamp)
    dictionary: tuple[str, ...] = ()  # string columns: code i means dictionary[i]
    unit: str = ""  # timestamp columns: numpy datetime64 unit of `values` ("s", "ms", "us", "ns", "D")
    nulls: np.ndarray | None = None  # number columns with nulls: True where null
    codes: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Resident bytes of the row arrays (the dictionary is per value, not per row)."""
        extra = 0 if self.nulls is None else self.nulls.nbytes
        return int(self.values.nbytes) + extra + sum(len(s) for s in self.dictionary)

    def describe(self) -> dict[str, object]:
        """For manifests and /v1/collections: kind, storage dtype, distinct values."""
        out: dict[str, object] = {"type": self.kind, "dtype": str(self.values.dtype)}
        if self.kind == "string":
            out["values"] = len(self.dictionary)
        if self.unit:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True)
class FilterTable:
    """Every filter column of one index version (row i = FAISS id i)."""

    rows: int
    columns: dict[str, FilterColumn]

    @property
    def nbytes(self) -> int:
        """Resident bytes of all columns."""
        return sum(c.nbytes for c in self.columns.values())

    def schema(self) -> dict[str, Kind]:
        """Column name -> kind (what a filter is validated against)."""
        return {n: c.kind for n, c in self.columns.items()}


EMPTY = FilterTable(0, {})


def write_filters(metadata: pa.Table, kinds: Mapping[str, Kind], path: Path) -> dict[str, dict[str, object]]:
    """Write the compact columns to `path`; returns the manifest description of each."""
    arrays: dict[str, pa.Array] = {}
    for name, kind in kinds.items():
        col = metadata.column(name).combine_chunks()
        if kind == "string":
            arrays[name] = pc.dictionary_encode(col.cast(pa.string()))
        elif kind == "int":
            arrays[name] = col.cast(pa.int64())
        elif pa.types.is_date(col.type):
            arrays[name] = col.cast(pa.date32())
        else:
            arrays[name] = col
    pq.write_table(pa.table(arrays), path)
    return {n: c.describe() for n, c in load_filters(path, metadata.num_rows).columns.items()}


def filter_table(table: pa.Table, kinds: Mapping[str, Kind]) -> FilterTable:
    """The compact columns of an in-memory table (jobs filter embeddings rows with it)."""
    columns = {}
    for name in kinds:
        col = table.column(name).combine_chunks()
        if kinds[name] == "string":
            col = pc.dictionary_encode(col.cast(pa.string()))
        columns[name] = _to_column(name, col)
    return FilterTable(table.num_rows, columns)


def load_filters(path: Path, rows: int) -> FilterTable:
    """Read filters.parquet into numpy arrays (codes, int64)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise IndexInvalid(f"{path} is unreadable: {exc}") from exc
    if table.num_rows != rows:
        raise IndexInvalid(f"{path}: {table.num_rows} rows, the index has {rows}")
    columns = {name: _to_column(name, table.column(name).combine_chunks()) for name in table.column_names}
    return FilterTable(rows, columns)


def _to_column(name: str, col: pa.Array) -> FilterColumn:
    if pa.types.is_dictionary(col.type):
        dictionary = tuple(col.dictionary.to_pylist())
        small = len(dictionary) < _UINT16_MAX_VALUES
        null_code = _UINT16_MAX_VALUES if small else -1
        idx = col.indices.fill_null(null_code).to_numpy(zero_copy_only=False)
        codes = idx.astype(np.uint16 if small else np.int32)
        lookup = {s: i for i, s in enumerate(dictionary)}
        return FilterColumn(name, "string", codes, dictionary, codes=lookup)
    kind = column_kind(name, col.type)
    unit = ""
    if pa.types.is_timestamp(col.type):
        unit = col.type.unit
        col = col.cast(pa.int64())
    elif pa.types.is_date(col.type):
        unit = "D"
        col = col.cast(pa.int32()).cast(pa.int64())
    nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    values = col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return FilterColumn(name, kind, values, unit=unit, nulls=nulls)
