"""The names of what the jobs write: one place for the output layout docs/contracts.md describes.

An embed run's output directory (local or a bucket prefix):

    part-<shard>.parquet        embeddings, one file per shard with embedded rows
    quarantine/part-<shard>.parquet   rows refused, with the reason
    _RUN.json                   the run's identity and shard plan (a rerun resumes or refuses)
    _done/<shard>.json          one marker per finished shard (ShardStats)
    _LEASE.json                 the live run's lease
    _SUMMARY.json               written last: the run is complete

find_duplicates writes pairs.parquet, groups.parquet and, last, _SUMMARY.json.
"""

from __future__ import annotations

SUMMARY_FILE = "_SUMMARY.json"
RUN_FILE = "_RUN.json"
LEASE_FILE = "_LEASE.json"
DONE_DIR = "_done"
QUARANTINE_DIR = "quarantine"
PART_GLOB = "part-*.parquet"
PAIRS_FILE = "pairs.parquet"
GROUPS_FILE = "groups.parquet"


def part_name(shard_id: str) -> str:
    """File name of a shard's output, the same in the output and quarantine directories."""
    return f"part-{shard_id}.parquet"


def is_part_file(name: str) -> bool:
    """Whether a file name (no directory) is an embeddings part file."""
    return name.startswith("part-") and name.endswith(".parquet")
