"""Grouped search (index/groups.py) on real FAISS indexes built by the project's index code,
checked against brute force over every stored vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedder.errors import InvalidInput
from index.faiss_index import VectorIndex
from index.filtered_search import FilterSearchConfig
from index.groups import CAPPED, EXHAUSTED, FILLED, GroupBy, GroupSearchConfig, group_keys, search_groups
from index.tuning import build_in_memory
from testkit.vectors import clustered_vectors

DIM, N, GROUPS = 32, 4000, 400
# Small indexes take the exact plan by default (index/filtered_search.py); these limits make the
# planner use the ANN index itself, which is what must widen correctly.
ANN_PLAN = FilterSearchConfig(exact_min_rows=0, exact_max_rows=64)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered_vectors(N, DIM, seed=3, topics=40, subtopics=8)
    keys = np.random.default_rng(4).integers(0, GROUPS, N).astype(np.int64)
    queries = clustered_vectors(20, DIM, seed=5, topics=40, subtopics=8)
    return vectors, keys, queries


@pytest.fixture(scope="module", params=["Flat", "IVF64,Flat", "HNSW32"])
def index(request: pytest.FixtureRequest, corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> VectorIndex:
    built, _ = build_in_memory(corpus[0], request.param)
    return built


def brute_groups(
    q: np.ndarray, vectors: np.ndarray, keys: np.ndarray, k: int, size: int, mask: np.ndarray | None = None
) -> list[tuple[int, list[int]]]:
    """(group, its best `size` rows) of the k groups with the best single score, by scoring every row."""
    scores = vectors @ q
    rows = np.flatnonzero(mask if mask is not None else np.ones(len(keys), bool))
    by_group: dict[int, list[int]] = {}
    for r in rows[np.argsort(-scores[rows], kind="stable")]:
        by_group.setdefault(int(keys[r]), []).append(int(r))
    ranked = sorted(by_group.items(), key=lambda kv: -scores[kv[1][0]])[:k]
    return [(g, members[:size]) for g, members in ranked]


def as_groups(rows: np.ndarray, keys: np.ndarray) -> list[tuple[int, list[int]]]:
    out: list[tuple[int, list[int]]] = []
    for r in rows.tolist():
        if out and out[-1][0] == keys[r]:
            out[-1][1].append(r)
        else:
            out.append((int(keys[r]), [r]))
    return out


@pytest.mark.parametrize("size", [1, 3])
def test_top_groups_match_brute_force_with_exact_scores(
    index: VectorIndex, corpus: tuple[np.ndarray, np.ndarray, np.ndarray], size: int
) -> None:
    vectors, keys, queries = corpus
    k = 10
    found = search_groups(index, queries, keys, k, GroupBy("g", size), "g", filter_cfg=ANN_PLAN)
    recalls = []
    for q, got in zip(queries, found, strict=True):
        groups = as_groups(got.rows, keys)
        # distinct groups, each a consecutive run of at most `size` rows, best group first
        assert len({g for g, _ in groups}) == len(groups) == k == got.info.groups
        assert all(1 <= len(m) <= size for _, m in groups)
        np.testing.assert_allclose(got.scores, vectors[got.rows] @ q, rtol=1e-5, atol=1e-5)  # exact scores
        best = [got.scores[got.rows.tolist().index(m[0])] for _, m in groups]
        assert best == sorted(best, reverse=True)
        want = brute_groups(q, vectors, keys, k, size)
        if index.factory == "Flat":
            assert groups == want and got.info.stopped == FILLED
        recalls.append(len({g for g, _ in groups} & {g for g, _ in want}) / k)
    # Grouping costs the ANN index no recall: its groups are found as often as the ungrouped
    # search finds the true top-k rows of the same queries.
    _, ids = index.search(queries, k)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    plain = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), exact.tolist(), strict=True)])
    assert np.mean(recalls) >= plain - 0.03, (recalls, plain)


def test_widens_until_k_groups_when_the_best_candidates_are_all_one_group() -> None:
    rng = np.random.default_rng(0)
    q = np.zeros(DIM, np.float32)
    q[0] = 1.0
    # 600 rows of group 0 right next to the query; 300 groups of 10 rows each much further away.
    near = q + 0.05 * rng.standard_normal((600, DIM)).astype(np.float32)
    far = clustered_vectors(3000, DIM, seed=9, topics=30, subtopics=4)
    vectors = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), far]).astype(np.float32)
    keys = np.concatenate([np.zeros(600, np.int64), 1 + np.arange(3000) // 10])
    for factory in ("Flat", "IVF64,Flat"):
        index, _ = build_in_memory(vectors, factory)
        (got,) = search_groups(index, q[None, :], keys, 5, GroupBy("g"), "g", filter_cfg=ANN_PLAN)
        groups = as_groups(got.rows, keys)
        assert len(groups) == 5 and groups[0][0] == 0, groups  # a top-k x 4 pool would hold group 0 only
        assert got.info.stopped == FILLED and got.info.candidates > 600
        if factory == "Flat":
            assert groups == brute_groups(q, vectors, keys, 5, 1)
        # The cap holds: past it the answer says so instead of scanning on.
        capped = search_groups(
            index,
            q[None, :],
            keys,
            5,
            GroupBy("g"),
            "g",
            mask=None,
            cfg=GroupSearchConfig(max_candidates=256),
        )[0]
        assert capped.info.stopped == CAPPED and capped.info.candidates == 256
        assert [g for g, _ in as_groups(capped.rows, keys)] == [0]


def test_fewer_groups_than_asked_is_exhausted_and_hits_count_every_row(
    corpus: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    vectors, _, queries = corpus
    keys = np.arange(N, dtype=np.int64) % 3  # three groups only
    index, _ = build_in_memory(vectors, "IVF64,Flat")
    for got in search_groups(index, queries[:3], keys, 5, GroupBy("g", 2), "g", filter_cfg=ANN_PLAN):
        assert got.info.groups == 3 and got.info.stopped == EXHAUSTED and got.info.candidates == N
        assert sorted(set(got.group_hits.tolist())) == sorted(set(np.bincount(keys).tolist()))


def test_filter_and_min_score_bound_the_candidates(
    index: VectorIndex, corpus: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    vectors, keys, queries = corpus
    mask = np.random.default_rng(7).random(N) < 0.3
    for q, got in zip(
        queries[:5], search_groups(index, queries[:5], keys, 8, GroupBy("g"), "g", mask), strict=True
    ):
        assert mask[got.rows].all()
        if index.factory == "Flat":
            assert as_groups(got.rows, keys) == brute_groups(q, vectors, keys, 8, 1, mask)
    # A threshold few rows pass: every passing row is seen, so group_hits is the exact count per group.
    q = queries[0]
    floor = float(np.sort(vectors @ q)[-25])
    (got,) = search_groups(
        index, q[None, :], keys, 50, GroupBy("g", min_score=floor), "g", filter_cfg=ANN_PLAN
    )
    passing = (vectors @ q) >= floor
    assert (got.scores >= floor).all() and got.info.stopped == EXHAUSTED
    if index.factory == "Flat":
        assert got.info.candidates == passing.sum()
        for r, hits in zip(got.rows.tolist(), got.group_hits.tolist(), strict=True):
            assert hits == int((passing & (keys == keys[r])).sum())


def test_group_keys_of_metadata_columns() -> None:
    table = pa.table(
        {
            "id": [1, 2, 3, 4],
            "answer": ["a", None, "b", "a"],
            "answer_id": [7, 7, 9, 8],
            "weight": [0.1, 0.2, 0.3, 0.4],
        }
    )
    codes = group_keys(table, "answer")
    assert codes[1] == -1 and codes[0] == codes[3] != codes[2]  # null: no group
    ids = group_keys(table, "answer_id")
    assert ids[0] == ids[1] and len(set(ids.tolist())) == 3
    with pytest.raises(
        InvalidInput, match=r"'nope' is not a column .*columns: id, answer, answer_id, weight"
    ):
        group_keys(table, "nope")
    with pytest.raises(InvalidInput, match="'weight' holds double"):
        group_keys(table, "weight")


def test_rows_without_a_group_value_are_never_returned(
    corpus: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    vectors, keys, queries = corpus
    index, _ = build_in_memory(vectors, "Flat")
    nulls = keys.copy()
    nulls[::2] = -1
    for got in search_groups(index, queries[:3], nulls, 10, GroupBy("g"), "g"):
        assert (nulls[got.rows] >= 0).all() and got.info.groups == 10


def test_an_ivf_version_without_filter_columns_groups_and_counts_its_row_map(
    tmp_path: Path, corpus: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    from index.prompt import NO_PROMPT
    from index.searcher import IndexSearcher
    from testkit.serve_index import publish_table

    vectors, keys, queries = corpus
    table = pa.table({"id": np.arange(N), "answer": [f"a{k}" for k in keys.tolist()]})
    publish_table(tmp_path, vectors, table, "sha256:test", NO_PROMPT, "IVF64,Flat")
    searcher = IndexSearcher.open(tmp_path)
    before = searcher.memory_bytes
    records, found, selected = searcher.search_groups(queries[:2], 5, "answer", GroupBy("answer"))
    assert selected is None and all(len({r["answer"] for r in row}) == 5 for row in records)
    assert [g.info.groups for g in found] == [5, 5]
    assert [r["group_value"] for r in records[0]] == [r["answer"] for r in records[0]]
    # its per-row codes (4 bytes) and, for the exact plan, the IVF row map (8 bytes) are now resident
    assert searcher.memory_bytes - before == N * (4 + 8)
