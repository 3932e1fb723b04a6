"""/match's default min_score comes from the live index version's thresholds.json (the in-process backend, no Ray).

The real pipeline: the tiny artifact's Encoder embeds FAQ questions, jobs.build_index publishes the
version, jobs.threshold stores the threshold, InProcessBackend + EmbedService + the FastAPI app serve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from embedder import Encoder
from engine.inprocess import InProcessBackend
from index.thresholds import THRESHOLDS_FILE, at_threshold, write_thresholds
from jobs.build_index.build import build
from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.threshold import cli as threshold_job
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"
ASK = "How can I change the password of my account?"


@pytest.fixture(scope="module")
def served(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    work = tmp_path_factory.mktemp("default-min-score")
    faq = pq.read_table(SAMPLE).slice(0, 60)
    questions = faq.column("question").to_pylist()
    encoder = Encoder.load(tiny_artifact, threads=1)
    emb = work / "emb"
    write_embeddings_parquet(
        emb / "part-00000.parquet",
        faq.column("id").to_pylist(),
        encoder.encode(questions),
        {"question": questions},
        fingerprint=encoder.fingerprint,
    )
    root = work / "indexes" / "faq"
    version = build(emb, root).version
    backend = InProcessBackend(str(tiny_artifact), index_root=str(root), poll_s=3600)  # refresh() by hand
    client = TestClient(create_app(EmbedService(backend, ServingConfig())))
    with client:
        yield client, backend, root, version, encoder, emb


def scores(client: TestClient, body: dict) -> list[float]:
    r = client.post("/match", json={"question": ASK, "top_k": 10, **body})
    assert r.status_code == 200, r.text
    return [m["score"] for m in r.json()["matches"]]


def test_match_uses_the_stored_threshold_when_the_request_gives_none(served: tuple) -> None:
    client, backend, root, version, encoder, _ = served
    everything = scores(client, {})
    assert len(everything) == 10  # no threshold stored yet: no default
    assert client.get("/info").json()["index"]["default_min_score"] is None

    cut = everything[3]  # a threshold between the 4th and the 5th match (ties aside)
    write_thresholds(root, version, at_threshold([cut, 0.0], [1, 0], cut), 0.95, encoder.fingerprint, "t", 2)
    backend.index.refresh()  # what the follower's poll does every poll_seconds
    defaulted = scores(client, {})
    assert defaulted == [s for s in everything if s >= cut] and 4 <= len(defaulted) < 10
    index_info = client.get("/info").json()["index"]
    assert index_info["default_min_score"] == cut and index_info["default_min_score_from"] == version
    # An explicit min_score still wins, in both directions.
    assert scores(client, {"min_score": -1.0}) == everything
    assert scores(client, {"min_score": everything[1]}) == [s for s in everything if s >= everything[1]]


def test_the_threshold_job_stores_what_match_then_applies(served: tuple, tmp_path: Path, capsys) -> None:
    client, backend, root, version, _, emb = served
    stored_rows = pq.read_table(emb)
    ids = stored_rows.column("id").to_pylist()
    vectors = np.stack(stored_rows.column("embedding").to_numpy(zero_copy_only=False))
    # Labelled pairs by id: the 5 most similar distinct pairs are matches, the 20 least similar are
    # not (the tiny random model puts every question close together, so labels follow its scores).
    i, j = np.triu_indices(len(ids), k=1)
    order = np.argsort(np.einsum("ij,ij->i", vectors[i], vectors[j]))
    rows = [(ids[i[p]], ids[j[p]], 0) for p in order[:20]] + [(ids[i[p]], ids[j[p]], 1) for p in order[-5:]]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("id_a,id_b,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    code = threshold_job.main(
        ["--pairs", str(pairs), "--embeddings", str(emb), "--index", str(root), "--target-precision", "1.0"]
    )
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "lowest threshold with precision >= 1.0" in out.out
    stored = json.loads((root / version / THRESHOLDS_FILE).read_text())
    assert stored["precision"] == 1.0 and stored["recall"] == 1.0 and stored["version"] == version
    backend.index.refresh()
    assert client.get("/info").json()["index"]["default_min_score"] == stored["default_min_score"]
    everything = scores(client, {"min_score": -1.0})
    assert scores(client, {}) == [s for s in everything if s >= stored["default_min_score"]]
