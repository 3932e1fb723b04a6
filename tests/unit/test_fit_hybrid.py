"""Alpha and the hybrid threshold fitted together (index/evaluation.py, index/hybrid.py), stored in the
version, read back by the follower and applied to hybrid /match; grouped lexical / hybrid search widens.

No model: hand-made vectors whose dense and lexical signals are known, real FAISS and npz files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from index.evaluation import Labelled, calibrate, evaluate, fit_alpha, ranked
from index.follower import IndexFollower
from index.groups import EXHAUSTED, FILLED, GroupBy
from index.hybrid import HYBRID_FILE, TextQuery, default_hybrid, write_hybrid
from index.prompt import NO_PROMPT
from index.searcher import IndexSearcher
from testkit.serve_index import publish_table

FP = "sha256:fit-hybrid"
DIM, ANSWERS, FAMILIES = 16, 60, 6  # two stored phrasings per answer, answers in families


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus() -> tuple[pa.Table, np.ndarray]:
    """Answers of one family embed almost alike (dense cannot tell them apart); each names its code."""
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(FAMILIES, DIM)))
    rows = [(a, p) for a in range(ANSWERS) for p in range(2)]
    questions = [
        f"what does error E-{1000 + a} mean" if p == 0 else f"my device shows E-{1000 + a}" for a, p in rows
    ]
    vectors = unit(centres[[a % FAMILIES for a, _ in rows]] + 0.02 * rng.normal(size=(len(rows), DIM)))
    table = pa.table(
        {
            "id": pa.array(np.arange(len(rows), dtype=np.int64)),
            "question": questions,
            "answer": [f"answer {a}" for a, _ in rows],
        }
    )
    return table, vectors


def labels_naming(codes: list[int], vectors_of: list[int], table: pa.Table) -> tuple[Labelled, np.ndarray]:
    """Queries whose text names code `codes[i]` and whose vector is answer `vectors_of[i]`'s family centre."""
    rng = np.random.default_rng(1)
    ids = table.column("id").to_pylist()
    answers = table.column("answer").to_pylist()
    _, vectors = corpus()
    family = np.asarray([(i // 2) % FAMILIES for i in range(len(vectors))])
    centres = np.stack([vectors[family == f].mean(0) for f in range(FAMILIES)])
    q = unit(centres[[a % FAMILIES for a in vectors_of]] + 0.01 * rng.normal(size=(len(codes), DIM)))
    relevant = [
        frozenset(i for i, ans in zip(ids, answers, strict=True) if ans == f"answer {a}") for a in vectors_of
    ]
    return Labelled([f"is E-{1000 + c} bad" for c in codes], relevant), q


@pytest.fixture()
def root(tmp_path: Path) -> tuple[Path, str]:
    table, vectors = corpus()
    return tmp_path, publish_table(tmp_path, vectors, table, FP, NO_PROMPT)


def test_words_that_mislead_fit_alpha_1_and_hybrid_is_then_dense(root: tuple[Path, str]) -> None:
    path, _ = root
    searcher = IndexSearcher.open(path)
    table = searcher.loaded.metadata
    # Each query's vector is its answer's own stored vector; its text names another answer's code.
    asked = list(range(0, ANSWERS, 2))
    rng = np.random.default_rng(2)
    misleading = [(a + 1 + int(rng.integers(0, ANSWERS - 1))) % ANSWERS for a in asked]
    labels, _ = labels_naming(misleading, asked, table)
    _, stored = corpus()
    q = stored[[2 * a for a in asked]]
    fitted = fit_alpha(searcher, q, labels)
    by_alpha = {p["alpha"]: p["mrr@10"] for p in fitted["grid"]}
    assert by_alpha[0.0] < by_alpha[1.0]  # the words do hurt here
    assert fitted["alpha"] == 1.0
    modes = evaluate(searcher, q, labels, fitted["alpha"])
    assert modes["hybrid"] == modes["dense"]
    dense, hybrid = (ranked(searcher, q, labels.queries, m, fitted["alpha"]) for m in ("dense", "hybrid"))
    assert [[r["id"] for r in row] for row in hybrid] == [[r["id"] for r in row] for row in dense]
    t_dense, t_hybrid = (calibrate(r, labels.relevant, 0.9) for r in (dense, hybrid))
    assert t_hybrid["threshold"] == pytest.approx(t_dense["threshold"], abs=1e-6)
    assert t_hybrid["precision"] == t_dense["precision"] and t_hybrid["recall"] == t_dense["recall"]


def test_the_stored_alpha_and_threshold_are_read_back_and_applied_to_hybrid_match(
    root: tuple[Path, str],
) -> None:
    path, version = root
    searcher = IndexSearcher.open(path)
    table = searcher.loaded.metadata
    asked = list(range(ANSWERS))
    labels, q = labels_naming(asked, asked, table)  # the text names the right code: words help
    fitted = fit_alpha(searcher, q, labels)
    alpha = fitted["alpha"]
    modes = evaluate(searcher, q, labels, alpha)
    assert alpha < 1.0 and modes["hybrid"]["mrr@10"] > modes["dense"]["mrr@10"]
    threshold = calibrate(ranked(searcher, q, labels.queries, "hybrid", alpha), labels.relevant, 0.9)
    assert threshold["threshold"] is not None and threshold["precision"] >= 0.9

    write_hybrid(str(path), version, alpha, FP, {"modes": modes}, "test", threshold)
    read = default_hybrid(path, version, FP)
    assert (read.alpha, read.min_score, read.from_version) == (alpha, threshold["threshold"], version)
    follower = IndexFollower(str(path), FP, poll_s=3600)
    try:
        result = follower.search(q[:3], 10, query=TextQuery("hybrid", tuple(labels.queries[:3])))
        assert (result.alpha, result.default_min_score) == (alpha, threshold["threshold"])
        # /match drops matches under default_min_score (service/core.py); some fall under it here.
        assert any(m.score < threshold["threshold"] for row in result.matches for m in row)
        # Grouped, the threshold bounds the candidates themselves.
        grouped = follower.search(
            q[:3], 10, group=GroupBy("answer"), query=TextQuery("hybrid", tuple(labels.queries[:3]))
        )
        assert all(m.score >= threshold["threshold"] for row in grouped.matches for m in row)
        # Lexical (BM25) and dense (cosine) scores are on other scales: not this threshold.
        assert follower.search(q[:1], 5, query=TextQuery("lexical", ("E-1000",))).default_min_score is None
        dense = follower.search(q[:1], 5, query=TextQuery("dense", ("E-1000",)))
        assert dense.default_min_score is None  # no thresholds.json: none for dense
    finally:
        follower.close()
    (path / version / HYBRID_FILE).write_text("[1, 2]")
    with pytest.raises(Exception, match="expected a JSON object"):
        default_hybrid(path, version, FP)


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_grouped_text_modes_widen_until_k_groups_fill(tmp_path: Path, mode: str) -> None:
    # 400 phrasings of 4 answers first (they all name the query's word and embed near it),
    # then 40 answers of one row each: the first 100 candidates hold only 4 groups.
    rng = np.random.default_rng(3)
    near, far = 400, 40
    q = unit(rng.normal(size=(1, DIM)))
    vectors = np.concatenate(
        [unit(q + 0.05 * rng.normal(size=(near, DIM))), unit(q + 0.6 * rng.normal(size=(far, DIM)))]
    )
    table = pa.table(
        {
            "id": pa.array(np.arange(near + far, dtype=np.int64)),
            "question": [f"refund question {i}" for i in range(near)]
            + [f"refund other {i}" for i in range(far)],
            "answer": [f"a{i % 4}" for i in range(near)] + [f"b{i}" for i in range(far)],
        }
    )
    publish_table(tmp_path, vectors, table, FP, NO_PROMPT)
    searcher = IndexSearcher.open(tmp_path)
    got, infos, _ = searcher.search_text(
        q, ("refund question",), 10, mode, 0.5, None, "answer", GroupBy("answer")
    )
    answers = [m["answer"] for m in got[0]]
    assert len(answers) == 10 and len(set(answers)) == 10
    assert infos is not None and infos[0].stopped == FILLED and infos[0].candidates > 100
    # More groups than exist: widened until every row was a candidate.
    _, infos, _ = searcher.search_text(q, ("refund",), 50, mode, 0.5, None, "answer", GroupBy("answer"))
    assert infos is not None and infos[0].stopped == EXHAUSTED and infos[0].groups == 44
