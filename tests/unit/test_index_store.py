"""Versioned index directories and the IndexSearcher: CURRENT flips, rollback, refusals, id mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedder.errors import InvalidInput, ModelMismatch
from index import store as index_store
from index.errors import IndexInvalid
from index.searcher import IndexSearcher
from index.store import IndexManifest
from index.tuning import build_in_memory
from testkit.vectors import clustered_vectors

FP = "sha256:0123456789abcdef"


def publish_version(root: Path, vectors: np.ndarray, ids: list, fingerprint: str = FP) -> str:
    """Stage and publish one version the way the build job does."""
    index, report = build_in_memory(vectors, "Flat", "ip")
    version = index_store.new_version_name()
    staged = index_store.staging_dir(root, version)
    index.save(staged / index_store.INDEX_FILE)
    meta = pa.table({"id": ids, "question": [f"q{i}" for i in ids], "answer": [f"a{i}" for i in ids]})
    import pyarrow.parquet as pq

    pq.write_table(meta, staged / index_store.METADATA_FILE)
    manifest = IndexManifest(
        factory="Flat",
        metric="ip",
        count=len(ids),
        dimension=vectors.shape[1],
        fingerprint=fingerprint,
        recall_at_10=report.recall_at_10,
        bytes_per_vector=index.bytes_per_vector(),
        build_seconds=0.0,
        columns=("question", "answer"),
    )
    (staged / index_store.MANIFEST_FILE).write_text(manifest.to_json())
    index_store.publish(root, staged, version)
    return version


@pytest.fixture()
def vectors() -> np.ndarray:
    return clustered_vectors(300, 32, seed=11)


def test_searcher_maps_rows_to_string_ids_and_metadata(tmp_path: Path, vectors: np.ndarray) -> None:
    ids = [f"doc-{i * 3}" for i in range(len(vectors))]
    version = publish_version(tmp_path, vectors, ids)
    s = IndexSearcher.open(tmp_path, expected_fingerprint=FP)
    assert (s.version, s.size, s.dimension, s.fingerprint) == (version, 300, 32, FP)
    results = s.search(vectors[[5, 17]], top_k=3)
    assert [r[0]["id"] for r in results] == ["doc-15", "doc-51"]
    assert results[0][0]["question"] == "qdoc-15" and results[0][0]["answer"] == "adoc-15"
    assert results[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert all(len(r) == 3 and r[0]["score"] >= r[1]["score"] >= r[2]["score"] for r in results)


def test_min_score_and_top_k_larger_than_index(tmp_path: Path, vectors: np.ndarray) -> None:
    publish_version(tmp_path, vectors[:20], list(range(100, 120)))
    s = IndexSearcher.open(tmp_path)
    everything = s.search(vectors[:1], top_k=50)[0]
    assert len(everything) == 20 and everything[0]["id"] == 100
    cut = everything[3]["score"]
    kept = s.search(vectors[:1], top_k=50, min_score=cut)[0]
    assert kept == everything[: len(kept)] and all(m["score"] >= cut for m in kept) and len(kept) >= 4
    assert s.search(vectors[:1], top_k=5, min_score=2.0) == [[]]


def test_bad_queries_are_invalid_input(tmp_path: Path, vectors: np.ndarray) -> None:
    publish_version(tmp_path, vectors, list(range(len(vectors))))
    s = IndexSearcher.open(tmp_path)
    with pytest.raises(InvalidInput):
        s.search(np.zeros((1, 31), np.float32), 3)
    with pytest.raises(InvalidInput):
        s.search(vectors[:1], 0)
    with pytest.raises(InvalidInput):
        s.search(np.full((1, 32), np.nan, np.float32), 3)


def test_fingerprint_mismatch_is_refused(tmp_path: Path, vectors: np.ndarray) -> None:
    publish_version(tmp_path, vectors, list(range(len(vectors))))
    with pytest.raises(ModelMismatch, match="built with model"):
        IndexSearcher.open(tmp_path, expected_fingerprint="sha256:ffffffffffffffff")


def test_current_flips_and_rollback_goes_back(tmp_path: Path, vectors: np.ndarray) -> None:
    v1 = publish_version(tmp_path, vectors, list(range(len(vectors))))
    v2 = publish_version(tmp_path, vectors[:100], list(range(100)))
    assert index_store.list_versions(tmp_path) == [v1, v2]
    assert IndexSearcher.open(tmp_path).size == 100
    assert index_store.rollback(tmp_path) == v1
    assert IndexSearcher.open(tmp_path).version == v1 and IndexSearcher.open(tmp_path).size == 300
    with pytest.raises(IndexInvalid, match="no complete version older"):
        index_store.rollback(tmp_path)
    assert IndexSearcher.open(tmp_path, version=v2).size == 100  # old versions stay openable


def test_incomplete_or_missing_versions_are_refused(tmp_path: Path, vectors: np.ndarray) -> None:
    with pytest.raises(IndexInvalid, match="no CURRENT"):
        index_store.open_current(tmp_path)
    v1 = publish_version(tmp_path, vectors, list(range(len(vectors))))
    with pytest.raises(IndexInvalid, match="does not exist"):
        index_store.open_version(tmp_path, "v-nope")
    (tmp_path / v1 / index_store.METADATA_FILE).unlink()
    with pytest.raises(IndexInvalid, match="incomplete"):
        IndexSearcher.open(tmp_path)
    with pytest.raises(IndexInvalid):
        index_store.set_current(tmp_path, v1)


def test_failed_staging_never_touches_current(tmp_path: Path, vectors: np.ndarray) -> None:
    v1 = publish_version(tmp_path, vectors, list(range(len(vectors))))
    staged = index_store.staging_dir(tmp_path, "v-broken")
    (staged / index_store.INDEX_FILE).write_bytes(b"not an index")
    (staged / index_store.METADATA_FILE).write_bytes(b"")
    with pytest.raises(IndexInvalid):
        index_store.publish(tmp_path, staged, "v-broken")
    assert index_store.current_version(tmp_path) == v1
    assert index_store.list_versions(tmp_path) == [v1]  # staging dirs are not versions
    assert IndexSearcher.open(tmp_path).version == v1
