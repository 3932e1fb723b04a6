"""Threshold helper (index/thresholds.py): exact precision/recall, the chosen threshold, the stored default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.errors import InvalidInput, ModelMismatch
from index import thresholds as th
from jobs.build_index.build import build
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.vectors import clustered_vectors

# Six labelled pairs with known scores, highest first: match, match, not, match, not, not.
SCORES = [0.95, 0.90, 0.85, 0.80, 0.70, 0.60]
LABELS = [1, 1, 0, 1, 0, 0]
FP = "sha256:1111111111111111"


def test_precision_and_recall_are_exact_at_every_threshold() -> None:
    curve = {p.threshold: p for p in th.precision_recall(SCORES, LABELS)}
    assert sorted(curve) == sorted(SCORES)
    expected = {  # threshold: (predicted, true positives) -> precision tp/predicted, recall tp/3
        0.95: (1, 1),
        0.90: (2, 2),
        0.85: (3, 2),
        0.80: (4, 3),
        0.70: (5, 3),
        0.60: (6, 3),
    }
    for t, (predicted, tp) in expected.items():
        p = curve[t]
        assert (p.predicted, p.true_positives, p.false_positives, p.false_negatives) == (
            predicted,
            tp,
            predicted - tp,
            3 - tp,
        )
        assert p.precision == tp / predicted and p.recall == tp / 3
    between = th.at_threshold(SCORES, LABELS, 0.82)  # same as 0.85: pairs scoring >= 0.82
    assert (between.precision, between.recall) == (2 / 3, 2 / 3)
    assert th.at_threshold(SCORES, LABELS, 0.99).precision is None  # nothing predicted


def test_lowest_threshold_reaching_the_target() -> None:
    assert th.lowest_threshold(SCORES, LABELS, 0.95).threshold == 0.90  # 1.0 precision, recall 2/3
    assert th.lowest_threshold(SCORES, LABELS, 0.75).threshold == 0.80  # 3/4 precision, recall 1
    assert th.lowest_threshold(SCORES, LABELS, 0.5).threshold == 0.60  # 3/6
    assert th.lowest_threshold([0.9, 0.8], [0, 1], 0.95) is None  # the top pair is a false match
    # Whatever the data, the chosen threshold's precision (recomputed from scratch) reaches the target.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(0.6 + 0.25 * labels + rng.normal(0, 0.1, 500), 0, 1)
    chosen = th.lowest_threshold(scores, labels, 0.9)
    assert chosen is not None
    predicted = scores >= chosen.threshold
    assert (labels[predicted] == 1).mean() >= 0.9
    lower = scores[scores < chosen.threshold]
    for t in lower[lower > 0.8][:20]:  # every lower threshold misses the target
        assert (labels[scores >= t] == 1).mean() < 0.9


def test_bad_labels_and_targets_are_refused() -> None:
    with pytest.raises(InvalidInput, match="1 \\(a match\\) or 0"):
        th.precision_recall([0.5, 0.6], [1, 2])
    with pytest.raises(InvalidInput, match="no positive pair"):
        th.precision_recall([0.5, 0.6], [0, 0])
    with pytest.raises(InvalidInput, match="target precision"):
        th.lowest_threshold(SCORES, LABELS, 1.5)


def publish(root: Path, tmp: Path, fingerprint: str = FP) -> str:
    """One index version built by jobs.build_index from a small embeddings directory."""
    emb = tmp / f"emb-{len(list(tmp.iterdir()))}"
    vectors = clustered_vectors(200, 16, seed=1)
    write_embeddings_parquet(emb / "part-00000.parquet", list(range(200)), vectors, fingerprint=fingerprint)
    return build(emb, root).version


def point(t: float) -> th.Point:
    return th.at_threshold(SCORES, LABELS, t)


def test_stored_threshold_is_the_versions_default_and_later_versions_inherit_it(tmp_path: Path) -> None:
    root = tmp_path / "indexes" / "faq"
    v1 = publish(root, tmp_path)
    assert th.default_min_score(root, v1, FP) == th.NO_DEFAULT
    record = th.write_thresholds(root, v1, point(0.9), 0.95, FP, "pairs.csv", 6)
    assert record["default_min_score"] == 0.9 and record["precision"] == 1.0
    assert (root / v1 / th.THRESHOLDS_FILE).is_file()
    assert th.default_min_score(root, v1, FP) == th.DefaultMinScore(0.9, 0.9, v1)

    v2 = publish(root, tmp_path)  # the next day's build: no threshold of its own
    assert th.default_min_score(root, v2, FP) == th.DefaultMinScore(0.9, 0.9, v1)
    assert th.default_min_score(root, v2, FP, inherit=False) == th.NO_DEFAULT
    assert th.default_min_score(root, v2, FP, metric="l2").value == pytest.approx(2 * 0.9 - 2)
    th.write_thresholds(root, v2, point(0.8), 0.75, FP, "pairs.csv", 6)
    assert th.default_min_score(root, v2, FP).from_version == v2
    assert th.default_min_score(root, v1, FP).value == 0.9  # older versions keep theirs


def test_threshold_of_another_model_is_refused_and_never_inherited(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    v1 = publish(root, tmp_path)
    with pytest.raises(ModelMismatch, match="does not carry across models"):
        th.write_thresholds(root, v1, point(0.9), 0.95, "sha256:other", "pairs.csv", 6)
    assert not (root / v1 / th.THRESHOLDS_FILE).exists()
    th.write_thresholds(root, v1, point(0.9), 0.95, FP, "pairs.csv", 6)
    other = "sha256:2222222222222222"
    v2 = publish(root, tmp_path, fingerprint=other)  # a new model: v1's threshold means nothing for it
    assert th.default_min_score(root, v2, other) == th.NO_DEFAULT
