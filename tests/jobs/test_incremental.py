"""Incremental embedding (--previous): unchanged texts reuse the earlier run's vectors, the output is
still a complete run of the current input, and every unusable previous run is refused up front.

Real Ray (local, 2 CPUs), the tiny model, real parquet; one run on s3:// against a moto server.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from jobs.common.embeddings_io import TEXT_HASH, inspect_embeddings
from jobs.embed_corpus.cli import main
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from jobs.embed_corpus.run_state import Lease, RunConflict
from testkit.s3_server import S3Server

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"
ROWS = 500
BUCKET = S3_BUCKET = "qm-incremental"  # S3_BUCKET: the conftest `s3` fixture's bucket

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray(s3: S3Server, local_ray: str) -> str:
    """The conftest's local Ray, started after the S3 variables are set, so its workers inherit them."""
    return local_ray


def day_one() -> pa.Table:
    return pq.read_table(SAMPLE, columns=["id", "question", "answer"]).slice(0, ROWS)


def day_two(first: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """The next day's corpus: 1% of texts edited, every 37th row deleted, 20 rows added (one blank)."""
    rows = first.to_pylist()
    deleted = {r["id"] for i, r in enumerate(rows) if i % 37 == 5}
    kept = [r for r in rows if r["id"] not in deleted]
    changed = set()
    for r in kept[3 :: len(kept) // 5][:5]:  # 5 of 500 = 1%
        r["question"] += " (edited)"
        changed.add(r["id"])
    extra = pq.read_table(SAMPLE, columns=["id", "question", "answer"]).slice(ROWS, 20).to_pylist()
    extra[7]["question"] = "   "  # quarantined in every run
    table = pa.Table.from_pylist(kept + extra, schema=first.schema)
    return table, {
        "deleted": deleted,
        "changed": changed,
        "added": {r["id"] for r in extra} - {extra[7]["id"]},
    }


def write_corpus(directory: Path | str, table: pa.Table) -> None:
    """Two files, small row groups (shards cut across them)."""
    half = table.num_rows // 2
    storage.write_parquet(f"{directory}/a.parquet", table.slice(0, half), row_group_size=50)
    storage.write_parquet(f"{directory}/b.parquet", table.slice(half), row_group_size=50)


def read_output(out: Path | str) -> dict[Any, tuple[np.ndarray, dict[str, Any]]]:
    """id -> (vector, the other columns) over every part file."""
    info = inspect_embeddings(str(out))
    got: dict[Any, tuple[np.ndarray, dict[str, Any]]] = {}
    for f in info.files:
        t = storage.read_parquet(f)
        vectors = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
        for vec, row in zip(vectors, t.drop_columns(["embedding"]).to_pylist(), strict=True):
            assert row["id"] not in got
            got[row.pop("id")] = (vec, row)
    return got


def config(artifact: Path, inp: Path | str, out: Path | str, **kw: Any) -> JobConfig:
    return JobConfig(
        artifact=str(artifact),
        input=str(inp),
        output=str(out),
        keep_columns=("answer",),
        shard_rows=100,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def runs(local_ray: None, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Day one (full), day two incremental against it, and day two full: the reference."""
    base = tmp_path_factory.mktemp("incremental")
    first = day_one()
    second, edits = day_two(first)
    write_corpus(base / "in1", first)
    write_corpus(base / "in2", second)
    s1 = run(config(tiny_artifact, base / "in1", base / "day1"))
    s2 = run(config(tiny_artifact, base / "in2", base / "day2", previous=str(base / "day1")))
    full = run(config(tiny_artifact, base / "in2", base / "day2-full"))
    return {"base": base, "first": first, "second": second, "edits": edits, "s1": s1, "s2": s2, "full": full}


def test_incremental_run_reuses_unchanged_rows_and_equals_a_full_run(runs: dict[str, Any]) -> None:
    base, edits, s2, full = runs["base"], runs["edits"], runs["s2"], runs["full"]
    first, second = runs["first"].to_pylist(), runs["second"].to_pylist()
    day1, day2, reference = (
        read_output(base / "day1"),
        read_output(base / "day2"),
        read_output(base / "day2-full"),
    )

    # The reuse key is the exact text: a row is reused when its text was embedded on day one. The
    # sample repeats a few questions, so one of the added rows is such a row although its id is new.
    old_texts = {r["question"] for r in first}
    good = [r for r in second if r["question"].strip()]
    repeats = [r for r in good if r["id"] in edits["added"] and r["question"] in old_texts]
    assert len(repeats) == 1
    expected_reused = len(good) - len(edits["changed"]) - len(edits["added"]) + len(repeats)
    assert sum(r["question"] in old_texts for r in good) == expected_reused
    assert s2["rows_reused"] == expected_reused
    assert s2["rows_embedded_new"] == len(edits["changed"]) + len(edits["added"]) - len(repeats) == 23
    assert s2["rows_embedded"] == full["rows_embedded"] == len(good)
    assert (s2["rows_removed"], s2["rows_changed"], s2["rows_added"]) == (
        len(edits["deleted"]),
        len(edits["changed"]),
        len(edits["added"]),  # ids of the output; the blank row was quarantined
    )
    assert s2["previous"] == str(base / "day1") and s2["previous_rows"] == len(first)
    # Counts a full run makes are the same (reused rows are still tokenized).
    for key in ("rows_read", "rows_quarantined", "rows_truncated", "tokens"):
        assert s2[key] == full[key], key
    assert json.loads((base / "day2" / "_SUMMARY.json").read_text())["rows_reused"] == expected_reused

    # Removed ids are gone; the output holds exactly the current input's good rows.
    assert set(day2) == set(reference) == {r["id"] for r in good}
    assert not set(day2) & edits["deleted"]
    # Every vector is what a full run gives; reused ones are the day-one vectors, bit for bit.
    worst = max(float(np.abs(day2[i][0] - reference[i][0]).max()) for i in day2)
    assert worst < 1e-6
    # (a text's vector is copied from its first row on day one)
    first_vector: dict[str, np.ndarray] = {}
    text_of = {r["id"]: r["question"] for r in first}
    for i, (vec, _) in day1.items():
        first_vector.setdefault(text_of[i], vec)
    reused = [r for r in good if r["question"] in first_vector]
    assert len(reused) == expected_reused
    for r in reused:
        np.testing.assert_array_equal(day2[r["id"]][0], first_vector[r["question"]])
    for i in edits["changed"]:
        assert np.abs(day2[i][0] - day1[i][0]).max() > 1e-3  # re-embedded from the new text
    assert {i: row for i, (_, row) in day2.items()} == {i: row for i, (_, row) in reference.items()}
    quarantine = pq.read_table(base / "day2" / "quarantine").column("reason").to_pylist()
    assert quarantine == ["empty or whitespace-only text"]

    # Same contract as a full run: build_index sees id, embedding and the passthrough column only.
    info = inspect_embeddings(str(base / "day2"))
    assert info.passthrough == ("answer",) and info.text_hash and info.count == len(good)


def test_an_interrupted_incremental_run_resumes_and_refuses_another_previous(
    runs: dict[str, Any], tiny_artifact: Path
) -> None:
    base = runs["base"]
    out = base / "day2-resume"
    shutil.copytree(base / "day2", out)
    before = read_output(out)
    # As if the driver died after committing all but two shards.
    (out / "_SUMMARY.json").unlink()
    done = sorted((out / "_done").glob("*.json"))
    for marker in done[:2]:
        marker.unlink()
        (out / f"part-{marker.stem}.parquet").unlink(missing_ok=True)
    cfg = config(tiny_artifact, base / "in2", out, previous=str(base / "day1"))

    with pytest.raises(RunConflict, match="different previous"):
        run(config(tiny_artifact, base / "in2", out, previous=str(base / "day2-full")))
    with pytest.raises(RunConflict, match="different previous"):
        run(config(tiny_artifact, base / "in2", out))  # a full run cannot finish an incremental one

    summary = run(cfg)
    assert summary["resumed"] and summary["shards_this_run"] == 2
    assert summary["rows_reused"] == runs["s2"]["rows_reused"]
    assert summary["rows_removed"] == runs["s2"]["rows_removed"]
    after = read_output(out)
    assert set(after) == set(before)
    for i in after:
        np.testing.assert_array_equal(after[i][0], before[i][0])


def test_unusable_previous_runs_are_refused_before_any_work(
    runs: dict[str, Any],
    tiny_artifact: Path,
    other_artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = runs["base"]
    small = tmp_path / "small"
    write_corpus(small, runs["first"].slice(0, 40))
    other = tmp_path / "other-model"
    run(config(other_artifact, small, other))
    capsys.readouterr()  # drop what that run's Ray Data logging wrote; the refusals below must be silent

    def refused(previous: Path | str, inp: Path = base / "in2") -> str:
        out = tmp_path / "never"
        args = ["--artifact", str(tiny_artifact), "--input", str(inp), "--output", str(out)]
        code = main([*args, "--previous", str(previous), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert not out.exists()  # nothing written: not even the run state or a lease
        return err

    assert "another model are never reused" in refused(other)
    assert "not an output of jobs.embed_corpus" in refused(tmp_path / "nowhere")

    # In progress: a live lease (this process), then unfinished shards.
    busy = tmp_path / "busy"
    shutil.copytree(base / "day1", busy)
    lease = Lease(storage.resolve(str(busy)))
    lease.acquire()
    try:
        assert "still being written" in refused(busy)
    finally:
        lease.release()
    (busy / "_SUMMARY.json").unlink()
    next((busy / "_done").glob("*.json")).unlink()
    assert "is not complete" in refused(busy)

    # Unreadable: a part file whose data was cut short.
    broken = tmp_path / "broken"
    shutil.copytree(base / "day1", broken)
    part = sorted(broken.glob("part-*.parquet"))[1]
    part.write_bytes(part.read_bytes()[:100])
    assert "unreadable" in refused(broken)

    # Ids were ints on day one, strings now.
    string_ids = tmp_path / "string-ids"
    t = runs["second"]
    write_corpus(string_ids, t.set_column(0, "id", pa.array([f"q{i}" for i in t.column("id").to_pylist()])))
    assert "int64 ids, this input gives string ids" in refused(base / "day1", inp=string_ids)
    # Same type, other meaning: no id column now, so ids would be row positions.
    positions = tmp_path / "positions"
    write_corpus(positions, t.drop_columns(["id"]))
    assert "took its ids from column 'id', this run from row positions" in refused(
        base / "day1", inp=positions
    )

    # A previous run without reuse keys (another writer) is named as such.
    keyless = tmp_path / "keyless"
    shutil.copytree(base / "day1", keyless)
    for p in keyless.glob("part-*.parquet"):
        pq.write_table(pq.read_table(p).drop_columns([TEXT_HASH]), p)
    assert f"no {TEXT_HASH} column" in refused(keyless)


def test_incremental_run_on_s3(runs: dict[str, Any], s3: S3Server, tiny_artifact: Path) -> None:
    root = f"s3://{BUCKET}"
    write_corpus(f"{root}/in1", runs["first"])
    write_corpus(f"{root}/in2", runs["second"])
    run(config(tiny_artifact, f"{root}/in1", f"{root}/day1"))
    summary = run(config(tiny_artifact, f"{root}/in2", f"{root}/day2", previous=f"{root}/day1"))
    local = runs["s2"]
    for key in ("rows_reused", "rows_embedded_new", "rows_removed", "rows_changed", "rows_added"):
        assert summary[key] == local[key], key
    remote, reference = read_output(f"{root}/day2"), read_output(runs["base"] / "day2")
    assert set(remote) == set(reference)
    assert max(float(np.abs(remote[i][0] - reference[i][0]).max()) for i in remote) < 1e-6
    assert storage.read_json(f"{root}/day2/_SUMMARY.json")["previous"] == f"{root}/day1"
    assert not storage.is_file(f"{root}/day2/_LEASE.json") and not storage.is_file(f"{root}/day1/_LEASE.json")
    # The new output is self-contained: with day one deleted, rerunning day two is a no-op that says so.
    storage.delete_dir(f"{root}/day1")
    again = run(config(tiny_artifact, f"{root}/in2", f"{root}/day2", previous=f"{root}/day1"))
    assert again["already_complete"] and again["rows_reused"] == summary["rows_reused"]
