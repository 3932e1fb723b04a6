"""index.faiss_index: factory choice, id mapping, metrics, save/load, recall of the auto choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.errors import InvalidInput
from index.errors import IndexInvalid
from index.faiss_index import IndexConfig, VectorIndex, choose_factory, full_vector_bytes, sq8_bytes
from index.tuning import ExactKnn, build_in_memory, recall_at_k
from testkit.vectors import clustered_vectors


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return clustered_vectors(5_000, 64, seed=3)


def test_factory_follows_corpus_size() -> None:
    cfg = IndexConfig()
    assert choose_factory(50_000, 384) == "Flat"
    ivf = choose_factory(500_000, 384)
    nlist = int(ivf.removeprefix("IVF").split(",")[0])
    # 4..16 x sqrt(N) lists, as a power of two
    assert ivf.endswith(",Flat") and 4 * 707 / 2 <= nlist <= 16 * 707
    # Full float32 vectors while they fit the memory budget (4 GiB: 2.78M at dim 384), SQ8 after.
    assert choose_factory(2_500_000, 384) == "IVF8192_HNSW32,Flat"
    assert choose_factory(3_000_000, 384) == "IVF8192_HNSW32,SQ8"
    assert choose_factory(10_000_000, 384) == "IVF8192_HNSW32,SQ8"  # nlist capped: training cost
    small_budget = IndexConfig(memory_budget_bytes=1024**3)
    assert choose_factory(1_000_000, 384, small_budget).endswith(",SQ8")
    # the 10M SQ8 index fits the 4 GiB goal of the ten-million issue
    assert sq8_bytes(10_000_000, 384) <= 4 * 1024**3 < full_vector_bytes(10_000_000, 384)
    assert choose_factory(50_000, 384, cfg, kind="hnsw") == "HNSW32"
    # a small corpus forced to IVF never gets more lists than it can train
    tiny = choose_factory(2_000, 64, cfg, kind="ivf")
    assert int(tiny.removeprefix("IVF").split(",")[0]) * cfg.train_per_list <= 2 * 2_000


def test_every_chosen_factory_builds() -> None:
    for n in (1_000, 200_000, 2_000_000, 20_000_000):
        index = VectorIndex.create(384, choose_factory(n, 384), "ip")
        assert index.dimension == 384


def test_bad_factory_and_metric_are_clear_errors() -> None:
    with pytest.raises(InvalidInput, match="factory"):
        VectorIndex.create(8, "NoSuchIndex", "ip")
    with pytest.raises(InvalidInput, match="metric"):
        VectorIndex.create(8, "Flat", "cosine")


def test_search_returns_own_row_first_and_scores_sorted(small: np.ndarray) -> None:
    index, _ = build_in_memory(small, "IVF64,Flat", "ip")
    scores, ids = index.search(small[:200], 5)
    assert (ids[:, 0] == np.arange(200)).mean() > 0.99
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)  # cosine of a unit vector with itself


def test_l2_scores_are_negated_squared_distances(small: np.ndarray) -> None:
    index, report = build_in_memory(small, "Flat", "l2")
    scores, ids = index.search(small[:10] * 0.5, 3)
    want = -(((small[ids[:, 0]] - small[:10] * 0.5) ** 2).sum(axis=1))
    np.testing.assert_allclose(scores[:, 0], want, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # higher is better for l2 too
    assert report.recall_at_10 == 1.0


def test_ivf_keeps_given_ids(small: np.ndarray) -> None:
    index = VectorIndex.create(64, "IVF32,Flat", "ip")
    index.train(small)
    ids = np.arange(len(small)) * 7 + 1_000_000
    index.add(small, ids)
    _, got = index.search(small[:50], 1)
    assert (got[:, 0] == ids[:50]).mean() > 0.98


def test_flat_refuses_out_of_order_ids(small: np.ndarray) -> None:
    index = VectorIndex.create(64, "Flat", "ip")
    index.add(small[:10], np.arange(10))
    with pytest.raises(IndexInvalid):
        index.add(small[10:20], np.arange(100, 110))


def test_save_load_round_trip_keeps_results_and_params(small: np.ndarray, tmp_path: Path) -> None:
    index, _ = build_in_memory(small, "IVF64,Flat", "ip", IndexConfig(nprobe=4, target_recall=0.999))
    before = index.search(small[:100], 10)
    path = tmp_path / "x.faiss"
    size = index.save(path)
    loaded = VectorIndex.load(path, index.factory, index.metric, index.search_params)
    after = loaded.search(small[:100], 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    assert loaded.ivf is not None and loaded.ivf.nprobe == index.search_params["nprobe"]
    assert size / loaded.size == pytest.approx(loaded.bytes_per_vector(), rel=0.01)
    assert loaded.bytes_per_vector() >= 64 * 4  # IVF-Flat stores the full vector


def test_exact_knn_streamed_equals_one_shot(small: np.ndarray) -> None:
    q = small[:20]
    streamed = ExactKnn(q, 11, "ip")
    for a in range(0, len(small), 700):
        streamed.update(small[a : a + 700])
    one = ExactKnn(q, 11, "ip")
    one.update(small)
    np.testing.assert_array_equal(streamed.ids, one.ids)


def test_recall_measures_a_bad_index_as_bad(small: np.ndarray) -> None:
    index, _ = build_in_memory(small, "IVF64,Flat", "ip", IndexConfig(max_nprobe=1, nprobe=1))
    assert recall_at_k(index, small, 300) < 0.9
    index.set_search_params({"nprobe": 64})  # nprobe = nlist is exhaustive
    assert recall_at_k(index, small, 300) == 1.0


@pytest.mark.slow
def test_auto_ivf_reaches_recall_on_100k_clustered_corpus() -> None:
    # dim 384 (all-MiniLM-L6-v2's), clustered like sentence embeddings (see clustered_vectors)
    vectors = clustered_vectors(100_000, 384, seed=7)
    index, report = build_in_memory(vectors, "auto", "ip")
    assert index.factory.startswith("IVF") and index.size == 100_000
    assert report.recall_at_10 >= 0.95
    # independently of the tuning loop: recall on other sampled rows
    assert recall_at_k(index, vectors, np.arange(5, 100_000, 200)) >= 0.95
