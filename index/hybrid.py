"""Lexical and hybrid search over one index version, and the stored hybrid weight (Ray-free).

Modes of /match: "dense" (FAISS only, the default), "lexical" (BM25 only, index/lexical.py) and
"hybrid": a convex combination (Bruch et al., "An Analysis of Fusion Functions for Hybrid
Retrieval": a tuned convex combination beats equal-weight RRF, which on duplicate-question sets
scores below dense alone):

    hybrid = alpha * dense + (1 - alpha) * lexical / max_lexical

Normalisation: the dense score as-is (cosine for the usual normalised ip index), BM25 divided by
the query's highest BM25 among its candidates (so in [0, 1]; 0 when no word matches). Keeping
dense as-is means alpha = 1 scores exactly like dense mode, and a hybrid score stays on the
cosine scale a min_score was chosen on. Candidates: the union of the dense top-N and the lexical
top-N (N = max(top_k, CANDIDATES), both within the request's filter), each re-scored both ways:
the exact inner product from the vectors the index holds for lexical-only rows, the BM25 for
dense-only rows. Grouped requests group the fused list (index/groups.py's rule: best row first).

alpha lives in `<root>/<version>/hybrid.json` (HYBRID_FILE), written by `jobs.fit_hybrid` after the
version exists (a sidecar record: index/version_records.py); absent, alpha is 1.0 (dense) and the
default mode dense. Beside alpha the record holds the hybrid threshold: the lowest hybrid score
(at that alpha) whose precision reaches a target on the labelled queries' /match answers, which
hybrid /match applies as its default min_score as dense /match applies thresholds.json's (a
cosine threshold means nothing on a fused scale). Like thresholds, a version without its own
record inherits the newest older version's fitted for the same model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import storage
from embedder.errors import InvalidInput
from index import version_records as records

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
HYBRID_FILE = "hybrid.json"
# Candidates each side brings to the fusion: the union of 100 + 100 rows re-scored is a few
# hundred flops per row, and deep enough that a row ranked ~50th by one side can win.
CANDIDATES = 100
# The fitting grid: alpha = 1 (dense) is in it, so the fitted weight is never worse than dense
# on the labels it was fitted on.
ALPHA_GRID: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))


@dataclass(frozen=True)
class TextQuery:
    """What /match asked beyond the vectors: the mode (None: the collection's default) and the texts."""

    mode: str | None = None
    texts: tuple[str, ...] = ()

    def resolve(self, default: str) -> str:
        """The mode this request runs in; InvalidInput (422) for an unknown one."""
        mode = self.mode or default
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}", field="mode")
        return mode


@dataclass(frozen=True)
class HybridDefault:
    """A version's fitted hybrid weight and default mode, and which version's hybrid.json set them."""

    alpha: float = 1.0
    mode: str = "dense"
    from_version: str | None = None
    # Hybrid /match's default min_score (hybrid score scale, calibrated at `alpha`), or None.
    min_score: float | None = None


NO_HYBRID = HybridDefault()


def fuse(dense: np.ndarray, lexical: np.ndarray, alpha: float) -> np.ndarray:
    """The hybrid score of candidates given their dense and raw BM25 scores (see the module docstring)."""
    top = float(lexical.max()) if len(lexical) else 0.0
    norm = lexical / top if top > 0 else np.zeros_like(lexical)
    return (alpha * dense + (1.0 - alpha) * norm).astype(np.float32)


def fused_order(
    dense_rows: np.ndarray,
    dense_of: np.ndarray,
    lexical_rows: np.ndarray,
    bm25: np.ndarray,
    exact: Any,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Union of both candidate lists, re-scored both ways, best hybrid score first: (rows, scores).

    `dense_of`: dense scores of `dense_rows`; `bm25`: BM25 of every row; `exact(rows)`: dense
    scores of any rows (the exact inner product from the index's vectors).
    """
    dense_rows = dense_rows[dense_rows >= 0]
    dense_of = dense_of[: len(dense_rows)]
    extra = np.setdiff1d(lexical_rows, dense_rows, assume_unique=False)
    rows = np.concatenate([dense_rows, extra]).astype(np.int64)
    dense = np.concatenate([dense_of, exact(extra) if len(extra) else np.zeros(0, np.float32)])
    scores = fuse(dense.astype(np.float32), bm25[rows].astype(np.float32), alpha)
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


# ---- the stored weight ---------------------------------------------------------------------------


def sidecar(root: str | os.PathLike[str], version: str) -> storage.Location:
    """Where a version's hybrid record lives."""
    return records.location(root, version, HYBRID_FILE)


def write_hybrid(
    root: str | os.PathLike[str],
    version: str,
    alpha: float,
    fingerprint: str,
    report: dict[str, Any],
    source: str,
    threshold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record `alpha` (mode "hybrid" as the collection's default) and the hybrid threshold; the record.

    `threshold`: the calibration of hybrid scores at `alpha` (index/thresholds.py's Point as a
    dict plus `target_precision`), whose `threshold` becomes hybrid /match's default min_score;
    None (no threshold reached the target): hybrid requests get no default min_score.
    """
    manifest = records.check_model(root, version, fingerprint, "alpha was fitted with")
    if not manifest.lexical:
        raise InvalidInput(f"index version {version} has no lexical index: there is nothing to fuse")
    fields = {
        "alpha": float(alpha),
        "default_mode": "hybrid",
        "min_score": None if threshold is None else float(threshold["threshold"]),
        "threshold": threshold,
        "fingerprint": fingerprint,
        "source": source,
        "report": report,
    }
    return records.write_record(root, version, HYBRID_FILE, fields)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _valid(record: dict[str, Any], fingerprint: str, name: str) -> HybridDefault | None:
    if record.get("fingerprint") != fingerprint:
        return None
    alpha, mode, min_score = (
        record.get("alpha"),
        record.get("default_mode", "hybrid"),
        record.get("min_score"),
    )
    if (
        not isinstance(alpha, int | float)
        or not _finite(alpha)
        or not 0.0 <= alpha <= 1.0
        or mode not in MODES
    ):
        return None
    if min_score is not None and not _finite(min_score):
        return None
    return HybridDefault(float(alpha), str(mode), name, None if min_score is None else float(min_score))


def default_hybrid(root: str | os.PathLike[str], version: str, fingerprint: str) -> HybridDefault:
    """The version's own hybrid.json, else the newest older version's fitted for the same model."""
    found = records.newest(root, version, HYBRID_FILE)
    if found is None:
        return NO_HYBRID
    # Another model's (or an unusable record): not ours, and it stops the walk.
    return _valid(found[1], fingerprint, found[0]) or NO_HYBRID
