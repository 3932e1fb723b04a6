"""The embed job end to end on a local Ray with the tiny model: rows, reasons, vectors, layout, reruns."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from embedder.corpus import ColumnSpec
from jobs.embed_corpus import JobConfig, main, map_batches_kwargs, prepare, run
from jobs.embeddings_io import FINGERPRINT_KEY, inspect_embeddings, read_embeddings
from jobs.udfs import ShardTask

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A 2-CPU local Ray for this module (run inside loopback-only on the shared machine)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
    yield
    ray.shutdown()


def corpus_with_bad_rows(directory: Path) -> dict[int, str]:
    """Two files (400 rows) from the sample with bad rows planted; returns {id: expected reason}."""
    t = pq.read_table(SAMPLE).slice(0, 400)
    q, ids = t.column("question").to_pylist(), t.column("id").to_pylist()
    q[3], q[57], q[120] = None, "", " \t\n"
    ids[300] = ids[10]  # the second file repeats an id of the first
    ids[200] = None
    t = t.set_column(0, "id", pa.array(ids, pa.int64())).set_column(1, "question", pa.array(q, pa.string()))
    directory.mkdir(parents=True)
    pq.write_table(t.slice(0, 250), directory / "a.parquet", row_group_size=50)
    pq.write_table(t.slice(250), directory / "b.parquet", row_group_size=50)
    return {3: "null text", 57: "empty or whitespace-only text", 120: "empty or whitespace-only text"}


def read_output(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


@pytest.mark.ray
@pytest.mark.slow
def test_job_embeds_good_rows_once_quarantines_bad_ones_and_matches_encoder(
    local_ray: None, tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = corpus_with_bad_rows(tmp_path / "in")
    out = tmp_path / "out"
    cfg = JobConfig(
        artifact=str(tiny_artifact),
        input=str(tmp_path / "in"),
        output=str(out),
        keep_columns=("answer", "category"),
        shard_rows=64,
        progress=False,
    )
    summary = run(cfg)

    source = pq.read_table(tmp_path / "in")
    by_position = source.to_pylist()
    good_positions = [i for i, r in enumerate(by_position) if i not in reasons and i not in (200, 300)]
    got = read_output(out)
    # Every good row exactly once, in input order within each file, passthrough columns kept with their id.
    assert got.column("id").to_pylist() == [by_position[i]["id"] for i in good_positions]
    assert got.column("answer").to_pylist() == [by_position[i]["answer"] for i in good_positions]
    assert got.column("category").to_pylist() == [by_position[i]["category"] for i in good_positions]
    assert got.schema.field("embedding").type == pa.list_(pa.float32(), 32)

    enc = Encoder.load(tiny_artifact, threads=1)
    expected = enc.encode_detailed([by_position[i]["question"] for i in good_positions])
    vectors = np.stack(got.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(vectors - expected.vectors).max() < 1e-5

    quarantine = pa.concat_tables(pq.read_table(p) for p in sorted((out / "quarantine").glob("*.parquet")))
    questions, why = quarantine.column("question").to_pylist(), quarantine.column("reason").to_pylist()
    got_reasons = dict(zip(questions, why, strict=True))
    assert len(quarantine) == 5
    assert sorted(quarantine.column("reason").to_pylist()) == sorted(
        [*reasons.values(), "null id", "duplicate id (first seen at input row 10)"]
    )
    assert got_reasons[by_position[300]["question"]].startswith("duplicate id")
    assert set(quarantine.column_names) == {*source.column_names, "reason"}  # the original row, whole

    on_disk = json.loads((out / "_SUMMARY.json").read_text())
    assert on_disk["rows_read"] == 400 and on_disk["rows_embedded"] == len(good_positions)
    assert on_disk["rows_quarantined"] == 5
    assert on_disk["rows_truncated"] == int(expected.truncated.sum()) > 0
    assert on_disk["tokens"] == int(np.minimum(expected.token_counts, enc.max_seq_length).sum())
    assert on_disk["fingerprint"] == enc.fingerprint == summary["fingerprint"]
    # The index builder's reader accepts the output as is.
    info = inspect_embeddings(out)
    assert info.count == len(good_positions) and info.fingerprint == enc.fingerprint
    assert info.passthrough == ("answer", "category") and info.dimension == 32
    first = next(read_embeddings(info))
    assert pq.read_schema(info.files[0]).metadata[FINGERPRINT_KEY] == enc.fingerprint.encode()
    assert first.vectors is not None and first.vectors.dtype == np.float32

    # Rerunning a finished job is a no-op that says so.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    args = ["--artifact", cfg.artifact, "--input", cfg.input, "--output", cfg.output]
    args += ["--keep-columns", "answer,category", "--shard-rows", "64", "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("nothing to do:")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


@pytest.mark.ray
@pytest.mark.slow
def test_too_long_null_and_blank_rows_go_to_quarantine(
    local_ray: None, tiny_artifact: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    long_text = "how do i reset my password " * 20
    pq.write_table(pa.table({"question": ["what is the capital of france", long_text]}), src / "a.parquet")
    pq.write_table(pa.table({"question": pa.array([None, "  "], pa.string())}), src / "b.parquet")
    out = tmp_path / "out"
    summary = run(JobConfig(str(tiny_artifact), str(src), str(out), too_long="quarantine", progress=False))
    assert (summary["rows_read"], summary["rows_embedded"], summary["rows_quarantined"]) == (4, 1, 3)
    assert summary["rows_truncated"] == 0
    got = read_output(out)
    assert got.column("id").to_pylist() == [0]  # no id column: ids are global row positions
    quarantine = pa.concat_tables(
        pq.read_table(p).select(["reason"]) for p in sorted((out / "quarantine").glob("*.parquet"))
    )
    reasons = quarantine.column("reason").to_pylist()
    assert reasons[0].startswith("too long: ") and reasons[0].endswith("tokens > max 24")
    assert reasons[1:] == ["null text", "empty or whitespace-only text"]


@pytest.fixture(scope="module")
def other_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model (other random weights): a different fingerprint."""
    from tests.helpers.tiny_model import export_tiny, make_tiny_st_model

    base = tmp_path_factory.mktemp("other")
    return export_tiny(make_tiny_st_model(base / "model", seed=1), base / "artifact")


