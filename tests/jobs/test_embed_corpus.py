"""The embed job end to end on a local Ray with the tiny model: rows, reasons, vectors, layout, reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from embedder.config import BatchConfig, batch_defaults
from embedder.errors import EmbedderError
from jobs.common.corpus import ColumnSpec
from jobs.common.embeddings_io import FINGERPRINT_KEY, inspect_embeddings, read_embeddings
from jobs.embed_corpus.cli import main, parse_args
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.gpu_capacity import (
    NO_STATUS_SECONDS,
    GpuCapacityError,
    Probes,
    actor_bundle,
    autoscaling_from_status,
    capacity,
    gpu_capacity,
)
from jobs.embed_corpus.run import map_batches_kwargs, prepare, run
from jobs.embed_corpus.udfs import ShardTask
from settings.loader import FieldValueError

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"


def corpus_with_bad_rows(directory: Path) -> dict[int, str]:
    """Two files (400 rows) from the sample with bad rows planted, written into `directory`; returns
    {id: expected reason}."""
    t = pq.read_table(SAMPLE).slice(0, 400)
    q, ids = t.column("question").to_pylist(), t.column("id").to_pylist()
    q[3], q[57], q[120] = None, "", " \t\n"
    ids[300] = ids[10]  # the second file repeats an id of the first
    ids[200] = None
    t = t.set_column(0, "id", pa.array(ids, pa.int64())).set_column(1, "question", pa.array(q, pa.string()))
    pq.write_table(t.slice(0, 250), directory / "a.parquet", row_group_size=50)
    pq.write_table(t.slice(250), directory / "b.parquet", row_group_size=50)
    return {3: "null text", 57: "empty or whitespace-only text", 120: "empty or whitespace-only text"}


def read_output(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


@pytest.mark.ray
@pytest.mark.slow
def test_job_embeds_good_rows_once_quarantines_bad_ones_and_matches_encoder(
    local_ray: None, tiny_artifact: Path, input_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = corpus_with_bad_rows(input_dir)
    out = tmp_path / "out"
    cfg = JobConfig(
        artifact=str(tiny_artifact),
        input=str(input_dir),
        output=str(out),
        keep_columns=("answer", "category"),
        shard_rows=64,
        progress=False,
    )
    summary = run(cfg)

    source = pq.read_table(input_dir)
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
    # Every shard says what embedded it (the suite pins onnxruntime: tests/conftest.py).
    assert list(on_disk["runtimes"]) == [f"onnxruntime/fp32/cpu {','.join(enc.runtime.cpu_units) or '-'}"]
    assert sum(on_disk["runtimes"].values()) == on_disk["shards"]
    # The index builder's reader accepts the output as is.
    info = inspect_embeddings(out)
    assert info.count == len(good_positions) and info.fingerprint == enc.fingerprint
    assert info.passthrough == ("answer", "category") and info.dimension == 32
    first = next(read_embeddings(info))
    assert pq.read_schema(info.files[0].uri).metadata[FINGERPRINT_KEY] == enc.fingerprint.encode()
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
    local_ray: None, tiny_artifact: Path, input_dir: Path, tmp_path: Path
) -> None:
    long_text = "how do i reset my password " * 20
    pq.write_table(
        pa.table({"question": ["what is the capital of france", long_text]}), input_dir / "a.parquet"
    )
    pq.write_table(pa.table({"question": pa.array([None, "  "], pa.string())}), input_dir / "b.parquet")
    out = tmp_path / "out"
    summary = run(
        JobConfig(str(tiny_artifact), str(input_dir), str(out), too_long="quarantine", progress=False)
    )
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


def test_gpu_device_asks_ray_for_a_gpu_and_onnxruntime_for_cuda_with_gpu_batching() -> None:
    task = ShardTask("o", ColumnSpec("question", None))
    cfg = JobConfig("a", "i", "o", device="gpu", min_actors=2, max_actors=4)
    kwargs = map_batches_kwargs(cfg, "sha256:x", task)
    assert kwargs["num_gpus"] == 1 and kwargs["num_cpus"] == 0  # GPU nodes offer no logical CPU
    assert kwargs["fn_constructor_kwargs"]["providers"] == ("cuda",)
    assert kwargs["fn_constructor_kwargs"]["batch"] == batch_defaults("gpu")
    assert kwargs["batch_size"] == 4  # shards pipelined per call: the GPU never waits on parquet I/O
    assert (kwargs["compute"].min_size, kwargs["compute"].max_size) == (2, 4)
    cpu = map_batches_kwargs(JobConfig("a", "i", "o"), "sha256:x", task)
    assert "num_gpus" not in cpu and cpu["fn_constructor_kwargs"]["providers"] == ("cpu",)
    assert cpu["num_cpus"] == 1 and cpu["fn_constructor_kwargs"]["threads"] == 1
    assert cpu["fn_constructor_kwargs"]["batch"] == batch_defaults("cpu") and cpu["batch_size"] == 1
    # Fields given win; the rest keep the device default.
    mixed = JobConfig("a", "i", "o", device="gpu", max_batch_size=64, shards_per_call=2)
    assert mixed.batch == BatchConfig(
        batch_defaults("gpu").batch_tokens, 64, batch_defaults("gpu").call_overhead_tokens
    )
    assert map_batches_kwargs(mixed, "sha256:x", task)["batch_size"] == 2


def test_gpu_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    required = ["--artifact", "a", "--input", "i", "--output", "o"]
    monkeypatch.setenv("QM_JOB_GPU_WAIT_SECONDS", "30")
    monkeypatch.setenv("QM_JOB_BATCH_TOKENS", "none")
    cfg = parse_args([*required, "--device", "gpu", "--providers", "cpu", "--cpu-stand-in-for-gpu"])
    assert (cfg.gpu_wait_seconds, cfg.batch_tokens, cfg.providers) == (30.0, None, ("cpu",))
    assert cfg.cpu_stand_in_for_gpu and cfg.actor_providers == ("cpu",)
    cfg = parse_args([*required, "--device", "gpu", "--batch-tokens", "4096", "--shards-per-call", "8"])
    assert (cfg.batch.batch_tokens, cfg.shards_in_each_call, cfg.actor_providers) == (4096, 8, ("cuda",))


def test_a_cpu_session_on_a_reserved_gpu_is_a_config_error_naming_both_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(FieldValueError) as err:
        JobConfig("a", "i", "o", device="gpu", providers=("cpu",))
    assert "providers=('cpu',)" in str(err.value) and "device=gpu" in str(err.value)
    JobConfig("a", "i", "o", device="gpu", providers=("cpu",), cpu_stand_in_for_gpu=True)  # rehearsal only
    with pytest.raises(FieldValueError, match="device=cpu"):
        JobConfig("a", "i", "o", providers=("cuda",))
    with pytest.raises(FieldValueError, match="cpu_stand_in_for_gpu"):
        JobConfig("a", "i", "o", cpu_stand_in_for_gpu=True)
    with pytest.raises(SystemExit):
        parse_args(
            ["--artifact", "a", "--input", "i", "--output", "o", "--device", "gpu", "--providers", "cpu"]
        )
    assert "--providers cpu: device=gpu reserves a GPU" in capsys.readouterr().err


def test_the_run_records_the_providers_and_batching_that_ran(tiny_artifact: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"question": ["a"]}), good)
    cfg = JobConfig(
        str(tiny_artifact),
        str(good),
        str(tmp_path / "out"),
        device="gpu",
        providers=("cpu",),
        cpu_stand_in_for_gpu=True,
    )
    prepare(cfg)
    recorded = json.loads((tmp_path / "out" / "_RUN.json").read_text())["config"]
    assert recorded["providers"] == ["cpu"] and recorded["cpu_stand_in_for_gpu"] is True
    assert recorded["batch_tokens"] == batch_defaults("gpu").batch_tokens and recorded["shards_per_call"] == 4


# --------------------------------------------------------------------------- GPU capacity (no Ray)

GPU_NODE = {"Alive": True, "Resources": {"CPU": 0.0, "GPU": 1.0, "gpu_worker": 1.0}}
HEAD = {"Alive": True, "Resources": {"CPU": 0.0}}
AUTOSCALING = {"autoscaler_report": {"node_type_mapping": {"ff00": "ray.head.default"}}}
FIXED = {"autoscaler_report": {"node_type_mapping": {"ab12": "node_ab12"}}}


class FakeCluster:
    """A cluster seen through gpu_capacity.Probes: GPU nodes appear after `boot` seconds of asking."""

    def __init__(self, status: dict[str, Any] | None, boot: float | None, gpus: int = 0) -> None:
        self.t = 0.0
        self.status_value, self.boot, self.gpus = status, boot, gpus
        self.requests: list[list[dict[str, float]]] = []
        self.asked_at: float | None = None
        self.lines: list[str] = []

    def nodes(self) -> list[dict[str, Any]]:
        up = self.gpus
        if self.boot is not None and self.asked_at is not None and self.t - self.asked_at >= self.boot:
            up += len(self.requests[-1])
        return [HEAD, *[GPU_NODE] * up]

    def request(self, bundles: list[dict[str, float]]) -> None:
        self.requests.append(bundles)
        self.asked_at = self.t if bundles else None

    def probes(self) -> Probes:
        def sleep(seconds: float) -> None:
            self.t += seconds

        return Probes(
            nodes=self.nodes,
            status=lambda: (self.status_value, False),
            request=self.request,
            clock=lambda: self.t,
            sleep=sleep,
            log=self.lines.append,
        )


def test_gpu_job_asks_the_autoscaler_waits_for_the_nodes_and_withdraws_the_request() -> None:
    cluster = FakeCluster(AUTOSCALING, boot=20.0)
    with gpu_capacity(actor_bundle(1.0, 0.0), 2, timeout=600, probes=cluster.probes()):
        assert cluster.requests == [[{"GPU": 1.0}, {"GPU": 1.0}]]  # what the pool needs, nothing more
        assert len(cluster.nodes()) == 3
    assert cluster.requests[-1] == []  # withdrawn: idle GPU nodes can go
    assert "asked the autoscaler for 2 x {GPU: 1}" in cluster.lines[0] and "600 s left" in cluster.lines[0]
    assert "0 GPU(s) on 0 of 1 alive node(s)" in cluster.lines[0]
    assert cluster.lines[-1].startswith("GPU capacity ready after 20 s")


def test_gpu_job_that_already_has_its_gpus_asks_for_nothing() -> None:
    cluster = FakeCluster(AUTOSCALING, boot=None, gpus=2)
    with gpu_capacity(actor_bundle(1.0, 0.0), 2, timeout=600, probes=cluster.probes()):
        pass
    assert cluster.requests == [] and cluster.lines == []


def test_gpu_wait_times_out_with_what_was_asked_what_is_there_and_the_fix() -> None:
    cluster = FakeCluster(AUTOSCALING, boot=None)
    with (
        pytest.raises(GpuCapacityError) as err,
        gpu_capacity(actor_bundle(1.0, 1.0), 1, timeout=60, probes=cluster.probes()),
    ):
        raise AssertionError("the job must not start")
    message = str(err.value)
    assert "1 x {GPU: 1, CPU: 1}" in message and "waited 60 s" in message
    assert "0 GPU(s) on 0 of 1 alive node(s)" in message
    assert "gpu_worker.max_workers in cluster.yaml" in message and "quota" in message
    assert cluster.requests[-1] == [] and 60 <= cluster.t <= 62
    assert isinstance(err.value, EmbedderError)  # main() prints it as one line and exits 2


@pytest.mark.parametrize("status", [FIXED, None], ids=["read-only monitor", "no monitor"])
def test_gpu_job_on_a_cluster_without_autoscaler_fails_fast(status: dict[str, Any] | None) -> None:
    cluster = FakeCluster(status, boot=None)
    with (
        pytest.raises(GpuCapacityError, match="no autoscaler that could add GPU nodes"),
        gpu_capacity(actor_bundle(1.0, 0.0), 1, timeout=600, probes=cluster.probes()),
    ):
        pass
    assert cluster.t <= NO_STATUS_SECONDS + 2  # not the 600 s timeout
    assert cluster.requests in ([], [[{"GPU": 1.0}], []])  # nothing left standing


def test_an_actor_bundle_must_fit_inside_one_node() -> None:
    nodes = [
        {"Alive": True, "Resources": {"GPU": 2.0, "CPU": 1.0}},
        {"Alive": True, "Resources": {"GPU": 1.0, "CPU": 4.0}},
        {"Alive": False, "Resources": {"GPU": 8.0, "CPU": 8.0}},
    ]
    assert capacity(nodes, {"GPU": 1.0, "CPU": 1.0}).slots == 2  # 1 + 1: the first node has one CPU
    assert capacity(nodes, {"GPU": 0.5}).slots == 6
    have = capacity(nodes, {"GPU": 1.0})
    assert (have.nodes, have.gpu_nodes, have.gpus, have.slots) == (2, 2, 3.0, 3)
    assert autoscaling_from_status(AUTOSCALING, v2=False) == "autoscaler"
    assert autoscaling_from_status(FIXED, v2=False) == "fixed"
    assert autoscaling_from_status({"load_metrics_report": {}}, v2=False) == "unknown"  # monitor starting
    assert autoscaling_from_status(None, v2=True) == "autoscaler"  # KubeRay's v2 autoscaler


@pytest.mark.ray
@pytest.mark.slow
def test_a_bf16_run_says_so_and_its_vectors_stay_within_the_bf16_tolerance(
    local_ray: None, tiny_artifact: Path, tmp_path: Path
) -> None:
    """--backend openvino --precision bf16: the summary names the runtime that made the vectors,
    and each vector is within the documented bf16 tolerance of the fp32 encoder's."""
    pytest.importorskip("openvino")
    from embedder.encoder import cosine_rows
    from embedder.probe import PROBE_MIN_COSINE

    src = tmp_path / "in.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 120), src)
    cfg = JobConfig(
        str(tiny_artifact), str(src), str(tmp_path / "out"), shard_rows=60, max_actors=1,
        keep_columns=("question",), backend="openvino", precision="bf16", progress=False,
    )  # fmt: skip
    summary = run(cfg)
    (label,) = summary["runtimes"]
    assert label.startswith("openvino/") and summary["config"]["precision"] == "bf16"
    table = read_output(tmp_path / "out").sort_by("id")
    fp32 = Encoder.load(tiny_artifact, backend="onnxruntime", precision="fp32")
    expected = fp32.encode(table.column("question").to_pylist())
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    ran = label.split("/")[1]
    assert cosine_rows(expected, got).min() >= PROBE_MIN_COSINE[ran]
