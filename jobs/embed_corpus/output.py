"""Write one shard's embeddings and quarantine parquet files, each all-or-nothing (storage).

Uses the contract's column and metadata names from jobs.common.embeddings_io. A re-executed shard (a
retried task after a node died, or a resumed run) rewrites the same file names with the same
content, so the output never holds a row twice, on local disk or an object store.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

import storage
from jobs.common.embeddings_io import embeddings_table
from jobs.common.layout import QUARANTINE_DIR, part_name

__all__ = ["embeddings_table", "remove_temp_files", "write_shard_outputs"]

TMP_SUFFIX = ".tmp"


def write_shard_outputs(
    output: storage.Location, shard_id: str, embeddings: pa.Table | None, quarantine: pa.Table | None
) -> tuple[storage.Location | None, storage.Location | None]:
    """Quarantine first, embeddings last: the embeddings file appearing means the shard is whole."""
    q_path = e_path = None
    if quarantine is not None and quarantine.num_rows:
        q_path = storage.write_parquet(output.child(QUARANTINE_DIR, part_name(shard_id)), quarantine)
    if embeddings is not None and embeddings.num_rows:
        e_path = storage.write_parquet(output.child(part_name(shard_id)), embeddings)
    return e_path, q_path


def remove_temp_files(output: storage.Location) -> int:
    """Delete local temp files left by workers of a killed run; returns how many.

    Object stores need nothing here: an upload that was cut off never becomes an object.
    """
    if not output.is_local:
        return 0
    count = 0
    for directory in (Path(output.path), Path(output.path) / QUARANTINE_DIR):
        if directory.is_dir():
            for tmp in directory.glob(f".part-*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                count += 1
    return count
