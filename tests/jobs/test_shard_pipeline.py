"""The actors' shard pipeline without Ray: overlapping read / model / write changes nothing in the output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from jobs.common.corpus import Shard, inspect_inputs, plan_shards, resolve_columns
from jobs.embed_corpus.run_state import ShardStats
from jobs.embed_corpus.udfs import EmbedShards, Outcome, ShardTask, process_shards, shard_to_json

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"
TIMINGS = {"seconds", "tokenize_seconds", "encode_seconds", "reuse_seconds"}


@pytest.fixture(scope="module")
def encoder(tiny_artifact: Path) -> Encoder:
    return Encoder.load(tiny_artifact, threads=1)


def make_corpus(directory: Path) -> list[Path]:
    """Three files of 120 rows with a null, a blank and a long text planted; 40-row row groups."""
    t = pq.read_table(SAMPLE).slice(0, 360)
    q = t.column("question").to_pylist()
    q[5], q[130], q[250] = None, "  ", "how do i reset my password " * 20
    t = t.set_column(t.schema.get_field_index("question"), "question", pa.array(q, pa.string()))
    directory.mkdir(parents=True)
    files = []
    for i in range(3):
        path = directory / f"part-{i}.parquet"
        pq.write_table(t.slice(120 * i, 120), path, row_group_size=40)
        files.append(path)
    return files


def shards_of(files: list[Path], task_out: Path) -> tuple[list[Shard], ShardTask]:
    columns = resolve_columns(str(files[0]), "question", None, ("answer",))
    shards = plan_shards(inspect_inputs([str(f) for f in files], columns), 40)
    return shards, ShardTask(output=str(task_out), columns=columns, too_long="quarantine")


def all_stats(outcomes: list[Outcome]) -> list[ShardStats]:
    assert all(isinstance(o, ShardStats) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, ShardStats)]


def without_timings(stats: ShardStats) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(stats).items() if k not in TIMINGS}


def files_under(out: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(out)): pq.read_table(p) for p in sorted(out.rglob("*.parquet"))}


def test_pipelined_shards_write_exactly_what_sequential_shards_write(
    encoder: Encoder, tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "in")
    shards, task = shards_of(files, tmp_path / "seq")
    assert len(shards) == 9
    sequential = all_stats(process_shards(encoder, shards, task, pipelined=False))
    piped_task = dataclasses.replace(task, output=str(tmp_path / "piped"))
    pipelined = all_stats(process_shards(encoder, shards, piped_task, pipelined=True))

    assert [without_timings(s) for s in pipelined] == [without_timings(s) for s in sequential]
    seq_files, piped_files = files_under(tmp_path / "seq"), files_under(tmp_path / "piped")
    assert seq_files.keys() == piped_files.keys()
    assert len([k for k in seq_files if k.startswith("part-")]) == 9
    for name, table in seq_files.items():
        assert piped_files[name].equals(table), name  # same rows, ids, vectors (bit for bit), reasons
    # Every row of the input is either embedded or quarantined, once.
    embedded = sum(s.rows_embedded for s in pipelined)
    quarantined = sum(s.rows_quarantined for s in pipelined)
    assert embedded + quarantined == 360 and quarantined >= 3 and embedded > 300
    assert all(s.encode_seconds > 0 and s.seconds >= s.encode_seconds for s in pipelined)  # timings kept


def test_an_unreadable_shard_in_the_middle_fails_alone(encoder: Encoder, tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "in")
    shards, task = shards_of(files, tmp_path / "out")
    files[1].write_text("not parquet any more")  # shards 3..5 planned, now unreadable

    outcomes = process_shards(encoder, shards, task, pipelined=True)

    failed = [i for i, o in enumerate(outcomes) if not isinstance(o, ShardStats)]
    assert failed == [3, 4, 5]
    assert all(str(files[1]) in str(outcomes[i]) for i in failed)  # the message names the file
    written = {p.name for p in (tmp_path / "out").glob("part-*.parquet")}
    assert written == {f"part-{shards[i].shard_id}.parquet" for i in (0, 1, 2, 6, 7, 8)}


def test_the_udf_reports_a_failed_shard_as_data_and_finishes_the_others(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "in")
    shards, task = shards_of(files, tmp_path / "out")
    files[2].unlink()  # the last three shards' file vanished after planning
    udf = EmbedShards(str(tiny_artifact), Encoder.load(tiny_artifact).fingerprint, task, threads=1)

    result = udf({"spec": np.array([shard_to_json(s) for s in shards[4:8]], dtype=object)})

    assert list(result["shard_id"]) == [s.shard_id for s in shards[4:8]]
    errors = list(result["error"])
    assert errors[:2] == ["", ""] and all(errors[2:])
    done = result["rows_embedded"][:2] + result["rows_quarantined"][:2]
    assert list(done) == [40, 40] and list(result["rows_embedded"][2:]) == [0, 0]
    assert "part-2.parquet" in errors[2]  # the one-line reason names the missing file
