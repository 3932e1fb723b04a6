"""Everything on s3:// against a real S3 server, on Ray worker nodes that cannot see the driver's disk.

See testkit/hidden_nodes.py for how the worker nodes are isolated. The head has no CPUs,
so every job actor and Serve replica runs on an isolated node and can only reach the corpus,
the artifact, the embeddings and the index through the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

import storage
from embedder import Encoder
from embedder.artifact import Artifact
from testkit.hidden_nodes import WORKER_CACHE, HiddenDiskCluster
from testkit.net import free_port
from testkit.s3_server import S3Server
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = S3_BUCKET = "qm-test"  # S3_BUCKET: the conftest `s3` fixture's bucket
ROWS, SHARD_ROWS = 600, 30  # 20 shards of real-model work: long enough to kill a node mid-job


@pytest.fixture(scope="module")
def cluster(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiddenDiskCluster]:
    # Hide pytest's whole temp root (all tests' data) from the worker nodes.
    c = HiddenDiskCluster(env=s3.env, hide=(tmp_path_factory.getbasetemp().parent,))
    c.start()
    try:
        for _ in range(2):
            c.add_node(num_cpus=1)
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def minilm_uri(shipped_minilm: Path, s3: S3Server) -> str:
    """The real MiniLM artifact, uploaded to the bucket (manifest last)."""
    uri = f"s3://{BUCKET}/artifacts/minilm-fp32"
    storage.upload_dir(shipped_minilm, uri, last=["manifest.json"])
    return uri


@pytest.fixture(scope="module")
def corpus_uri(s3: S3Server) -> str:
    table = pq.read_table(REPO / "data" / "sample_qa.parquet").slice(0, ROWS)
    uri = f"s3://{BUCKET}/corpus/qa.parquet"
    storage.write_parquet(uri, table, row_group_size=100)
    return uri


def committed(out: str) -> list[str]:
    return [f.base_name for f in storage.list_files(storage.resolve(out).child("_done"))]


def read_parts(out: str) -> pa.Table:
    loc = storage.resolve(out)
    parts = [
        storage.read_parquet(storage.located(loc, f.path))
        for f in storage.list_files(loc, recursive=False)
        if f.base_name.startswith("part-")
    ]
    return pa.concat_tables(parts)


def assert_every_row_once(out: str, corpus_uri: str, encoder: Encoder) -> None:
    source = storage.read_parquet(corpus_uri)
    got = read_parts(out)
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS
    assert sorted(ids) == sorted(source.column("id").to_pylist())
    text = dict(zip(source.column("id").to_pylist(), source.column("question").to_pylist(), strict=True))
    pick = np.random.default_rng(0).choice(ROWS, 16, replace=False)
    vectors = np.stack(got.column("embedding").to_numpy(zero_copy_only=False)[pick])
    expected = encoder.encode([text[ids[i]] for i in pick])
    assert np.abs(vectors - expected).max() < 1e-5


def test_worker_nodes_cannot_see_the_drivers_files(cluster: HiddenDiskCluster, tmp_path: Path) -> None:
    """The premise of this module: a file the driver wrote is invisible on every worker node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = tmp_path / "driver-only.txt"
    marker.write_text("only the driver's disk has this")

    @ray.remote(num_cpus=1)
    def sees(path: str) -> tuple[bool, bool]:
        return os.path.exists(path), os.path.exists(str(REPO / "data" / "sample_qa.parquet"))

    for node in cluster.nodes:
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        assert ray.get(sees.options(scheduling_strategy=strategy).remote(str(marker)), timeout=120) == (
            False,
            False,
        )


def test_export_to_s3_and_a_worker_loads_and_recovers_a_corrupt_cache(
    cluster: HiddenDiskCluster, tiny_model_dir: Path
) -> None:
    import ray

    from export.pipeline import ExportRequest
    from export.remote import export_to

    uri = f"s3://{BUCKET}/artifacts/tiny"
    manifest = export_to(ExportRequest(tiny_model_dir, Path()), uri, log=lambda *_: None)
    assert storage.is_file(f"{uri}/manifest.json") and storage.is_file(f"{uri}/model.onnx")

    @ray.remote(num_cpus=1)
    def load_twice(uri: str) -> tuple[str, str, str]:
        first = Artifact.load(uri)
        # Corrupt the node-local cached copy: the next load must notice and fetch it again.
        with open(first.path / "model.onnx", "r+b") as fh:
            fh.seek(100)
            fh.write(b"\0" * 64)
        second = Artifact.load(uri)
        return first.fingerprint, second.fingerprint, str(second.path)

    first, second, cached = ray.get(load_twice.remote(uri), timeout=180)
    assert first == second == manifest.fingerprint
    assert cached.startswith(f"{WORKER_CACHE}/artifacts/")  # the node's own private cache


