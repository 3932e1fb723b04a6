"""The evaluation job's library: one index version, its modes, labelled queries (index/evaluation.py).

In process, no Ray: a few thousand queries are one Encoder batch run and numpy searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import storage
from embedder.encoder import Encoder
from index.evaluation import evaluate, query_vectors, read_labels
from index.hybrid import default_hybrid
from index.searcher import IndexSearcher
from settings.loader import check_field


@dataclass(frozen=True)
class EvaluateConfig:
    """Every setting of one run: from flags, else QM_EVALUATE_<FIELD>, else these defaults."""

    index: str  # index root (local or URI)
    artifact: str = ""  # the model artifact the index was built with (embeds the queries)
    labels: str = ""  # parquet, or JSON lines (*.jsonl): query + relevant_id or answer
    index_version: str | None = None  # None: CURRENT
    # Hybrid weight to evaluate; None: the version's fitted one (hybrid.json), else 1.0.
    alpha: float | None = None
    output: str | None = None  # the report as JSON (path or URI)
    threads: int = 0  # encoder threads (0: one per core)
    progress: bool = True

    def __post_init__(self) -> None:
        check_field(self, "artifact", bool(self.artifact), "is required")
        check_field(self, "labels", bool(self.labels), "is required")
        check_field(self, "alpha", self.alpha is None or 0.0 <= self.alpha <= 1.0, "must be in [0, 1]")
        check_field(self, "threads", self.threads >= 0, "must be >= 0 (0: one per core)")


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Metrics per mode on the labels; the report (also written to --output)."""
    encoder = Encoder.load(cfg.artifact, threads=cfg.threads)
    searcher = IndexSearcher.open(cfg.index, cfg.index_version, expected_fingerprint=encoder.fingerprint)
    labels = read_labels(cfg.labels, searcher.loaded.metadata)
    fitted = default_hybrid(cfg.index, searcher.version, searcher.fingerprint)
    alpha = fitted.alpha if cfg.alpha is None else cfg.alpha
    vectors = query_vectors(encoder, labels.queries)
    rep = {
        "index_version": searcher.version,
        "queries": len(labels.queries),
        "alpha": alpha,
        "alpha_from": "--alpha" if cfg.alpha is not None else fitted.from_version,
        "lexical": searcher.manifest.lexical is not None,
        "modes": evaluate(searcher, vectors, labels, alpha),
    }
    if cfg.output:
        storage.write_json(cfg.output, rep)
    return rep
