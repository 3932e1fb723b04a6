"""Lexical index benchmark: BM25 build and query time (ours vs bm25s), and the issue-27 perf goals.

    python -m bench.lexical --rows 100000 [--queries 200] [--dim 384] [--out bench/results/lexical.json]

Questions are synthetic FAQ rows (testkit/faq_corpus.generate); vectors random unit vectors of
`dim` (search cost does not depend on what they mean). Measured:

- build seconds and per-query milliseconds of index.lexical.LexicalIndex and, when installed, of
  bm25s (its default tokenizer: no code or CJK handling, so a speed reference only);
- the goal "lexical build <= 20% of the vector index build" (the FAISS index choose_factory picks
  for `rows`, trained and filled, as jobs.build_index does it): run with --rows 1000000;
- the goal "p50 of hybrid search <= 1.5x dense" at --rows 100000, measured on IndexSearcher (the
  search alone: a /match adds the same model time to both, so this ratio is the stricter one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from index.faiss_index import IndexConfig, VectorIndex, choose_factory
from index.lexical import LexicalIndex, top_rows
from index.prompt import NO_PROMPT
from index.searcher import IndexSearcher
from testkit.faq_corpus import generate
from testkit.serve_index import publish_table


def _p50_ms(fn: Any, items: list[Any]) -> float:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def measure(rows: int, queries: int, dim: int) -> dict[str, Any]:
    table = generate(rows, seed=0)
    texts = table.column("question").to_pylist()
    asked = generate(queries, seed=1).column("question").to_pylist()
    out: dict[str, Any] = {"rows": rows, "queries": queries, "dim": dim}

    t = time.perf_counter()
    lexical = LexicalIndex.build(texts)
    out["ours_build_s"] = time.perf_counter() - t
    out["ours_query_ms_p50"] = _p50_ms(lambda q: top_rows(lexical.scores(q), 100), asked)
    out["ours_bytes"] = lexical.nbytes
    try:
        import bm25s

        t = time.perf_counter()
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
        out["bm25s_build_s"] = time.perf_counter() - t
        out["bm25s_query_ms_p50"] = _p50_ms(
            lambda q: retriever.retrieve(
                bm25s.tokenize([q], show_progress=False), k=100, show_progress=False
            ),
            asked,
        )
    except ImportError:
        out["bm25s"] = "not installed"

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    factory = choose_factory(rows, dim, IndexConfig())
    t = time.perf_counter()
    index = VectorIndex.create(dim, factory, "ip")
    train = index.train_rows(rows, IndexConfig())
    if train:
        index.train(vectors[rng.choice(rows, train, replace=False)])
    index.add(vectors)
    out["vector_factory"], out["vector_build_s"] = factory, time.perf_counter() - t
    out["lexical_over_vector_build"] = out["ours_build_s"] / out["vector_build_s"]

    with tempfile.TemporaryDirectory() as root:
        publish_table(Path(root), vectors, table, "bench", NO_PROMPT, factory="Flat")
        searcher = IndexSearcher.open(root)
        qv = rng.normal(size=(queries, dim)).astype(np.float32)
        qv /= np.linalg.norm(qv, axis=1, keepdims=True)
        pairs = list(zip(qv, asked, strict=True))
        out["dense_search_ms_p50"] = _p50_ms(lambda p: searcher.search(p[0][None, :], 5), pairs)
        out["hybrid_search_ms_p50"] = _p50_ms(
            lambda p: searcher.search_text(p[0][None, :], (p[1],), 5, "hybrid", 0.5), pairs
        )
    out["hybrid_over_dense_p50"] = out["hybrid_search_ms_p50"] / out["dense_search_ms_p50"]
    return out


def main() -> None:
    """CLI: print (and optionally write) the measurements."""
    p = argparse.ArgumentParser(prog="python -m bench.lexical", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args()
    result = measure(args.rows, args.queries, args.dim)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