def test_embed_s3_to_s3_with_a_worker_node_killed_mid_job(
    cluster: HiddenDiskCluster, minilm_uri: str, corpus_uri: str
) -> None:
    from jobs.embed_corpus.config import JobConfig
    from jobs.embed_corpus.run import run

    out = f"s3://{BUCKET}/runs/killed-worker"
    cfg = JobConfig(minilm_uri, corpus_uri, out, shard_rows=SHARD_ROWS, min_actors=2, progress=False)
    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["summary"] = run(cfg)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    wait_until(lambda: len(committed(out)) >= 2 or not thread.is_alive(), 300, "two committed shards")
    busy = cluster.busy_nodes()
    assert busy, "no worker node hosts an actor"
    cluster.kill(busy[0])
    at_kill = len(committed(out))
    cluster.add_node(num_cpus=1)  # a replacement machine joins; it has nothing cached either
    thread.join(timeout=600)
    assert not thread.is_alive(), "the job did not finish after the node died"
    assert "error" not in result, result.get("error")
    assert at_kill < ROWS // SHARD_ROWS, "the job finished before the node was killed; nothing was tested"
    assert result["summary"]["rows_embedded"] == ROWS
    assert_every_row_once(out, corpus_uri, Encoder.load(minilm_uri, threads=1))


def test_driver_killed_then_resumed_on_s3(
    cluster: HiddenDiskCluster, minilm_uri: str, corpus_uri: str, s3: S3Server
) -> None:
    out = f"s3://{BUCKET}/runs/killed-driver"
    cmd = [
        sys.executable,
        "-m",
        "jobs.embed_corpus",
        *("--artifact", minilm_uri, "--input", corpus_uri, "--output", out),
        *("--shard-rows", str(SHARD_ROWS), "--min-actors", "2", "--no-progress"),
        *("--ray-address", cluster.address),
    ]
    env = {**os.environ, **s3.env}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(committed(out)) >= 3 or first.poll() is not None, 300, "three shards")
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    at_kill = committed(out)
    assert len(at_kill) < ROWS // SHARD_ROWS, "the job finished before the driver was killed"

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed:" in second.stdout
    summary = storage.read_json(f"{out}/_SUMMARY.json")
    assert summary["resumed"] and summary["rows_embedded"] == ROWS
    # Nothing committed before the kill is redone. (A marker upload the dying driver had already
    # sent can land on the server after our listing, so the resumed run may find one more done.)
    assert 1 <= summary["shards_this_run"] <= ROWS // SHARD_ROWS - len(at_kill)
    assert set(committed(out)) == {f"{s}.json" for s in summary_shard_ids(out)}
    assert_every_row_once(out, corpus_uri, Encoder.load(minilm_uri, threads=1))
    third = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.startswith("nothing to do:"), third.stderr[-2000:]


def test_index_on_s3_and_serve_match_follows_current_in_the_bucket(
    cluster: HiddenDiskCluster, minilm_uri: str, corpus_uri: str
) -> None:
    """build_index s3 -> s3; the Serve replica (on a worker node) loads artifact and index from the
    bucket, answers /match, and hot-swaps when CURRENT changes in the bucket, with no failed request."""
    from ray import serve

    from deployments.app import build_app
    from jobs.build_index.build import build
    from jobs.embed_corpus.config import JobConfig
    from jobs.embed_corpus.run import run

    emb = f"s3://{BUCKET}/runs/for-index"
    run(JobConfig(minilm_uri, corpus_uri, emb, shard_rows=200, progress=False))
    root = f"s3://{BUCKET}/indexes/faq"
    v1 = build(emb, root, factory="Flat")
    assert storage.read_text(f"{root}/CURRENT").strip() == v1.version

    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    args = {
        "artifact": minilm_uri,
        "index": root,
        "topology": "inline",
        "poll_seconds": 0.5,
        "session": {"threads": 1, "allow_spinning": False},
        "deployments": {"Ingress": {"ray_actor_options": {"num_cpus": 1}}},
    }
    serve.run(build_app(args), name="s3app", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 300, "the Serve app on a worker node")
        source = storage.read_parquet(corpus_uri)
        question = source.column("question")[7].as_py()
        first = requests.post(url + "/match", json={"question": question, "top_k": 3}, timeout=60).json()
        assert first["index_version"] == v1.version
        assert first["matches"][0]["id"] == source.column("id")[7].as_py()
        assert first["matches"][0]["score"] > 0.99

        statuses: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                r = requests.post(url + "/match", json={"question": question, "top_k": 3}, timeout=60)
                statuses.append(r.status_code)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            v2 = build(emb, root, factory="IVF8,Flat")  # a new version flips CURRENT in the bucket
            wait_until(
                lambda: (
                    requests.post(url + "/match", json={"question": question}, timeout=60).json()[
                        "index_version"
                    ]
                    == v2.version
                ),
                120,
                "the replica to follow CURRENT to the new version",
            )
        finally:
            stop.set()
            sender.join(timeout=120)
        assert statuses and set(statuses) == {200}, f"failed requests during the swap: {set(statuses)}"
        info = requests.get(url + "/info", timeout=30).json()
        assert json.dumps(info).find(v2.version) >= 0
    finally:
        serve.shutdown()


def summary_shard_ids(out: str) -> list[str]:
    return [s["shard_id"] for s in storage.read_json(f"{out}/_RUN.json")["shards"]]


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False
