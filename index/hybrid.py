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
version exists (the reason it is a sidecar is thresholds.json's, index/thresholds.py); absent, alpha
is 1.0 (dense) and the default mode dense. Like thresholds, a version without its own inherits the
newest older version's fitted for the same model.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import storage
from embedder.errors import InvalidInput, ModelMismatch
from index import store as index_store
from index.lexical import LexicalIndex, top_rows

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


NO_HYBRID = HybridDefault()


def fuse(dense: np.ndarray, lexical: np.ndarray, alpha: float) -> np.ndarray:
    """The hybrid score of candidates given their dense and raw BM25 scores (see the module docstring)."""
    top = float(lexical.max()) if len(lexical) else 0.0
    norm = lexical / top if top > 0 else np.zeros_like(lexical)
    return (alpha * dense + (1.0 - alpha) * norm).astype(np.float32)


def lexical_candidates(
    lexical: LexicalIndex, text: str, n: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, BM25 of those rows, BM25 of every row) for one query: its lexical top-n within `mask`."""
    every = lexical.scores(text)
    rows, scores = top_rows(every, n, mask)
    return rows, scores, every


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
    return storage.resolve(root).child(version, HYBRID_FILE)


def write_hybrid(
    root: str | os.PathLike[str],
    version: str,
    alpha: float,
    fingerprint: str,
    report: dict[str, Any],
    source: str,
) -> dict[str, Any]:
    """Record `alpha` (and mode "hybrid" as the collection's default) for a version; returns the record."""
    manifest = index_store.verify_version(storage.resolve(root).child(version))
    if manifest.fingerprint != fingerprint:
        raise ModelMismatch(
            f"index version {version} was built with model {manifest.fingerprint or '<none>'}; "
            f"alpha was fitted with {fingerprint or '<none>'}: a weight does not carry across models"
        )
    if not manifest.lexical:
        raise InvalidInput(f"index version {version} has no lexical index: there is nothing to fuse")
    record = {
        "alpha": float(alpha),
        "default_mode": "hybrid",
        "fingerprint": fingerprint,
        "version": version,
        "source": source,
        "report": report,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(sidecar(root, version), record)
    return record


def _valid(record: Any, fingerprint: str) -> HybridDefault | None:
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    alpha, mode = record.get("alpha"), record.get("default_mode", "hybrid")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        return None
    if not 0.0 <= alpha <= 1.0 or mode not in MODES:
        return None
    return HybridDefault(float(alpha), str(mode), str(record.get("version")))


def default_hybrid(root: str | os.PathLike[str], version: str, fingerprint: str) -> HybridDefault:
    """The version's own hybrid.json, else the newest older version's fitted for the same model."""
    older = reversed([v for v in index_store.list_versions(root) if v < version])
    for name in [version, *older]:
        loc = sidecar(root, name)
        if not storage.is_file(loc):
            continue
        found = _valid(storage.read_json(loc), fingerprint)
        if found is None:
            return NO_HYBRID  # another model's (or unreadable): not ours, and stops the walk
        return HybridDefault(found.alpha, found.mode, name)
    return NO_HYBRID
