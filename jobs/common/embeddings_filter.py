"""`--filter` for the jobs that read embeddings (find_duplicates, threshold): the /match filter
language (index/filters.py) evaluated on the embeddings' passthrough columns.

    python -m jobs.find_duplicates ... --filter '{"category": "billing"}'
    python -m jobs.threshold --embeddings E --pairs P --filter '{"language": {"in": ["de", "en"]}}'

Any passthrough column of a filterable type (string, integer, timestamp, date) may be tested;
the index's --filter-columns are not needed here, the embeddings carry the values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import storage
from embedder.errors import InvalidInput
from index.filter_columns import Kind, column_kind, filter_table
from index.filters import Filter, evaluate, parse_filter
from jobs.common.embeddings_io import (
    EmbeddingsInfo,
    inspect_embeddings,
    read_embeddings,
    write_embeddings_parquet,
)
from jobs.common.layout import part_name
from settings.loader import FieldValueError


def parse_cli_filter(text: str | None) -> dict[str, Any] | None:
    """The --filter argument: a JSON object (None when not given)."""
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--filter is not valid JSON: {exc}", field="filter") from None
    if not isinstance(spec, dict):
        raise InvalidInput('--filter must be a JSON object, e.g. \'{"category": "billing"}\'', field="filter")
    return spec


def parse_filter_setting(cfg: Any) -> None:
    """For a job config's __post_init__: its `filter` given as JSON text (flag or environment)
    becomes the spec dict once, or a FieldValueError naming the setting."""
    if isinstance(cfg.filter, str):
        try:
            object.__setattr__(cfg, "filter", parse_cli_filter(cfg.filter))
        except InvalidInput as exc:
            raise FieldValueError(type(cfg).__name__, "filter", cfg.filter, str(exc)) from None


def embeddings_filter(info: EmbeddingsInfo, spec: dict[str, Any]) -> tuple[Filter, dict[str, Kind]]:
    """Validate a filter against the embeddings' passthrough columns (InvalidInput names the field)."""
    if not info.files:
        raise InvalidInput("the embeddings hold no files to filter", field="filter")
    schema = storage.parquet_file(info.files[0]).schema_arrow
    kinds: dict[str, Kind] = {}
    for name in info.passthrough:
        try:
            kinds[name] = column_kind(name, schema.field(name).type)
        except InvalidInput:
            continue  # not filterable (e.g. a list column): only an error if the filter names it
    flt = parse_filter(spec, kinds)
    return flt, {name: kinds[name] for name in flt.columns}


def row_mask(info: EmbeddingsInfo, spec: dict[str, Any]) -> np.ndarray:
    """Boolean mask over the embeddings' rows (global row order) of the rows the filter selects."""
    flt, kinds = embeddings_filter(info, spec)
    parts = [
        evaluate(flt, filter_table(batch.table, kinds))
        for batch in read_embeddings(info, columns=list(kinds), vectors=False)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def write_filtered(embeddings: str, spec: dict[str, Any], out: Path) -> tuple[str, int, int]:
    """A copy of the embeddings holding only the selected rows; (directory, selected, total rows)."""
    info = inspect_embeddings(embeddings)
    flt, kinds = embeddings_filter(info, spec)
    selected = 0
    for i in range(len(info.files)):
        ids: list[pa.Array] = []
        vectors: list[np.ndarray] = []
        tables: list[pa.Table] = []
        for batch in read_embeddings(info, files=[i]):
            assert batch.vectors is not None
            mask = evaluate(flt, filter_table(batch.table, kinds))
            if mask.any():
                kept = batch.table.filter(pa.array(mask))
                tables.append(kept)
                vectors.append(batch.vectors[mask])
                ids.append(kept.column("id"))
        if not tables:
            continue
        table = pa.concat_tables(tables)
        columns = {name: table.column(name).to_pylist() for name in info.passthrough}
        write_embeddings_parquet(
            out / part_name(f"{i:05d}"),
            table.column("id").to_pylist(),
            np.concatenate(vectors),
            columns,
            fingerprint=info.fingerprint,
            normalized=info.normalized,
        )
        selected += table.num_rows
    if selected == 0:
        raise InvalidInput(f"the filter {json.dumps(spec)} selects no rows of {embeddings}", field="filter")
    return str(out), selected, info.count
