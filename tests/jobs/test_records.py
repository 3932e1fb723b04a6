"""Shards and shard stats survive their trips through JSON markers and Ray Data rows as plain Python values."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from jobs.common.corpus import Shard
from jobs.common.records import from_record
from jobs.embed_corpus.run_state import ShardStats


def test_a_shard_comes_back_from_json_equal_with_tuples() -> None:
    shard = Shard("f-0", "s3://b/f.parquet", 0, 10, 20, duplicate_offsets=(3, 7), duplicate_first=(1, 2))
    back = from_record(Shard, json.loads(json.dumps(dataclasses.asdict(shard))))
    assert back == shard and isinstance(back.duplicate_offsets, tuple)


def test_a_result_row_of_numpy_scalars_becomes_plain_values_and_old_markers_read_defaults() -> None:
    row = {
        "shard_id": np.str_("f-0"),
        "rows_read": np.int64(5),
        "rows_embedded": np.int64(4),
        "rows_quarantined": np.int64(1),
        "rows_truncated": np.int64(0),
        "tokens": np.int64(77),
        "seconds": np.float32(0.5),
        "error": None,  # a column the stats do not hold
    }
    stats = from_record(ShardStats, row)
    assert (stats.rows_read, stats.tokens, stats.seconds, stats.runtime) == (5, 77, 0.5, "")
    plain = dataclasses.asdict(stats)
    assert all(type(v) in (str, int, float) for v in plain.values()), plain
    json.dumps(plain)  # what the marker writer does: numpy scalars would not serialise
