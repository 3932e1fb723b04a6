"""The hybrid-fitting job's library: alpha over ALPHA_GRID and the hybrid threshold, stored in hybrid.json.

Why labelled queries against the index, not the threshold job's labelled pairs: alpha weighs how
the index's candidates are *ranked* (the BM25 part is normalised per query over its candidates),
which a pair's two texts alone do not have; the objective is MRR@10 of /match's own ranking
(index/evaluation.py). alpha = 1 (dense) is in the grid, so on the labels it was fitted on the
stored weight is never worse than dense. The report gives dense, lexical and hybrid@alpha.

The threshold is fitted with alpha, on the same labels: every (query, match) hybrid /match
returns at that alpha is a labelled pair (relevant or not) with the score /match gives it, and
index/thresholds.py's calibration (the one `jobs.threshold` runs on dense pairs) picks the
lowest min_score reaching the target precision. Stored beside alpha, it is hybrid /match's
default min_score, as thresholds.json's is dense /match's. The report also calibrates dense on
the same queries for comparison (not stored: dense's threshold is jobs.threshold's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import storage
from embedder.encoder import Encoder
from embedder.errors import InvalidInput
from index.evaluation import calibrate, evaluate, fit_alpha, query_vectors, ranked, read_labels
from index.hybrid import write_hybrid
from index.searcher import IndexSearcher
from settings.loader import check_field


@dataclass(frozen=True)
class FitHybridConfig:
    """Every setting of one run: from flags, else QM_FIT_HYBRID_<FIELD>, else these defaults."""

    index: str  # index root (local or URI)
    artifact: str = ""  # the model artifact the index was built with
    labels: str = ""  # parquet, or JSON lines (*.jsonl): query + relevant_id or answer
    index_version: str | None = None  # None: CURRENT
    store: bool = True  # write hybrid.json (False: report only, --dry-run)
    output: str | None = None  # the report as JSON (path or URI)
    threads: int = 0  # encoder threads (0: one per core)
    # Precision the hybrid threshold must reach on the labels' /match answers (jobs.threshold's default).
    target_precision: float = 0.95
    progress: bool = True

    def __post_init__(self) -> None:
        check_field(self, "artifact", bool(self.artifact), "is required")
        check_field(self, "labels", bool(self.labels), "is required")
        check_field(self, "target_precision", 0.0 < self.target_precision <= 1.0, "must be in (0, 1]")
        check_field(self, "threads", self.threads >= 0, "must be >= 0 (0: one per core)")


def run(cfg: FitHybridConfig) -> dict[str, Any]:
    """Fit alpha, report every mode at it, store it with the version; the report."""
    encoder = Encoder.load(cfg.artifact, threads=cfg.threads)
    searcher = IndexSearcher.open(cfg.index, cfg.index_version, expected_fingerprint=encoder.fingerprint)
    if searcher.lexical is None:
        raise InvalidInput(
            f"index version {searcher.version} has no lexical index (built --no-lexical?): nothing to fit"
        )
    labels = read_labels(cfg.labels, searcher.loaded.metadata)
    vectors = query_vectors(encoder, labels.queries)
    fitted = fit_alpha(searcher, vectors, labels)
    alpha = fitted["alpha"]
    thresholds = {
        mode: calibrate(
            ranked(searcher, vectors, labels.queries, mode, a), labels.relevant, cfg.target_precision
        )
        for mode, a in (("dense", 1.0), ("hybrid", alpha))
    }
    rep: dict[str, Any] = {
        "index_version": searcher.version,
        "queries": len(labels.queries),
        **fitted,
        "modes": evaluate(searcher, vectors, labels, alpha),
        "thresholds": thresholds,
    }
    if cfg.store:
        summary = {k: v for k, v in rep.items() if k != "grid"}
        threshold = thresholds["hybrid"] if thresholds["hybrid"]["threshold"] is not None else None
        rep["stored"] = write_hybrid(
            cfg.index,
            searcher.version,
            alpha,
            searcher.fingerprint,
            summary,
            storage.resolve(cfg.labels).uri,
            threshold,
        )
    if cfg.output:
        storage.write_json(cfg.output, rep)
    return rep