def test_wrong_inputs_fail_fast_with_a_clear_message(
    tiny_artifact: Path, other_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"question": ["a"], "answer": ["b"]}), good)
    not_parquet = tmp_path / "q.parquet"
    not_parquet.write_text("question\nhello\n")
    broken = tmp_path / "broken-artifact"
    shutil.copytree(tiny_artifact, broken)
    with open(broken / "tokenizer.json", "a") as fh:
        fh.write(" ")
    started = tmp_path / "started"
    prepare(JobConfig(str(tiny_artifact), str(good), str(started)))  # an earlier run's state, no work done

    def fails(artifact: Path, inp: Path | str, out: Path, *extra: str) -> str:
        code = main(["--artifact", str(artifact), "--input", str(inp), "--output", str(out), *extra])
        assert code == 2
        return capsys.readouterr().err

    fresh = tmp_path / "never"
    assert "no column(s) 'title'" in fails(tiny_artifact, good, fresh, "--text-column", "title")
    assert "no column(s) 'category'" in fails(tiny_artifact, good, fresh, "--keep-columns", "category")
    assert "not a parquet file" in fails(tiny_artifact, not_parquet, fresh)
    assert "no input files" in fails(tiny_artifact, tmp_path / "none-*.parquet", fresh)
    assert "does not exist" in fails(tmp_path / "no-artifact", good, fresh)
    assert "a file was edited or corrupted" in fails(broken, good, fresh)
    assert not fresh.exists()  # nothing was started for any of them
    err = fails(other_artifact, good, started)
    assert "holds a run made with artifact" in err and "choose a new --output" in err


def test_gpu_device_asks_ray_for_a_gpu_and_onnxruntime_for_cuda() -> None:
    cfg = JobConfig("a", "i", "o", device="gpu", min_actors=2, max_actors=4)
    kwargs = map_batches_kwargs(cfg, "sha256:x", ShardTask("o", ColumnSpec("question", None)))
    assert kwargs["num_gpus"] == 1 and kwargs["num_cpus"] == 0  # GPU nodes offer no logical CPU
    assert kwargs["fn_constructor_kwargs"]["providers"] == ("cuda",)
    assert (kwargs["compute"].min_size, kwargs["compute"].max_size) == (2, 4)
    cpu = map_batches_kwargs(
        JobConfig("a", "i", "o"), "sha256:x", ShardTask("o", ColumnSpec("question", None))
    )
    assert "num_gpus" not in cpu and cpu["fn_constructor_kwargs"]["providers"] == ("cpu",)
    assert cpu["num_cpus"] == 1 and cpu["fn_constructor_kwargs"]["threads"] == 1
