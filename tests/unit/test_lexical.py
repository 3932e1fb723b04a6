"""The lexical (BM25) index and hybrid search on real files: tokenizer, scores against an independent
BM25, stored and reloaded, broken versions refused, hybrid fusion recomputed by brute force, the
follower's modes and hot swap under load (no model: random vectors, real FAISS and npz files)."""

from __future__ import annotations

import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedder.errors import InvalidInput
from index import store as index_store
from index.errors import IndexInvalid
from index.filters import parse_filter
from index.follower import IndexFollower
from index.groups import GroupBy
from index.hybrid import TextQuery, write_hybrid
from index.lexical import LEXICAL_FILE, LexicalIndex, tokenize
from index.prompt import NO_PROMPT
from index.searcher import IndexSearcher
from testkit.serve_index import publish_table
from testkit.waiting import wait_until

FP = "sha256:lexical"
WORDS = [
    "reset",
    "password",
    "order",
    "ship",
    "refund",
    "error",
    "code",
    "printer",
    "router",
    "account",
    "email",
    "invoice",
]


def test_tokenizer_keeps_codes_whole_and_splits_them() -> None:
    assert tokenize("Error E-1042 on v2.3.1, SKU_88.") == [
        "error", "e-1042", "e", "1042", "on", "v2.3.1", "v2", "3", "1", "sku_88", "sku", "88",
    ]  # fmt: skip


def test_tokenizer_gives_cjk_unigrams_and_bigrams_and_lowercases() -> None:
    assert tokenize("密码重置 HELLO") == ["密", "码", "重", "置", "密码", "码重", "重置", "hello"]
    assert tokenize("パスワード") == ["パ", "ス", "ワ", "ー", "ド", "パス", "スワ", "ワー", "ード"]
    assert tokenize("E-1042错误") == ["e-1042", "e", "1042", "错", "误", "错误"]


def reference_bm25(docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 written out per document (Lucene idf), independent of the index's vectorised build."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    df = Counter(t for d in docs for t in set(d))
    out = np.zeros(n)
    for i, d in enumerate(docs):
        tf = Counter(d)
        for t in query:
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[i] += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return out


def corpus(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 9))) + f" E-{1000 + i % 40}" for i in range(n)]
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "question": texts,
            "answer": [f"a{i % 25}" for i in range(n)],
            "category": ["x" if i % 3 else "y" for i in range(n)],
        }
    )


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def publish(root: Path, n: int = 300, seed: int = 0, lexical: bool = True) -> str:
    table = corpus(n, seed)
    return publish_table(
        root,
        vectors(n, seed),
        table,
        FP,
        NO_PROMPT,
        filter_columns=("category",),
        lexical_column="question" if lexical else None,
    )


def test_bm25_scores_stored_and_reloaded_equal_an_independent_bm25(tmp_path: Path) -> None:
    table = corpus(200, 1)
    version = publish(tmp_path, 200, 1)
    assert (tmp_path / version / LEXICAL_FILE).is_file()
    loaded = index_store.open_version(tmp_path, version)  # reads lexical.npz back from the version
    assert loaded.lexical is not None and loaded.manifest.lexical["column"] == "question"
    docs = [tokenize(t) for t in table.column("question").to_pylist()]
    for q in ("reset password E-1007", "printer error", "nothing matches zzz"):
        np.testing.assert_allclose(loaded.lexical.scores(q), reference_bm25(docs, tokenize(q)), rtol=1e-5)


def test_a_missing_or_broken_lexical_file_refuses_the_version(tmp_path: Path) -> None:
    version = publish(tmp_path)
    path = tmp_path / version / LEXICAL_FILE
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IndexInvalid):
        index_store.open_version(tmp_path, version)
    path.unlink()
    with pytest.raises(IndexInvalid, match="lexical.npz"):
        index_store.open_version(tmp_path, version)
    with pytest.raises(IndexInvalid):
        LexicalIndex.load(tmp_path / "nothing.npz", 3)


def expected_hybrid(
    table: pa.Table, vecs: np.ndarray, q: np.ndarray, text: str, alpha: float, mask: np.ndarray, n: int
):
    """Brute force: dense top-n and lexical top-n within mask, union, alpha*cos + (1-alpha)*bm25/max."""
    docs = [tokenize(t) for t in table.column("question").to_pylist()]
    dense, bm25 = vecs @ q, reference_bm25(docs, tokenize(text))
    rows = np.flatnonzero(mask)
    d_top = rows[np.argsort(-dense[rows], kind="stable")[:n]]
    lex = rows[bm25[rows] > 0]
    l_top = lex[np.argsort(-bm25[lex], kind="stable")[:n]]
    union = np.union1d(d_top, l_top)
    top = bm25[union].max()
    fused = alpha * dense[union] + (1 - alpha) * (bm25[union] / top if top > 0 else 0)
    order = np.argsort(-fused, kind="stable")
    return union[order], fused[order]


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_hybrid_matches_brute_force_fusion_with_and_without_a_filter(tmp_path: Path, alpha: float) -> None:
    n = 300
    publish(tmp_path, n, 2)
    searcher = IndexSearcher.open(tmp_path)
    table, vecs = corpus(n, 2), vectors(n, 2)
    q = vectors(1, 99)
    text = "refund invoice E-1013"
    for flt, mask in ((None, np.ones(n, bool)), ({"category": "y"}, np.arange(n) % 3 == 0)):
        parsed = None if flt is None else parse_filter(flt, searcher.filter_schema)
        got, _, _ = searcher.search_text(q, (text,), 10, "hybrid", alpha, parsed)
        rows, scores = expected_hybrid(table, vecs, q[0], text, alpha, mask, 100)
        assert [m["id"] for m in got[0]] == rows[:10].tolist()
        np.testing.assert_allclose([m["score"] for m in got[0]], scores[:10], rtol=1e-4, atol=1e-5)


