"""jobs.build_index end to end on real parquet and FAISS; the sharded build on a real local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from index import store as index_store
from index.faiss_index import IndexConfig, VectorIndex
from index.searcher import IndexSearcher
from jobs.build_index import cli as build_index
from jobs.common.embeddings_io import inspect_embeddings, write_embeddings_parquet
from testkit.vectors import clustered_vectors

FP = "sha256:aaaaaaaaaaaaaaaa"
QA = {"question": ["extra"], "answer": ["extra"]}


def write_corpus(
    directory: Path, vectors: np.ndarray, files: int = 2, fp: str = FP, string_ids: bool = True
) -> list:
    """Split vectors over `files` part files with ids, question and answer columns."""
    ids = [f"q{i:05d}" for i in range(len(vectors))] if string_ids else list(range(len(vectors)))
    for j, part in enumerate(np.array_split(np.arange(len(vectors)), files)):
        write_embeddings_parquet(
            directory / f"part-{j:05d}.parquet",
            [ids[i] for i in part],
            vectors[part],
            {"question": [f"question {i}" for i in part], "answer": [f"answer {i}" for i in part]},
            fingerprint=fp,
            row_group_rows=500,
        )
    return ids


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(4_000, 48, seed=5)


def test_build_publishes_a_searchable_version(tmp_path: Path, vectors: np.ndarray, capsys) -> None:
    emb, out = tmp_path / "emb", tmp_path / "indexes" / "faq"
    ids = write_corpus(emb, vectors, files=3)
    (emb / "_SUMMARY.json").write_text(json.dumps({"rows_embedded": 4000, "fingerprint": FP}))
    code = build_index.main(["--embeddings", str(emb), "--out", str(out), "--factory", "IVF32,Flat"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "recall@10" in line
    m = IndexSearcher.open(out, expected_fingerprint=FP).manifest
    assert (m.count, m.dimension, m.factory, m.metric, m.fingerprint) == (4000, 48, "IVF32,Flat", "ip", FP)
    assert m.recall_at_10 >= 0.95 and m.source_summary == {"rows_embedded": 4000, "fingerprint": FP}
    assert m.columns == ("question", "answer") and m.id_type == "string" and m.bytes_per_vector >= 48 * 4
    # row i of metadata.parquet is FAISS id i, and ids come back as the corpus' own
    meta = pq.read_table(out / str(index_store.current_version(out)) / index_store.METADATA_FILE)
    assert meta.column("id").to_pylist() == ids
    hits = IndexSearcher.open(out).search(vectors[[0, 1999, 3999]], top_k=2)
    assert [h[0]["id"] for h in hits] == [ids[0], ids[1999], ids[3999]]
    assert hits[1][0]["answer"] == "answer 1999"


def test_rollback_and_refusals_leave_current_alone(tmp_path: Path, vectors: np.ndarray, capsys) -> None:
    emb, out = tmp_path / "emb", tmp_path / "idx"
    write_corpus(emb, vectors[:1000], files=2, string_ids=False)
    assert build_index.main(["--embeddings", str(emb), "--out", str(out)]) == 0
    first = index_store.current_version(out)
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--metric", "l2"]) == 0
    second = index_store.current_version(out)
    assert second != first and IndexSearcher.open(out).manifest.metric == "l2"

    def refused(corpus: Path, message: str) -> None:
        assert build_index.main(["--embeddings", str(corpus), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert index_store.current_version(out) == second
        assert not [p for p in out.iterdir() if p.name.startswith(".staging")]

    mixed = tmp_path / "mixed"
    write_corpus(mixed, vectors[:100], files=1)
    write_embeddings_parquet(mixed / "part-00009.parquet", ["x"], vectors[:1], QA, fingerprint="sha256:other")
    refused(mixed, "different model artifacts")
    dims = tmp_path / "dims"
    write_corpus(dims, vectors[:100], files=1)
    write_embeddings_parquet(dims / "part-00009.parquet", ["x"], vectors[:1, :16], QA, fingerprint=FP)
    refused(dims, "dimension")
    dupes = tmp_path / "dupes"
    write_corpus(dupes, vectors[:100], files=1)
    write_embeddings_parquet(dupes / "part-00009.parquet", ["q00007"], vectors[:1], QA, fingerprint=FP)
    refused(dupes, "duplicate id")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no embeddings files")

    assert build_index.main(["--out", str(out), "--rollback"]) == 0
    assert index_store.current_version(out) == first
    assert IndexSearcher.open(out).manifest.metric == "ip"


@pytest.mark.slow  # about 2 s: out of the fast tier (docs/development.md)
def test_a_version_below_the_recall_target_is_never_published(
    tmp_path: Path, vectors: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    emb, out = tmp_path / "emb", tmp_path / "idx"
    write_corpus(emb, vectors, files=1)
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--factory", "Flat"]) == 0
    live = index_store.current_version(out)
    # 4-byte PQ codes of 48-dim clustered vectors cannot rank the true top 10 well enough.
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--factory", "PQ4x4"]) == 2
    err = capsys.readouterr().err
    assert "recall@10" in err and "< target 0.95" in err and "not published" in err
    assert index_store.current_version(out) == live and index_store.list_versions(out) == [live]


def test_over_the_memory_budget_auto_builds_a_compressed_index_that_passes_the_gate(
    tmp_path: Path, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb, out = tmp_path / "emb", tmp_path / "idx"
    write_corpus(emb, vectors, files=2)
    # Full float32 vectors (4000 x 48 x 4 B) do not fit this budget; one byte per dimension does.
    monkeypatch.setenv("QM_INDEX_FLAT_MAX", "1000")
    monkeypatch.setenv("QM_INDEX_MEMORY_BUDGET_BYTES", str(4000 * 48 * 2))
    assert build_index.main(["--embeddings", str(emb), "--out", str(out)]) == 0
    m = IndexSearcher.open(out, expected_fingerprint=FP).manifest
    assert m.factory.startswith("IVF") and m.factory.endswith(",SQ8")
    assert m.recall_at_10 >= 0.95 and m.bytes_per_vector < 48 * 4 / 2


@pytest.mark.slow
@pytest.mark.ray
def test_sharded_build_equals_single_machine_build(tmp_path: Path, local_ray: str) -> None:
    from jobs.build_index.shards import add_sharded

    corpus = clustered_vectors(12_000, 48, seed=9)
    emb = tmp_path / "emb"
    write_corpus(emb, corpus, files=4)
    info = inspect_embeddings(emb)
    cfg = IndexConfig(add_batch_rows=1_000)
    trained = VectorIndex.create(48, "IVF64,Flat", "ip")
    trained.train(corpus[::4])
    queries = corpus[::97]

    single = VectorIndex.from_bytes(trained.to_bytes(), trained.factory, "ip")
    single.add(corpus, np.arange(len(corpus)))
    sharded, truth = add_sharded(
        VectorIndex.from_bytes(trained.to_bytes(), trained.factory, "ip"), info, queries, 11, 2, cfg
    )
    assert sharded.size == single.size == len(corpus)
    for index in (single, sharded):
        index.set_search_params({"nprobe": 8})
    s1, i1 = single.search(queries, 10)
    s2, i2 = sharded.search(queries, 10)
    np.testing.assert_array_equal(i1, i2)  # same quantizer, same lists: same answers
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    exact = VectorIndex.create(48, "Flat", "ip")
    exact.add(corpus)
    np.testing.assert_array_equal(truth, exact.search(queries, 11)[1])  # merged partial top-k is exact

    # and through the job: --shards publishes a version whose recall matches a local build
    out = tmp_path / "idx"
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--shards", "2"]) == 0
    m = IndexSearcher.open(out).manifest
    assert m.shards == 2 and m.count == 12_000 and m.factory.startswith("IVF") and m.recall_at_10 >= 0.95
    hits = IndexSearcher.open(out).search(corpus[[0, 11_999]], top_k=1)
    assert [h[0]["id"] for h in hits] == ["q00000", "q11999"]
