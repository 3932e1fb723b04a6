"""The index store on an S3 server: versions appear whole or not at all, CURRENT is one object,
rollback works, and a node's cached copy that went bad is fetched again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import storage
from index import store as index_store
from index.errors import IndexInvalid
from index.searcher import IndexSearcher
from jobs.build_index.build import build
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.s3_server import S3Server
from testkit.vectors import clustered_vectors

FP = "sha256:bbbbbbbbbbbbbbbb"


S3_BUCKET = "idx"  # the conftest `s3` fixture's bucket


def write_embeddings(emb: str, n: int, dim: int, seed: int) -> np.ndarray:
    """One embeddings file of `n` clustered vectors (ids 0..n-1) under `emb`; returns the vectors."""
    vectors = clustered_vectors(n, dim, seed=seed)
    write_embeddings_parquet(f"{emb}/part-00000.parquet", list(range(n)), vectors, fingerprint=FP)
    return vectors


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.slow  # several versions through the S3 server: ~2.5 s
def test_versions_on_s3_publish_whole_follow_current_and_roll_back(s3: S3Server, cache: Path) -> None:
    emb = "s3://idx/emb/run1"
    vectors = write_embeddings(emb, 1_500, 32, seed=3)
    root = "s3://idx/indexes/faq"
    first = build(emb, root, factory="Flat")
    second = build(emb, root, factory="IVF16,Flat")
    assert index_store.list_versions(root) == [first.version, second.version]
    assert storage.read_text(f"{root}/CURRENT").strip() == second.version

    # An upload cut off before its manifest (a crashed publisher) is not a version.
    storage.write_bytes(f"{root}/v99999999T000000000000-crash/index.faiss", b"partial")
    assert index_store.list_versions(root) == [first.version, second.version]
    with pytest.raises(IndexInvalid, match="not complete"):
        index_store.open_version(root, "v99999999T000000000000-crash")

    hits = IndexSearcher.open(root, expected_fingerprint=FP).search(vectors[[5, 700]], top_k=1)
    assert [h[0]["id"] for h in hits] == [5, 700]
    assert index_store.rollback(root) == first.version
    assert IndexSearcher.open(root).manifest.factory == "Flat"


def test_a_corrupt_cached_version_is_fetched_again(s3: S3Server, cache: Path) -> None:
    emb = "s3://idx/emb/run2"
    vectors = write_embeddings(emb, 800, 16, seed=4)
    root = "s3://idx/indexes/cache-test"
    built = build(emb, root, factory="Flat")
    loaded = index_store.open_current(root)
    cached_index = loaded.path / index_store.INDEX_FILE
    assert cached_index.is_file() and str(loaded.path).startswith(str(cache))
    data = bytearray(cached_index.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, different content
    cached_index.write_bytes(bytes(data))
    again = index_store.open_current(root)
    assert again.version == built.version
    assert again.path == loaded.path and cached_index.read_bytes() != bytes(data)
    hits = again.index.search(vectors[[3]], 1)
    assert int(np.asarray(hits[1]).ravel()[0]) == 3