def test_hybrid_groups_after_fusion(tmp_path: Path) -> None:
    n = 300
    publish(tmp_path, n, 3)
    searcher = IndexSearcher.open(tmp_path)
    table, q, text = corpus(n, 3), vectors(1, 7), "password router E-1020"
    got, infos, _ = searcher.search_text(q, (text,), 4, "hybrid", 0.5, None, "answer", GroupBy("answer", 2))
    rows, _ = expected_hybrid(table, vectors(n, 3), q[0], text, 0.5, np.ones(n, bool), 100)
    answers = table.column("answer").to_pylist()
    want: dict[str, list[int]] = {}
    for r in rows.tolist():  # best-first groups, each its best two rows
        if len(want) < 4 or answers[r] in want:
            want.setdefault(answers[r], [])
            if len(want[answers[r]]) < 2:
                want[answers[r]].append(r)
    assert [m["id"] for m in got[0]] == [r for g in want.values() for r in g]
    assert infos is not None and infos[0].groups == 4


def test_follower_modes_alpha_file_and_422s(tmp_path: Path) -> None:
    version = publish(tmp_path)
    follower = IndexFollower(str(tmp_path), FP, poll_s=0.05, name="faq")
    try:
        q = vectors(1, 5)
        dense = follower.search(q, 5)
        assert dense.mode == "dense" and dense.alpha is None
        assert follower.search(q, 5, query=TextQuery("hybrid", ("x",))).alpha == 1.0  # unfitted: dense weight
        with pytest.raises(InvalidInput, match="mode"):
            follower.check(None, None, TextQuery("sparse", ("x",)))
        write_hybrid(str(tmp_path), version, 0.3, FP, {}, "test")
        wait_until(lambda: follower.status().get("hybrid_alpha") == 0.3, 10, "alpha picked up")
        used = follower.search(q, 5, query=TextQuery(None, ("reset password",)))  # the fitted default mode
        assert (used.mode, used.alpha) == ("hybrid", 0.3)
        assert follower.status()["default_mode"] == "hybrid"
    finally:
        follower.close()
    bare = tmp_path / "bare"
    bare.mkdir()
    publish(bare, lexical=False)
    old = IndexFollower(str(bare), FP, name="old")
    try:
        assert old.search(vectors(1, 5), 3).mode == "dense"
        with pytest.raises(InvalidInput, match="collection 'old'.*no lexical index"):
            old.check(None, None, TextQuery("lexical", ("x",)))
    finally:
        old.close()


def test_hot_swap_under_hybrid_load_fails_no_search(tmp_path: Path) -> None:
    publish(tmp_path, 300, 0)
    follower = IndexFollower(str(tmp_path), FP, poll_s=0.05)
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        q = vectors(2, 11)
        while not stop.is_set():
            try:
                r = follower.search(q, 5, query=TextQuery("hybrid", ("reset password", "E-1003 printer")))
                assert r.mode == "hybrid" and all(len(m) == 5 for m in r.matches)
                seen.add(r.index_version)
            except BaseException as exc:
                errors.append(exc)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        published = [publish(tmp_path, 300 + 50 * i, i) for i in range(1, 4)]
        wait_until(lambda: published[-1] in seen, 20, "the last version served under load")
    finally:
        stop.set()
        for w in workers:
            w.join()
        follower.close()
    assert not errors, errors[:3]
    assert follower.live is not None and follower.live.lexical is not None
    assert follower.live.lexical.count == 450


def test_chunked_build_gives_every_row_the_terms_tokenize_gives_its_text() -> None:
    # The build tokenizes each distinct whitespace chunk once; rows must still get exactly
    # tokenize(text)'s terms: codes, CJK runs, NFKC forms (full-width, no-break space), punctuation.
    texts = [
        "Error E-1042 on v2.3.1, SKU_88.",
        "密码重置 HELLO\u00a0world",
        "ＦＵＬＬ width Ｅ－１０４２?",
        None,
        "",
        "reset-password / reset password: reset!",
        "E-1042错误 tab\tseparated\nlines",
    ]
    index = LexicalIndex.build(texts)
    by_id = {i: t for t, i in index.terms.items()}
    for row, text in enumerate(texts):
        got: Counter[str] = Counter()
        for term_id in range(len(index.terms)):
            lo, hi = index.offsets[term_id], index.offsets[term_id + 1]
            if row in index.rows[lo:hi].tolist():
                got[by_id[term_id]] += 1
        want = Counter(tokenize(text)) if text else Counter()
        assert set(got) == set(want), (text, got, want)
