"""Retrieval quality per /match mode on labelled queries, and the hybrid weight fitted on them (Ray-free).

Shared by `jobs.evaluate` (the report) and `jobs.fit_hybrid` (alpha), which may not import each
other (a job imports only jobs.common and itself). A labelled query is (query text, the set of
ids that answer it); a file gives `query` plus `relevant_id` (one id) or `answer` (every stored
row with that answer is relevant: the rephrasing sets, where many phrasings share one answer).

Metrics over the top 10 (the usual BEIR cut): top1 (the first match is relevant), MRR@10
(1 / rank of the first relevant match, 0 past 10) and recall@10 (relevant ids found in the top 10
over min(relevant, 10), BEIR's capped recall: a query with 40 relevant phrasings can still score 1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import storage
from embedder.encoder import Encoder
from embedder.errors import InvalidInput
from index.hybrid import ALPHA_GRID
from index.searcher import IndexSearcher
from index.thresholds import lowest_threshold

K = 10
OBJECTIVE = "mrr@10"  # what fit_alpha maximises: rewards the right match first, and near the top


@dataclass(frozen=True)
class Labelled:
    """Queries and, per query, the ids that answer it."""

    queries: list[str]
    relevant: list[frozenset[Any]]


def read_labels(spec: str, metadata: pa.Table) -> Labelled:
    """A labels file (parquet, or JSON lines when the name ends in .jsonl) against a version's metadata."""
    loc = storage.resolve(spec)
    if not storage.is_file(loc):
        raise InvalidInput(f"labels {loc} not found", field="labels")
    if loc.name.lower().endswith(".jsonl"):
        lines = [json.loads(x) for x in storage.read_text(loc).splitlines() if x.strip()]
        table = pa.Table.from_pylist(lines)
    else:
        table = storage.read_parquet(loc)
    return labels_from_table(table, metadata)


def labels_from_table(table: pa.Table, metadata: pa.Table) -> Labelled:
    """`query` + `relevant_id` or `answer` -> Labelled; InvalidInput naming what is missing."""
    names = set(table.column_names)
    if "query" not in names or not ({"relevant_id", "answer"} & names):
        raise InvalidInput(
            f"labels need a 'query' column and 'relevant_id' or 'answer'; they have {sorted(names)}",
            field="labels",
        )
    queries = table.column("query").to_pylist()
    if any(not isinstance(q, str) or not q.strip() for q in queries):
        raise InvalidInput("every label needs a non-empty query text", field="query")
    if "relevant_id" in names:
        relevant = [frozenset([v]) for v in table.column("relevant_id").to_pylist()]
    else:
        if "answer" not in metadata.column_names:
            raise InvalidInput("labels by 'answer' need an index with an 'answer' column", field="answer")
        ids_by: dict[Any, set[Any]] = {}
        for i, a in zip(
            metadata.column("id").to_pylist(), metadata.column("answer").to_pylist(), strict=True
        ):
            ids_by.setdefault(a, set()).add(i)
        relevant = [frozenset(ids_by.get(a, ())) for a in table.column("answer").to_pylist()]
    known = set(pc.unique(metadata.column("id")).to_pylist())
    if not all(r and r <= known for r in relevant):
        raise InvalidInput("some labels name ids (or answers) the index does not hold", field="labels")
    return Labelled(queries, relevant)


def query_vectors(encoder: Encoder, queries: Sequence[str]) -> np.ndarray:
    """Queries embedded as /match embeds them (the model's query prompt)."""
    return encoder.encode_query(list(queries))


def ranked(
    searcher: IndexSearcher, vectors: np.ndarray, queries: Sequence[str], mode: str, alpha: float = 1.0
) -> list[list[dict[str, Any]]]:
    """The top-K matches per query in one mode, exactly as /match ranks and scores them (ungrouped, no min_score)."""
    if mode == "dense":
        return searcher.search(vectors, K)
    if searcher.lexical is None:
        raise InvalidInput(f"index version {searcher.version} has no lexical index", field="mode")
    return searcher.search_text(vectors, tuple(queries), K, mode, alpha)[0]


def ranked_ids(
    searcher: IndexSearcher, vectors: np.ndarray, queries: Sequence[str], mode: str, alpha: float = 1.0
) -> list[list[Any]]:
    """The top-K ids per query in one mode (see `ranked`)."""
    return [[r["id"] for r in row] for row in ranked(searcher, vectors, queries, mode, alpha)]


