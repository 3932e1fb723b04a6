"""Match thresholds: precision / recall of cosine scores over labelled pairs, and the stored default.

Ray-free. `jobs/threshold/run.py` scores labelled pairs (with the Encoder or stored vectors) and calls
`precision_recall` / `lowest_threshold` here; with an index root it writes the chosen threshold to
`<root>/<version>/thresholds.json` (THRESHOLDS_FILE), which the service reads to default
`/match`'s `min_score` (index/follower.py).

Why a sidecar file rather than a field of manifest.json: an index version is immutable once
published: its manifest records every file's size and sha256, node-local caches are keyed by the
version and trusted as long as they verify, and `CURRENT` only ever moves to a version whose
manifest verified. A threshold is chosen *after* a version exists (from labelled pairs, maybe
weeks later) and may be re-chosen; rewriting the manifest would change a published version under
every replica that cached it. The sidecar is an extra, optional file that nothing verifies
against the manifest, written all-or-nothing through storage.

A corpus that changes every day gets a new version every day, and the threshold belongs to the
model and the kind of questions, not to one day's build: a version without its own sidecar
inherits the newest older version's, provided that one was chosen for the same model
(fingerprint). A sidecar chosen for another model stops the search: its scores mean nothing here.

A pair is predicted a match when score >= threshold (the comparison /match makes with min_score).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import storage
from embedder.errors import InvalidInput, ModelMismatch
from index import store as index_store

THRESHOLDS_FILE = "thresholds.json"


@dataclass(frozen=True)
class Point:
    """Precision and recall when every pair scoring >= threshold is called a match."""

    threshold: float
    precision: float | None  # None: no pair predicted
    recall: float
    predicted: int
    true_positives: int
    false_positives: int
    false_negatives: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise InvalidInput(f"scores {s.shape} and labels {y.shape} must be two equal-length lists")
    if not np.isfinite(s).all():
        raise InvalidInput("scores contain NaN or infinity", field="score")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise InvalidInput("labels must be 1 (a match) or 0 (not a match)", field="label")
    y = y.astype(bool)
    if not y.any():
        raise InvalidInput("no positive pair (label 1): recall is undefined", field="label")
    return s, y


def precision_recall(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> list[Point]:
    """The whole curve: one point per distinct score (as threshold), highest threshold first."""
    s, y = _check(np.asarray(scores), np.asarray(labels))
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last position of each distinct score
    positives = int(y.sum())
    out = []
    for i in last.tolist():
        t, predicted = int(tp[i]), i + 1
        out.append(
            Point(float(s[i]), t / predicted, t / positives, predicted, t, predicted - t, positives - t)
        )
    return out


def at_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, threshold: float
) -> Point:
    """Precision and recall at one threshold."""
    s, y = _check(np.asarray(scores), np.asarray(labels))
    predicted = s >= threshold
    tp = int((predicted & y).sum())
    n_pred = int(predicted.sum())
    return Point(
        float(threshold),
        tp / n_pred if n_pred else None,
        tp / int(y.sum()),
        n_pred,
        tp,
        n_pred - tp,
        int(y.sum()) - tp,
    )


def lowest_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, target_precision: float
) -> Point | None:
    """The lowest threshold whose precision is >= target (the most recall at that precision), or None."""
    if not 0.0 < target_precision <= 1.0:
        raise InvalidInput(
            f"target precision must be in (0, 1], got {target_precision}", field="target_precision"
        )
    reaching = [p for p in precision_recall(scores, labels) if (p.precision or 0.0) >= target_precision]
    return min(reaching, key=lambda p: p.threshold) if reaching else None


def table(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, thresholds: Sequence[float]
) -> list[Point]:
    """Points at the given thresholds, in ascending threshold order."""
    return [at_threshold(scores, labels, t) for t in sorted(set(thresholds))]


# ---- the stored default -----------------------------------------------------------------------


def score_for_metric(cosine: float, metric: str) -> float:
    """A cosine threshold in an index's score scale (ip: cosine; l2: -|a-b|^2 = 2 cos - 2 for unit vectors)."""
    return cosine if metric == "ip" else 2.0 * cosine - 2.0


def sidecar(root: str | os.PathLike[str], version: str) -> storage.Location:
    """Where a version's threshold record lives."""
    return storage.resolve(root).child(version, THRESHOLDS_FILE)


def write_thresholds(
    root: str | os.PathLike[str],
    version: str,
    point: Point,
    target_precision: float,
    fingerprint: str,
    source: str,
    pairs: int,
) -> dict[str, Any]:
    """Record `point.threshold` as the default min_score of index version `version`; returns the record.

    Refused when the version does not exist or was built with another model than the one whose
    scores chose the threshold.
    """
    manifest = index_store.verify_version(storage.resolve(root).child(version))
    if manifest.fingerprint != fingerprint:
        raise ModelMismatch(
            f"index version {version} was built with model {manifest.fingerprint or '<none>'}; "
            f"these scores come from {fingerprint or '<none>'}: a threshold does not carry across models"
        )
    record = {
        "cosine_threshold": point.threshold,
        "default_min_score": score_for_metric(point.threshold, manifest.metric),
        "metric": manifest.metric,
        "target_precision": target_precision,
        "precision": point.precision,
        "recall": point.recall,
        "pairs": pairs,
        "positives": point.true_positives + point.false_negatives,
        "fingerprint": fingerprint,
        "version": version,
        "source": source,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(sidecar(root, version), record)
    return record


def read_thresholds(root: str | os.PathLike[str], version: str) -> dict[str, Any] | None:
    """A version's own record, or None when it has none (StorageError if unreadable)."""
    loc = sidecar(root, version)
    if not storage.is_file(loc):
        return None
    record = storage.read_json(loc)
    if not isinstance(record, dict):
        raise storage.StorageError(f"{loc}: expected a JSON object")
    return record


def _valid_cosine(record: dict[str, Any]) -> float | None:
    value = record.get("cosine_threshold")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class DefaultMinScore:
    """The min_score /match applies when a request gives none, and where it came from."""

    value: float | None  # in the index's score scale
    cosine_threshold: float | None
    from_version: str | None  # the version whose thresholds.json set it (itself or an older one)


NO_DEFAULT = DefaultMinScore(None, None, None)


def default_min_score(
    root: str | os.PathLike[str], version: str, fingerprint: str, metric: str = "ip", inherit: bool = True
) -> DefaultMinScore:
    """The version's own threshold, else (inherit) the newest older version's chosen for the same model."""
    candidates = [version]
    if inherit:
        candidates += list(reversed([v for v in index_store.list_versions(root) if v < version]))
    for name in candidates:
        record = read_thresholds(root, name)
        if record is None:
            continue
        cosine = _valid_cosine(record)
        if record.get("fingerprint") != fingerprint or cosine is None:
            return NO_DEFAULT  # chosen for another model (or unreadable): not ours, and stops the walk
        return DefaultMinScore(score_for_metric(cosine, metric), cosine, name)
    return NO_DEFAULT
