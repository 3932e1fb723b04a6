"""Corpus checks without Ray: discovery, schema errors, shards, duplicate ids, row verdicts, run state."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from jobs.common.corpus import (
    ColumnSpec,
    CorpusError,
    attach_duplicates,
    discover_inputs,
    find_duplicate_ids,
    inspect_inputs,
    plan_shards,
    quarantine_table,
    read_shard,
    resolve_columns,
    row_ids,
    split_rows,
)
from jobs.embed_corpus.run_state import DONE_DIR, RunConflict, RunState, ShardStats


def write(path: Path, row_group_size: int | None = None, **columns: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_discovery_accepts_file_directory_and_glob(tmp_path: Path) -> None:
    a = write(tmp_path / "d" / "a.parquet", question=["x"])
    b = write(tmp_path / "d" / "sub" / "b.parquet", question=["y"])
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / ".a.parquet.crc").write_text("")

    def found(spec: Path | str) -> list[str]:
        return [f.uri for f in discover_inputs(storage.resolve(spec))]

    assert found(a) == [str(a)]
    assert found(tmp_path / "d") == [str(a), str(b)]
    assert found(str(tmp_path / "d" / "**" / "*.parquet")) == [str(a), str(b)]
    with pytest.raises(CorpusError, match="no input files"):
        found(tmp_path / "nothing-*.parquet")


def test_wrong_inputs_fail_with_the_reason(tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("question\nhello\n")
    with pytest.raises(CorpusError, match="not a parquet file"):
        inspect_inputs([csv], ColumnSpec("question", None))
    f = write(tmp_path / "q.parquet", text=["hello"], id=[1.5])
    with pytest.raises(CorpusError, match=r"no column.*'question'"):
        inspect_inputs([f], ColumnSpec("question", None))
    with pytest.raises(CorpusError, match="must be an integer or string"):
        inspect_inputs([f], ColumnSpec("text", "id"))
    with pytest.raises(CorpusError, match=r"no column.*'answer'"):
        inspect_inputs([f], ColumnSpec("text", None, ("answer",)))


def test_id_column_defaults_to_id_when_present(tmp_path: Path) -> None:
    with_id = write(tmp_path / "a.parquet", question=["q"], id=[7])
    without = write(tmp_path / "b.parquet", question=["q"])
    assert resolve_columns(with_id, "question", None, ["answer"]).id == "id"
    assert resolve_columns(without, "question", None, []).id is None
    assert resolve_columns(with_id, "question", "qid", []).id == "qid"


def test_shards_cover_every_row_once_on_row_group_boundaries(tmp_path: Path) -> None:
    f1 = write(tmp_path / "a.parquet", row_group_size=100, question=[f"q{i}" for i in range(1050)])
    f2 = write(tmp_path / "b.parquet", row_group_size=5000, question=[f"r{i}" for i in range(2500)])
    inputs = inspect_inputs([f1, f2], ColumnSpec("question", None))
    shards = plan_shards(inputs, 300)
    assert shards == plan_shards(inputs, 300)  # deterministic: resume depends on it
    assert len({s.shard_id for s in shards}) == len(shards)
    for path, rows in ((str(f1.resolve()), 1050), (str(f2.resolve()), 2500)):
        mine = [s for s in shards if s.file == path]
        assert mine[0].start == 0 and mine[-1].stop == rows
        assert all(a.stop == b.start for a, b in itertools.pairwise(mine))
    assert all(s.start % 100 == 0 for s in shards if s.file == str(f1.resolve()))
    assert max(s.rows for s in shards) <= 400 and min(s.rows for s in shards) >= 50
    # Global row numbers run on across files, and reading a shard gives exactly its rows.
    last = shards[-1]
    assert last.first_row + last.rows == 3550
    crossing = next(s for s in shards if s.file == str(f2.resolve()) and s.start > 0)
    got = read_shard(crossing, ["question"]).column(0).to_pylist()
    assert got == [f"r{i}" for i in range(crossing.start, crossing.stop)]


def test_duplicate_ids_keep_the_first_occurrence_across_files(tmp_path: Path) -> None:
    f1 = write(tmp_path / "a.parquet", question=list("abcd"), id=["x", "y", "x", None])
    f2 = write(tmp_path / "b.parquet", question=list("efg"), id=["z", "y", None])
    inputs = inspect_inputs([f1, f2], ColumnSpec("question", "id"))
    positions, first = find_duplicate_ids(inputs, "id")
    # Nulls are not duplicates of each other (they are quarantined as null ids instead).
    assert dict(zip(positions.tolist(), first.tolist(), strict=True)) == {2: 0, 5: 1}
    shards = attach_duplicates(plan_shards(inputs, 256), positions, first)
    assert [s.duplicate_offsets for s in shards] == [(2,), (1,)]


def test_row_verdicts_name_each_reason_and_keep_the_original_row(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.parquet",
        question=["fine", None, "", "  \t", "also fine", "dup text", "third"],
        id=[1, 2, 3, 4, None, 1, 9],
        reason=["r"] * 7,  # the input's own 'reason' column must survive in quarantine
    )
    cols = ColumnSpec("question", "id")
    inputs = inspect_inputs([f], cols)
    positions, first = find_duplicate_ids(inputs, "id")
    (shard,) = attach_duplicates(plan_shards(inputs, 256), positions, first)
    table = read_shard(shard)
    split = split_rows(table, shard, cols)
    assert split.good.tolist() == [0, 6]
    assert dict(zip(split.bad.tolist(), split.reasons, strict=True)) == {
        1: "null text",
        2: "empty or whitespace-only text",
        3: "empty or whitespace-only text",
        4: "null id",
        5: "duplicate id (first seen at input row 0)",
    }
    q = quarantine_table(table, split.bad, split.reasons)
    assert q.column_names == ["question", "id", "input_reason", "reason"]
    assert q.column("id").to_pylist() == [2, 3, 4, None, 1]
    assert row_ids(table, shard, cols, split.good).to_pylist() == [1, 9]


def test_text_column_of_another_type_is_refused_before_any_work(tmp_path: Path) -> None:
    """A binary or numeric text column would quarantine every row after a full run: refuse it up front."""
    for name, values in (("ints", [1, 2, None]), ("bytes", [b"how do I reset", b"x", None])):
        f = write(tmp_path / f"{name}.parquet", question=values)
        with pytest.raises(CorpusError, match=rf"{name}.parquet: text column 'question' must be a string"):
            inspect_inputs([str(f)], ColumnSpec("question", None))


def test_null_text_is_quarantined_not_fatal(tmp_path: Path) -> None:
    f = write(tmp_path / "a.parquet", question=["ok", None, " "])
    cols = ColumnSpec("question", None)
    (shard,) = plan_shards(inspect_inputs([str(f)], cols), 256)
    split = split_rows(read_shard(shard), shard, cols)
    assert split.good.tolist() == [0]
    assert split.reasons == ["null text", "empty or whitespace-only text"]


def test_generated_ids_are_global_row_positions(tmp_path: Path) -> None:
    f1 = write(tmp_path / "a.parquet", question=["a", "b"])
    f2 = write(tmp_path / "b.parquet", question=["c", "d", "e"])
    cols = ColumnSpec("question", None)
    shards = plan_shards(inspect_inputs([f1, f2], cols), 256)
    ids = [row_ids(read_shard(s), s, cols, np.arange(s.rows)).to_pylist() for s in shards]
    assert ids == [[0, 1], [2, 3, 4]]


def run_record(fingerprint: str) -> dict[str, object]:
    return {
        "artifact": "/a",
        "fingerprint": fingerprint,
        "inputs": [["/x.parquet", 10, 1, 5]],
        "text_column": "question",
        "id_column": None,
        "keep_columns": [],
        "too_long": "truncate",
        "shards": [
            {"shard_id": "00000-0000000000", "file": "/x.parquet", "start": 0, "stop": 3, "first_row": 0},
            {"shard_id": "00000-0000000003", "file": "/x.parquet", "start": 3, "stop": 5, "first_row": 3},
        ],
    }


def test_run_state_resumes_and_refuses_other_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    state = RunState.open(storage.resolve(out), run_record("sha256:aaaa"))
    assert [s.shard_id for s in state.pending] == ["00000-0000000000", "00000-0000000003"]
    state.record(ShardStats("00000-0000000000", 3, 3, 0, 0, 30))
    # A damaged marker (written by something other than our all-or-nothing write) is ignored:
    # that shard runs again instead of being trusted.
    (out / DONE_DIR / "00000-0000000003.json").write_text('{"shard_id": "00000-00000')
    again = RunState.open(storage.resolve(out), run_record("sha256:aaaa"))
    assert [s.shard_id for s in again.pending] == ["00000-0000000003"]
    again.record(ShardStats("00000-0000000003", 2, 2, 0, 0, 20))
    assert RunState.open(storage.resolve(out), run_record("sha256:aaaa")).pending == []
    with pytest.raises(RunConflict, match=r"made with artifact /a .*sha256:aaaa.*sha256:bbbb"):
        RunState.open(storage.resolve(out), run_record("sha256:bbbb"))
    other = run_record("sha256:aaaa") | {"text_column": "answer"}
    with pytest.raises(RunConflict, match="different text_column"):
        RunState.open(storage.resolve(out), other)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(RunConflict, match="not empty"):
        RunState.open(storage.resolve(stray), run_record("sha256:aaaa"))
    assert json.loads((out / "_RUN.json").read_text())["fingerprint"] == "sha256:aaaa"
