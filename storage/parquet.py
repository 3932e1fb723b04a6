"""Parquet files at a location: written all-or-nothing, read with errors that name the file."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.files import write_bytes
from storage.location import Location, resolve
from storage.retry import errors_named, retry


def write_parquet(spec: str | os.PathLike[str] | Location, table: pa.Table, **options: Any) -> Location:
    """Write a parquet file all-or-nothing (encoded in memory, then one write); options go to write_table."""
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return write_bytes(spec, sink.getvalue())


def parquet_file(spec: str | os.PathLike[str] | Location) -> pq.ParquetFile:
    """An open ParquetFile (footer read); StorageError naming the file when it is not readable parquet."""
    loc = resolve(spec)
    with errors_named(loc, "read parquet file"):
        handle = retry(lambda: loc.fs.open_input_file(loc.path), loc.uri)
        return pq.ParquetFile(handle)


def read_parquet(spec: str | os.PathLike[str] | Location, columns: Sequence[str] | None = None) -> pa.Table:
    """A whole parquet file (or only `columns`)."""
    pf = parquet_file(spec)
    with errors_named(spec if isinstance(spec, Location) else str(spec), "read parquet data from"):
        return pf.read(columns=list(columns) if columns is not None else None)
