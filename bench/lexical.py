"""Lexical index benchmark: issue 27's numeric goals, on the common runner (bench/runner.py).

    python -m bench.lexical --rows 1000000 --search-rows 100000 --artifact artifacts/minilm-fp32
    (smoke: python -m bench.lexical --rows 20000 --search-rows 20000 --rounds 1 --no-quality --out /tmp/x.json)

Writes bench/results/lexical.json (the envelope: command, machine, load). Measured:

- build: lexical (BM25, index/lexical.py) build seconds over `--rows` synthetic FAQ questions
  (testkit/faq_corpus.generate) against the vector index build (the FAISS factory choose_factory
  picks for `--rows`, trained and filled as jobs.build_index does, tuning excluded) over the same
  number of vectors. Goal: lexical <= 20% of vector at 1,000,000. The vectors are synthetic
  (testkit.vectors.clustered_batches, shaped like sentence embeddings, the model's dimension):
  embedding 1M questions would take hours on 2 cores, and the build cost depends on the count
  and dimension, not the meaning. Streamed in batches so a 1M run holds the index and one batch.
- search: p50 of IndexSearcher.search (dense) vs search_text(..., "hybrid") for one question, at
  `--search-rows`, on the index jobs.build_index would serve there (auto factory, tuned) and on
  Flat. Goal: hybrid p50 <= 1.5x dense p50 at 100,000. The search alone: a /match adds the same
  model time to both, so this ratio is the stricter one.
- quality (needs `--artifact`): per labelled set (testkit/labelled_sets.py: the sample corpus'
  rephrasings, the rare-token set), alpha fitted on one draw (jobs.fit_hybrid's fit_alpha) and
  dense vs hybrid@alpha on a held-out draw. Goals: hybrid >= dense on every set, > on rare tokens.

Rounds alternate the compared runs in rotating order (runner.run_rounds); the headline is the
median with min and max. Builds at 1M take minutes, so `--build-rounds` defaults to 1 (the ratio
is same-run). Also reported: bm25s (when installed) build and query time, a speed reference only.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.runner import RESULTS, Benchmark, median_spread, ratios, run_rounds
from index.faiss_index import IndexConfig, VectorIndex, choose_factory
from index.lexical import LexicalIndex, top_rows
from index.prompt import NO_PROMPT, DocumentPrompt
from index.searcher import IndexSearcher
from testkit.faq_corpus import generate
from testkit.serve_index import publish_table
from testkit.vectors import clustered_batches, clustered_vectors

REPO = Path(__file__).resolve().parents[1]
BATCH = 65_536
GOAL_BUILD = 0.20  # lexical build over vector build, at 1M
GOAL_SEARCH = 1.5  # hybrid p50 over dense p50, at 100k


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def vector_build_s(rows: int, dim: int, seed: int) -> tuple[str, float]:
    """(factory, seconds to create, train and fill it): generation time excluded."""
    cfg = IndexConfig()
    factory = choose_factory(rows, dim, cfg)
    spent = 0.0
    t = time.perf_counter()
    index = VectorIndex.create(dim, factory, "ip")
    spent += time.perf_counter() - t
    want = index.train_rows(rows, cfg)
    batches = clustered_batches(rows, max(BATCH, want), dim, seed=seed)
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        if i == 0 and want:
            index.train(batch[:want])  # the first rows are a random draw of the distribution
        index.add(batch)
        spent += time.perf_counter() - t
    return factory, spent


def build(args: Any) -> dict[str, Any]:
    texts = generate(args.rows, seed=0).column("question").to_pylist()
    before = _rss_mb()
    holder: dict[str, Any] = {}

    def lexical(_: int) -> float:
        t = time.perf_counter()
        holder["lexical"] = LexicalIndex.build(texts)
        return time.perf_counter() - t

    def vector(r: int) -> float:
        holder["factory"], spent = vector_build_s(args.rows, args.dim, seed=r)
        return spent

    seconds = run_rounds({"lexical": lexical, "vector": vector}, args.build_rounds)
    index = holder["lexical"]
    out: dict[str, Any] = {
        "rows": args.rows,
        "vector_factory": holder["factory"],
        "lexical_build_s": median_spread(seconds["lexical"]),
        "vector_build_s": median_spread(seconds["vector"]),
        "lexical_over_vector": ratios(seconds["lexical"], seconds["vector"]),
        "lexical_terms": len(index.terms),
        "lexical_postings": len(index.rows),
        "lexical_bytes": index.nbytes,
        "max_rss_mb": {"before_builds": before, "after": _rss_mb()},
    }
    out["goal"] = f"lexical build <= {GOAL_BUILD:.0%} of the vector build at 1,000,000 rows"
    out["met"] = out["lexical_over_vector"]["median"] <= GOAL_BUILD
    out["bm25s"] = bm25s_reference(texts[: min(len(texts), 100_000)], args.queries)
    return out


def bm25s_reference(texts: list[str], queries: int) -> dict[str, Any]:
    """bm25s' build and top-100 query time (its default tokenizer: no code or CJK handling)."""
    try:
        import bm25s
    except ImportError:
        return {"installed": False}
    asked = generate(queries, seed=1).column("question").to_pylist()
    t = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
    built = time.perf_counter() - t
    ours = LexicalIndex.build(texts)
    times: dict[str, list[float]] = {"ours": [], "bm25s": []}
    for q in asked:
        t = time.perf_counter()
        top_rows(ours.scores(q), 100)
        times["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        retriever.retrieve(bm25s.tokenize([q], show_progress=False), k=100, show_progress=False)
        times["bm25s"].append(time.perf_counter() - t)
    return {
        "rows": len(texts),
        "bm25s_build_s": round(built, 3),
        "query_ms_p50": {k: round(float(np.median(v)) * 1000, 3) for k, v in times.items()},
    }


def search(args: Any) -> dict[str, Any]:
    rows, rng = args.search_rows, np.random.default_rng(5)
    table = generate(rows, seed=0)
    vectors = clustered_vectors(rows, args.dim, seed=0)
    asked = generate(args.queries, seed=1).column("question").to_pylist()
    queries = clustered_vectors(args.queries, args.dim, seed=1)
    order = rng.permutation(args.queries)
    out: dict[str, Any] = {"rows": rows, "queries": args.queries, "top_k": 10}
    for factory in dict.fromkeys(["auto", "Flat"]):
        with tempfile.TemporaryDirectory() as root:
            publish_table(Path(root), vectors, table, "bench", NO_PROMPT, factory=factory)
            searcher = IndexSearcher.open(root)
            name = f"{searcher.manifest.factory} ({factory})"
            searcher.search_text(queries[:1], (asked[0],), 10, "hybrid", 0.5)  # row map, warm caches

            def dense(_: int, s: IndexSearcher = searcher) -> list[float]:
                return [_timed(lambda i=i: s.search(queries[i : i + 1], 10)) for i in order]

            def hybrid(_: int, s: IndexSearcher = searcher) -> list[float]:
                return [
                    _timed(lambda i=i: s.search_text(queries[i : i + 1], (asked[i],), 10, "hybrid", 0.5))
                    for i in order
                ]

            runs = run_rounds({"dense": dense, "hybrid": hybrid}, args.rounds)
            p50 = {k: [float(np.median(v)) * 1000 for v in per] for k, per in runs.items()}
            out[name] = {
                "dense_p50_ms": median_spread(p50["dense"]),
                "hybrid_p50_ms": median_spread(p50["hybrid"]),
                "hybrid_over_dense_p50": ratios(p50["hybrid"], p50["dense"]),
            }
            out[name]["met"] = out[name]["hybrid_over_dense_p50"]["median"] <= GOAL_SEARCH
    out["goal"] = f"hybrid p50 <= {GOAL_SEARCH}x dense p50 at 100,000 questions"
    return out


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def quality(args: Any) -> dict[str, Any]:
    from embedder.encoder import Encoder
    from index.evaluation import evaluate, fit_alpha, labels_from_table, query_vectors
    from testkit.labelled_sets import rare_token_corpus, rare_token_queries, rephrased_queries

    encoder = Encoder.load(args.artifact, threads=args.threads)
    prompt = DocumentPrompt.chosen(encoder.prompts)
    sets = {
        "rare_tokens": (rare_token_corpus(), rare_token_queries),
        "rephrased": (pq.read_table(REPO / "data" / "sample_qa.parquet"), rephrased_queries),
    }
    out: dict[str, Any] = {"queries_per_draw": args.labelled, "fit_seed": 1, "held_out_seed": 2}
    for name, (corpus, draw) in sets.items():
        with tempfile.TemporaryDirectory() as root:
            vectors = encoder.encode_document(corpus.column("question").to_pylist())
            publish_table(Path(root), vectors, corpus, encoder.fingerprint, prompt)
            searcher = IndexSearcher.open(root)
            fit = labels_from_table(draw(args.labelled, 1), searcher.loaded.metadata)
            held = labels_from_table(draw(args.labelled, 2), searcher.loaded.metadata)
            alpha = fit_alpha(searcher, query_vectors(encoder, fit.queries), fit)["alpha"]
            modes = evaluate(searcher, query_vectors(encoder, held.queries), held, alpha)
        dense, hybrid = modes["dense"]["mrr@10"], modes["hybrid"]["mrr@10"]
        out[name] = {"rows": corpus.num_rows, "alpha": alpha, "held_out": modes}
        out[name]["met"] = hybrid > dense if name == "rare_tokens" else hybrid >= dense
    out["goal"] = "held-out MRR@10: hybrid >= dense on every set, > dense on the rare-token set"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for and write the result JSON."""
    bench = Benchmark("lexical", __doc__)
    p = bench.flags(rounds=3, threads=2, artifact="artifacts/minilm-fp32", out=RESULTS / "lexical.json")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the build comparison")
    p.add_argument("--build-rounds", type=int, default=1, help="rounds of the build comparison")
    p.add_argument("--search-rows", type=int, default=100_000, help="rows of the search comparison")
    p.add_argument("--queries", type=int, default=200, help="questions timed per round")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (all-MiniLM-L6-v2's)")
    p.add_argument("--labelled", type=int, default=150, help="labelled queries per draw (quality)")
    p.add_argument("--no-quality", dest="quality", action="store_false", help="skip the model part")
    args = bench.start(argv)
    body: dict[str, Any] = {
        "config": {
            "rows": args.rows,
            "search_rows": args.search_rows,
            "dim": args.dim,
            "vectors": "synthetic (testkit.vectors.clustered_*): embedding 1M questions takes hours "
            "on 2 cores and build and search cost depend on count and dimension, not meaning",
            "questions": "testkit.faq_corpus.generate (synthetic FAQ rows)",
        }
    }
    print(f"build: {args.rows} rows", file=sys.stderr)
    body["build"] = build(args)
    print(f"search: {args.search_rows} rows", file=sys.stderr)
    body["search"] = search(args)
    if args.quality:
        body["quality"] = quality(args)
    report = bench.report(body, args.out)
    for part in ("build", "search", "quality"):
        if part in report:
            print(part, {k: v for k, v in report[part].items() if k not in ("bm25s",)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
