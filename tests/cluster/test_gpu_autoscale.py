"""`embed_corpus --device gpu` on an autoscaling cluster: GPU nodes come on demand and go after idle.

The slow test runs Ray's fake multi-node autoscaler with cluster/autoscale-local.yaml (GPU type
at min_workers 0, CPU 0, fake GPUs). CPU onnxruntime stands in for CUDA (providers=("cpu",),
cpu_stand_in_for_gpu=True); the scheduling is real: the pool's actors reserve a GPU each, so
they can only run on the GPU nodes the job asked the autoscaler for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs.embed_corpus.cli import main
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from testkit.ray_cluster import start_local_ray
from testkit.waiting import wait_until

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "autoscale-local.yaml"
ROWS, SHARD_ROWS = 600, 50


def alive_gpu_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]


def corpus(directory: Path) -> list[int]:
    """Three files of sample questions with ids 0..ROWS-1, written into `directory`."""
    t = pq.read_table(REPO / "data" / "sample_qa.parquet").slice(0, ROWS).select(["question"])
    t = t.append_column("id", pa.array(range(ROWS), pa.int64()))
    third = ROWS // 3
    for i in range(3):
        pq.write_table(t.slice(i * third, third), directory / f"qa-{i}.parquet")
    return list(range(ROWS))


def test_gpu_job_on_a_cluster_without_autoscaler_fails_fast_with_the_fix(
    tiny_artifact: Path, input_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    corpus(input_dir)
    with start_local_ray(object_store_mb=100):
        started = time.monotonic()
        args = [
            "--artifact",
            str(tiny_artifact),
            "--input",
            str(input_dir),
            "--output",
            str(tmp_path / "out"),
        ]
        code = main(
            [*args, "--device", "gpu", "--providers", "cpu", "--cpu-stand-in-for-gpu", "--no-progress"]
        )
        took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert took < 40, f"took {took:.0f} s: waited instead of failing fast"  # the default wait is 600 s
    assert "no autoscaler that could add GPU nodes" in err
    assert "1 x {GPU: 1}" in err and "0 GPU(s) on 0 of 1 alive node(s)" in err and "--device cpu" in err
    assert not list((tmp_path / "out").glob("part-*.parquet"))


# Idle GPU nodes go after this long here (the shipped demo config says 0.5 min): the test waits
# for the removal, so a shorter timeout is the same check in less time.
IDLE_TIMEOUT_MINUTES = 0.1


@pytest.fixture(scope="module")
def fake_autoscaling_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fake multi-node head with the autoscaler (testkit.ray_cluster); every process killed after."""
    pytest.importorskip("ray")
    from testkit.ray_cluster import fake_cluster

    config = yaml.safe_load(CONFIG.read_text())
    config["idle_timeout_minutes"] = IDLE_TIMEOUT_MINUTES
    path = tmp_path_factory.mktemp("autoscale") / CONFIG.name
    path.write_text(yaml.safe_dump(config))
    with fake_cluster(path):
        yield


@pytest.mark.slow
def test_gpu_job_starts_gpu_nodes_runs_its_actors_there_and_they_go_after_idle(
    fake_autoscaling_cluster: None,
    tiny_artifact: Path,
    input_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray

    ids = corpus(input_dir)
    assert alive_gpu_nodes() == []  # the GPU type is at min_workers 0: nothing to run on yet
    out = tmp_path / "out"
    cfg = JobConfig(
        artifact=str(tiny_artifact),
        input=str(input_dir),
        output=str(out),
        device="gpu",
        providers=("cpu",),
        cpu_stand_in_for_gpu=True,
        min_actors=1,
        max_actors=2,
        shard_rows=SHARD_ROWS,
        gpu_wait_seconds=120,
        progress=False,
    )
    summary = run(cfg)

    # Every row exactly once.
    got = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    assert sorted(got.column("id").to_pylist()) == ids
    assert summary["rows_embedded"] == ROWS and summary["rows_quarantined"] == 0
    assert summary["config"]["providers"] == ["cpu"] and summary["config"]["cpu_stand_in_for_gpu"]
    err = capsys.readouterr().err
    assert "waiting for GPU nodes: asked the autoscaler for 1 x {GPU: 1}" in err
    assert "GPU capacity ready after" in err

    # The pool's actors ran on the fake GPU nodes (the GCS actor table: no dashboard needed).
    gpu_node_ids = {
        n["NodeID"] for n in ray.nodes() if "gpu_worker" in n.get("Resources", {})
    }  # dead ones included
    pool = [a for a in ray._private.state.actors().values() if "MapWorker" in a["ActorClassName"]]
    assert pool, "no actor-pool actor found in the GCS actor table"
    assert {a["Address"]["NodeID"] for a in pool} <= gpu_node_ids

    # The job withdrew its request: the idle GPU nodes are removed (IDLE_TIMEOUT_MINUTES).
    wait_until(
        lambda: alive_gpu_nodes() == [], timeout=150, what="GPU nodes removed after idle", interval=1.0
    )
