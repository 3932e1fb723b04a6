"""Match thresholds: precision / recall of cosine scores over labelled pairs, and the stored default.

Ray-free. `jobs/threshold/run.py` scores labelled pairs (with the Encoder or stored vectors) and calls
`precision_recall` / `lowest_threshold` here; with an index root it writes the chosen threshold to
`<root>/<version>/thresholds.json` (THRESHOLDS_FILE), which the service reads to default
`/match`'s `min_score` (index/follower.py).

Why a sidecar and how it is written and inherited: index/version_records.py. A version without
its own record inherits the newest older version's, provided that one was chosen for the same
model (fingerprint); a record chosen for another model stops the search: its scores mean nothing here.

A pair is predicted a match when score >= threshold (the comparison /match makes with min_score).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import storage
from embedder.errors import InvalidInput
from index import version_records as records

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
    return records.location(root, version, THRESHOLDS_FILE)


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
    manifest = records.check_model(root, version, fingerprint, "these scores come from")
    fields = {
        "cosine_threshold": point.threshold,
        "default_min_score": score_for_metric(point.threshold, manifest.metric),
        "metric": manifest.metric,
        "target_precision": target_precision,
        "precision": point.precision,
        "recall": point.recall,
        "pairs": pairs,
        "positives": point.true_positives + point.false_negatives,
        "fingerprint": fingerprint,
        "source": source,
    }
    return records.write_record(root, version, THRESHOLDS_FILE, fields)


def read_thresholds(root: str | os.PathLike[str], version: str) -> dict[str, Any] | None:
    """A version's own record, or None when it has none (StorageError if unreadable)."""
    return records.read_record(root, version, THRESHOLDS_FILE)


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
    found = records.newest(root, version, THRESHOLDS_FILE, inherit)
    if found is None:
        return NO_DEFAULT
    name, record = found
    cosine = _valid_cosine(record)
    if record.get("fingerprint") != fingerprint or cosine is None:
        return NO_DEFAULT  # chosen for another model (or unreadable): not ours, and stops the walk
    return DefaultMinScore(score_for_metric(cosine, metric), cosine, name)
