"""Exactly once under failure, on a local multi-node Ray cluster: a worker node dies, the driver dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from jobs.embed_corpus.cli import command_line
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from jobs.embed_corpus.run_state import DONE_DIR
from testkit.ray_cluster import MiB, multinode_cluster
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROWS, SHARD_ROWS = 800, 40  # 20 shards of real-model work: long enough to be interrupted mid-job
SHARDS = ROWS // SHARD_ROWS


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head with no CPUs (driver only) and three 1-CPU worker nodes; the job's two actors fit on any two."""
    pytest.importorskip("ray")
    node = {"num_cpus": 1, "object_store_memory": 100 * MiB}
    with multinode_cluster({**node, "num_cpus": 0}, [node] * 3) as c:
        yield c


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "qa.parquet"
    path.parent.mkdir()
    pq.write_table(
        pq.read_table(REPO / "data" / "sample_qa.parquet").slice(0, ROWS), path, row_group_size=200
    )
    return path


def committed_shards(out: Path) -> list[str]:
    """Shards the driver committed (one marker object each)."""
    return sorted(p.stem for p in (out / DONE_DIR).glob("*.json"))


def done_shards(out: Path) -> int:
    return len(committed_shards(out))


def assert_every_row_once(out: Path, corpus: Path, artifact: Path) -> None:
    """The output holds each input id exactly once, with the vector the Encoder gives its text."""
    source = pq.read_table(corpus)
    got = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS
    assert sorted(ids) == sorted(source.column("id").to_pylist())
    sample = np.random.default_rng(0).choice(ROWS, 24, replace=False)
    text_by_id = dict(
        zip(source.column("id").to_pylist(), source.column("question").to_pylist(), strict=True)
    )
    position = {i: k for k, i in enumerate(ids)}
    vectors = np.stack(
        got.column("embedding").to_numpy(zero_copy_only=False)[[position[ids[s]] for s in sample]]
    )
    expected = Encoder.load(artifact, threads=1).encode([text_by_id[ids[s]] for s in sample])
    assert np.abs(vectors - expected).max() < 1e-5


def test_worker_node_killed_mid_job_still_yields_every_row_once(
    cluster: Any, shipped_minilm: Path, corpus: Path, tmp_path: Path
) -> None:
    import ray._private.state as ray_state

    out = tmp_path / "out"
    cfg = JobConfig(
        str(shipped_minilm), str(corpus), str(out), shard_rows=SHARD_ROWS, min_actors=2, progress=False
    )
    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["summary"] = run(cfg)
        except BaseException as exc:  # surfaced by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    wait_until(lambda: done_shards(out) >= 2, 240, "two finished shards")
    # A worker whose CPU is taken hosts one of the job's actors (the head has no CPUs).
    free = ray_state.available_resources_per_node()
    busy = [n for n in cluster.worker_nodes if free.get(n.node_id, {}).get("CPU", 0.0) < 1.0]
    assert busy, f"no worker node runs an actor: {free}"
    victim = busy[0]
    cluster.remove_node(victim, allow_graceful=False)
    done_at_kill = done_shards(out)
    thread.join(timeout=400)
    assert not thread.is_alive(), "job did not finish after the node died"
    assert "error" not in result, result.get("error")
    assert done_at_kill < SHARDS, "the job finished before the node was killed; nothing was tested"
    assert result["summary"]["rows_embedded"] == ROWS
    assert_every_row_once(out, corpus, shipped_minilm)
    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)  # back to three workers for the next test


def embed_cli(corpus: Path, out: Path, artifact: Path, address: str) -> list[str]:
    flags = ["--shard-rows", str(SHARD_ROWS), "--min-actors", "2", "--ray-address", address, "--no-progress"]
    return command_line(str(artifact), str(corpus), str(out), *flags)


def test_driver_killed_mid_job_resumes_without_redoing_finished_shards(
    cluster: Any, shipped_minilm: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = embed_cli(corpus, out, shipped_minilm, cluster.address)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: done_shards(out) >= 3 or first.poll() is not None, 240, "three finished shards")
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    done_at_kill = done_shards(out)
    assert done_at_kill < SHARDS, "the job finished before the driver was killed; nothing was tested"
    committed = committed_shards(out)

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed:" in second.stdout
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["resumed"] and summary["shards_this_run"] == SHARDS - done_at_kill
    assert summary["rows_embedded"] == ROWS
    journal = committed_shards(out)
    assert set(committed) <= set(journal) and len(journal) == SHARDS
    assert_every_row_once(out, corpus, shipped_minilm)

    third = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and third.stdout.startswith("nothing to do:"), third.stderr[-2000:]
