"""`build_index --update` on real parquet and FAISS: the next version from CURRENT without a full rebuild.

Day one: 4,000 clustered vectors. Day two: 100 ids deleted, 50 rows with new vectors, 200 new
rows, and 30 unchanged vectors whose answer text changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from index import store as index_store
from index.searcher import IndexSearcher
from jobs.build_index import cli as build_index
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.s3_server import S3Server
from testkit.vectors import clustered_vectors

FP = "sha256:cccccccccccccccc"
N, DIM = 4_000, 48
S3_BUCKET = "upd"  # the conftest `s3` fixture's bucket


def write_day(
    directory: Path, ids: list[str], vectors: np.ndarray, answers: list[str], files: int = 2
) -> None:
    for j, part in enumerate(np.array_split(np.arange(len(ids)), files)):
        write_embeddings_parquet(
            f"{directory}/part-{j:05d}.parquet",
            [ids[i] for i in part],
            vectors[part],
            {"answer": [answers[i] for i in part]},
            fingerprint=FP,
            row_group_rows=500,
        )


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("days")
    v1 = clustered_vectors(N, DIM, seed=5)
    ids1 = [f"q{i:05d}" for i in range(N)]
    answers1 = [f"answer {i}" for i in range(N)]
    write_day(base / "day1", ids1, v1, answers1)

    rng = np.random.default_rng(0)
    order = rng.permutation(N)
    deleted, changed, retexted = set(order[:100]), order[100:150], order[150:180]
    fresh = clustered_vectors(N + 250, DIM, seed=5)[N:]  # same centres (drawn first), other points
    v2 = v1.copy()
    v2[changed] = fresh[:50]
    answers2 = list(answers1)
    for i in retexted:
        answers2[i] = f"new answer {i}"
    keep = [i for i in range(N) if i not in deleted]
    ids2 = [ids1[i] for i in keep] + [f"n{i:04d}" for i in range(200)]
    vectors2 = np.concatenate([v2[keep], fresh[50:]])
    answers2 = [answers2[i] for i in keep] + [f"added {i}" for i in range(200)]
    # Day two's files are cut differently from day one's: the diff goes by id, not by position.
    write_day(base / "day2", ids2, vectors2, answers2, files=3)
    return {
        "base": base,
        "v1": v1,
        "ids2": ids2,
        "vectors2": vectors2,
        "deleted": [ids1[i] for i in sorted(deleted)],
        "deleted_vectors": v1[sorted(deleted)],
        "changed": [ids1[i] for i in changed],
        "changed_old": v1[changed],
        "changed_new": fresh[:50],
        "retexted": {ids1[i]: f"new answer {i}" for i in retexted},
    }


def search_all(root: Path, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> list:
    s = IndexSearcher.open(root)
    if nprobe is not None:
        s.loaded.index.set_search_params({"nprobe": nprobe})
    return s.search(queries, top_k=k)


def ids_scores(hits: list) -> tuple[list[list[str]], np.ndarray]:
    return [[h["id"] for h in q] for q in hits], np.array([[h["score"] for h in q] for q in hits])


def test_update_reuses_the_ivf_index_and_answers_like_a_full_rebuild(
    days: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, out = days["base"], tmp_path / "idx"
    assert (
        build_index.main(["--embeddings", str(base / "day1"), "--out", str(out), "--factory", "IVF32,Flat"])
        == 0
    )
    first = index_store.current_version(out)
    capsys.readouterr()
    assert build_index.main(["--embeddings", str(base / "day2"), "--out", str(out), "--update"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"updated {first}: +200 new, 50 changed, -100 removed, 3850 kept; CURRENT=")
    second = index_store.current_version(out)
    assert second != first and f"CURRENT={second}" in line
    m = IndexSearcher.open(out).manifest
    assert (m.factory, m.count, m.update["mode"], m.update["from_version"]) == (
        "IVF32,Flat",
        4_100,
        "update",
        first,
    )
    assert m.recall_at_10 >= 0.95

    # The reference: full rebuilds of day two, exact (Flat) and with the same factory.
    flat, ivf = tmp_path / "flat", tmp_path / "ivf"
    assert (
        build_index.main(["--embeddings", str(base / "day2"), "--out", str(flat), "--factory", "Flat"]) == 0
    )
    assert (
        build_index.main(["--embeddings", str(base / "day2"), "--out", str(ivf), "--factory", "IVF32,Flat"])
        == 0
    )
    # metadata.parquet is exactly what a full build writes (row i = FAISS id i, input order).
    meta = pq.read_table(out / str(second) / index_store.METADATA_FILE)
    assert meta.equals(pq.read_table(ivf / str(index_store.current_version(ivf)) / index_store.METADATA_FILE))
    # Searching every list, the updated IVF index returns what exact search over day two returns.
    queries = np.concatenate([days["vectors2"][::97], days["changed_new"][:10], days["deleted_vectors"][:10]])
    got_ids, got_scores = ids_scores(search_all(out, queries, nprobe=32))
    want_ids, want_scores = ids_scores(search_all(flat, queries))
    assert got_ids == want_ids
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)

    # Deleted ids never come back, not even for their own old vectors.
    hits = search_all(out, days["deleted_vectors"], k=20, nprobe=32)
    assert not {h["id"] for q in hits for h in q} & set(days["deleted"])
    assert not set(meta.column("id").to_pylist()) & set(days["deleted"])
    # Changed rows are found by their new vectors (and carry their row's metadata).
    top = search_all(out, days["changed_new"], k=1)
    assert [q[0]["id"] for q in top] == days["changed"]
    assert min(q[0]["score"] for q in top) > 0.999
    # Unchanged vectors whose answer changed return the new answer.
    some = list(days["retexted"])[:5]
    rows = [days["ids2"].index(i) for i in some]
    top = search_all(out, days["vectors2"][rows], k=1)
    assert [q[0]["answer"] for q in top] == [days["retexted"][i] for i in some]

    # Rollback returns to day one, which still has the deleted rows.
    assert build_index.main(["--out", str(out), "--rollback"]) == 0
    assert index_store.current_version(out) == first
    assert search_all(out, days["deleted_vectors"][:3], k=1)[0][0]["id"] == days["deleted"][0]


# PQ codes, a pre-transform in front of the IVF (IndexPreTransform: what OPQ uses, cheaper to
# train), and an HNSW coarse quantizer: all updated in place, none retrained.
# The PQ builds train codebooks (~7-17 s here): slow tier; the HNSW-quantizer case stays fast.
@pytest.mark.parametrize(
    "factory",
    [
        pytest.param("IVF16,PQ16x4", marks=pytest.mark.slow),
        pytest.param("PCA48,IVF16,PQ16x4", marks=pytest.mark.slow),
        "IVF16_HNSW32,Flat",
    ],
)
def test_compressed_and_hnsw_quantizer_ivf_indexes_update_in_place(
    days: dict[str, Any],
    tmp_path: Path,
    factory: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_INDEX_TARGET_RECALL", "0.3")  # 8-byte PQ codes of 48-dim vectors rank coarsely
    base, out, full = days["base"], tmp_path / "idx", tmp_path / "full"
    assert (
        build_index.main(["--embeddings", str(base / "day1"), "--out", str(out), "--factory", factory]) == 0
    )
    capsys.readouterr()
    assert build_index.main(["--embeddings", str(base / "day2"), "--out", str(out), "--update"]) == 0
    assert capsys.readouterr().out.startswith("updated ")
    assert (
        build_index.main(["--embeddings", str(base / "day2"), "--out", str(full), "--factory", factory]) == 0
    )
    updated, rebuilt = IndexSearcher.open(out).manifest, IndexSearcher.open(full).manifest
    assert (updated.factory, updated.count) == (factory, 4_100)
    # Codebooks trained on day one serve day two about as well as ones trained on day two.
    assert updated.recall_at_10 >= rebuilt.recall_at_10 - 0.03
    hits = search_all(out, days["deleted_vectors"], k=10, nprobe=16)
    assert not {h["id"] for q in hits for h in q} & set(days["deleted"])
    top = search_all(out, days["changed_new"], k=3, nprobe=16)
    assert all(want in [h["id"] for h in q] for want, q in zip(days["changed"], top, strict=True))


@pytest.mark.slow  # about 2 s: out of the fast tier (docs/development.md)
def test_flat_and_hnsw_fall_back_to_a_full_rebuild(
    days: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = days["base"]
    queries = np.concatenate([days["vectors2"][::211], days["deleted_vectors"][:5]])
    flat = tmp_path / "flat"
    assert (
        build_index.main(["--embeddings", str(base / "day1"), "--out", str(flat), "--factory", "Flat"]) == 0
    )
    capsys.readouterr()
    assert build_index.main(["--embeddings", str(base / "day2"), "--out", str(flat), "--update"]) == 0
    assert capsys.readouterr().out.startswith("full rebuild (Flat has nothing trained to reuse")
    reference = tmp_path / "reference"
    assert (
        build_index.main(["--embeddings", str(base / "day2"), "--out", str(reference), "--factory", "Flat"])
        == 0
    )
    got_ids, got_scores = ids_scores(search_all(flat, queries))
    want_ids, want_scores = ids_scores(search_all(reference, queries))
    assert got_ids == want_ids
    np.testing.assert_array_equal(got_scores, want_scores)

    hnsw = tmp_path / "hnsw"
    assert (
        build_index.main(["--embeddings", str(base / "day1"), "--out", str(hnsw), "--factory", "HNSW32"]) == 0
    )
    first = index_store.current_version(hnsw)
    capsys.readouterr()
    assert build_index.main(["--embeddings", str(base / "day2"), "--out", str(hnsw), "--update"]) == 0
    assert capsys.readouterr().out.startswith("full rebuild (HNSW32 cannot remove or relabel ids")
    m = IndexSearcher.open(hnsw).manifest
    assert index_store.current_version(hnsw) != first
    assert (m.factory, m.count, m.update["mode"], m.update["from_version"]) == (
        "HNSW32",
        4_100,
        "rebuild",
        first,
    )
    hits = search_all(hnsw, days["deleted_vectors"], k=10)
    assert not {h["id"] for q in hits for h in q} & set(days["deleted"])


def test_recall_drift_makes_the_update_retrain_from_scratch(
    days: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QM_INDEX_UPDATE_MAX_WIDEN", "1")  # no widening: recall must hold at the live nprobe
    v1, ids = days["v1"], [f"q{i:05d}" for i in range(N)]
    # 3,500 of 4,000 vectors replaced, once from day one's distribution (the generator's same
    # centres) and once from another region of the space, where the day-one centroids do not fit.
    same = np.concatenate([v1[:500], clustered_vectors(7_500, DIM, seed=5)[N:]])
    shifted = np.concatenate([v1[:500], clustered_vectors(3_500, DIM, seed=99)])
    lines = {}
    for name, vectors in (("same", same), ("shifted", shifted)):
        write_day(tmp_path / name, ids, vectors, [f"a{i}" for i in range(N)])
        out = tmp_path / f"idx-{name}"
        args = ["--embeddings", str(days["base"] / "day1"), "--out", str(out), "--factory", "IVF64,Flat"]
        assert build_index.main(args) == 0
        capsys.readouterr()
        assert build_index.main(["--embeddings", str(tmp_path / name), "--out", str(out), "--update"]) == 0
        lines[name] = capsys.readouterr().out.strip()
        m = IndexSearcher.open(out).manifest
        assert m.update["rows_changed"] == 3_500 and m.recall_at_10 >= 0.95 and m.count == N
        assert m.factory == "IVF64,Flat"
    assert lines["same"].startswith("updated ")
    assert lines["shifted"].startswith("retrained from scratch (updated ")
    assert "< target 0.95" in lines["shifted"]
    assert IndexSearcher.open(tmp_path / "idx-shifted").manifest.update["mode"] == "retrain"


def test_a_failed_update_leaves_current_alone_and_no_current_means_a_full_build(
    days: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, out = days["base"], tmp_path / "idx"
    args = ["--embeddings", str(base / "day1"), "--out", str(out), "--update", "--factory", "IVF32,Flat"]
    assert build_index.main(args) == 0
    assert capsys.readouterr().out.startswith("full rebuild (no CURRENT version to update)")
    assert IndexSearcher.open(out).manifest.factory == "IVF32,Flat"
    live = index_store.current_version(out)
    dupes = tmp_path / "dupes"
    write_day(dupes, ["a", "b", "a"], days["v1"][:3], ["x", "y", "z"], files=1)
    assert build_index.main(["--embeddings", str(dupes), "--out", str(out), "--update"]) == 2
    assert "duplicate id" in capsys.readouterr().err
    assert index_store.current_version(out) == live and index_store.list_versions(out) == [live]
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


def test_update_on_s3(
    days: dict[str, Any], s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("QM_CACHE_DIR", str(tmp_path / "cache"))
    v1 = days["v1"]
    ids = [f"q{i:05d}" for i in range(N)]
    write_day("s3://upd/day1", ids, v1, ["a"] * N)
    keep = list(range(100, N))
    write_day("s3://upd/day2", [ids[i] for i in keep], v1[keep], ["b"] * len(keep))
    root = "s3://upd/indexes/faq"
    assert build_index.main(["--embeddings", "s3://upd/day1", "--out", root, "--factory", "IVF32,Flat"]) == 0
    first = index_store.current_version(root)
    capsys.readouterr()
    assert build_index.main(["--embeddings", "s3://upd/day2", "--out", root, "--update"]) == 0
    assert capsys.readouterr().out.startswith(f"updated {first}: +0 new, 0 changed, -100 removed, 3900 kept")
    assert index_store.list_versions(root) == [first, index_store.current_version(root)]
    hits = IndexSearcher.open(root).search(v1[:100], top_k=5)
    assert not {h["id"] for q in hits for h in q} & set(ids[:100])
    assert IndexSearcher.open(root).search(v1[[200]], top_k=1)[0][0] == {
        "id": ids[200],
        "score": pytest.approx(1.0, abs=1e-5),
        "answer": "b",
    }