def match_pairs(
    matches: Sequence[Sequence[dict[str, Any]]], relevant: Sequence[frozenset[Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """(score, is it relevant) of every (query, returned match): the pairs a min_score accepts or drops.

    These are labelled pairs in the threshold job's sense, scored the way /match scores them in
    the mode they came from, so index/thresholds.py calibrates them unchanged.
    """
    scores = [m["score"] for row in matches for m in row]
    hits = [m["id"] in rel for row, rel in zip(matches, relevant, strict=True) for m in row]
    return np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)


def calibrate(
    matches: Sequence[Sequence[dict[str, Any]]], relevant: Sequence[frozenset[Any]], target: float
) -> dict[str, Any]:
    """The lowest min_score whose returned matches reach `target` precision (thresholds.lowest_threshold).

    Recall is over the relevant matches among the returned top-K. `threshold` None: none reaches it.
    """
    scores, hits = match_pairs(matches, relevant)
    out: dict[str, Any] = {"target_precision": target, "pairs": len(scores), "positives": int(hits.sum())}
    chosen = lowest_threshold(scores, hits, target) if hits.any() else None
    if chosen is None:
        return {**out, "threshold": None, "precision": None, "recall": None}
    return {**out, **chosen.as_dict()}


def metrics(ranked: Sequence[Sequence[Any]], relevant: Sequence[frozenset[Any]]) -> dict[str, float]:
    """top1, mrr@10 and recall@10 (capped) averaged over the queries."""
    top1 = mrr = recall = 0.0
    for ids, rel in zip(ranked, relevant, strict=True):
        hits = [i in rel for i in ids[:K]]
        top1 += hits[0] if hits else 0.0
        first = next((r for r, h in enumerate(hits) if h), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        recall += sum(hits) / min(len(rel), K)
    n = max(len(relevant), 1)
    return {"top1": top1 / n, "mrr@10": mrr / n, "recall@10": recall / n}


def evaluate(
    searcher: IndexSearcher, vectors: np.ndarray, labels: Labelled, alpha: float
) -> dict[str, dict[str, float]]:
    """Metrics per mode: dense, lexical and hybrid at `alpha` (lexical ones only with a lexical index)."""
    modes = [("dense", 1.0)]
    if searcher.lexical is not None:
        modes += [("lexical", 0.0), ("hybrid", alpha)]
    return {
        mode: metrics(ranked_ids(searcher, vectors, labels.queries, mode, a), labels.relevant)
        for mode, a in modes
    }


def fit_alpha(searcher: IndexSearcher, vectors: np.ndarray, labels: Labelled) -> dict[str, Any]:
    """The alpha of ALPHA_GRID maximising OBJECTIVE (ties: the larger, closer to dense), and every point."""
    points = []
    for alpha in ALPHA_GRID:
        scored = metrics(ranked_ids(searcher, vectors, labels.queries, "hybrid", alpha), labels.relevant)
        points.append({"alpha": alpha, **scored})
    best = max(points, key=lambda p: (round(p[OBJECTIVE], 9), p["alpha"]))
    return {"alpha": best["alpha"], "objective": OBJECTIVE, "grid": points}


def format_table(
    report: dict[str, dict[str, float]], alpha: float, thresholds: dict[str, dict[str, Any]] | None = None
) -> str:
    """One line per mode; with `thresholds` (mode -> calibrate()'s record) the threshold's columns too."""
    head = f"{'mode':<14} {'top1':>6} {'mrr@10':>7} {'recall@10':>9}"
    if thresholds is not None:
        head += f" {'min_score':>9} {'precision':>9} {'recall':>7}"
    lines = [head]
    for mode, m in report.items():
        name = f"hybrid@{alpha:g}" if mode == "hybrid" else mode
        line = f"{name:<14} {m['top1']:>6.4f} {m['mrr@10']:>7.4f} {m['recall@10']:>9.4f}"
        if thresholds is not None:
            t = thresholds.get(mode)
            if t is None or t["threshold"] is None:
                line += f" {'-':>9} {'-':>9} {'-':>7}"  # lexical (BM25 has no fixed scale), or none reached
            else:
                line += f" {t['threshold']:>9.4f} {t['precision']:>9.4f} {t['recall']:>7.4f}"
        lines.append(line)
    return "\n".join(lines)
