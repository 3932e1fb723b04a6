"""Synthetic vectors shaped like sentence embeddings (the index benchmarks' and tests' corpora)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _centres(
    rng: np.random.Generator, dim: int, topics: int, subtopics: int
) -> tuple[np.ndarray, np.ndarray]:
    """Subtopic centres (topics*subtopics, dim) in a narrow cone, and their Zipf-like weights."""
    common = _unit(rng.standard_normal(dim))
    topic = _unit(_unit(rng.standard_normal((topics, dim))) + 0.5 * common)
    sub = _unit(topic[:, None, :] + 0.8 * _unit(rng.standard_normal((topics, subtopics, dim))))
    sub = sub.reshape(-1, dim)
    weights = 1.0 / np.arange(1, len(sub) + 1) ** 0.8
    weights = (weights / weights.sum())[rng.permutation(len(sub))]
    return sub, weights


def _points(rng: np.random.Generator, sub: np.ndarray, label: np.ndarray) -> np.ndarray:
    noise = _unit(rng.standard_normal((len(label), sub.shape[1]))) * rng.uniform(0.7, 1.3, (len(label), 1))
    return _unit(sub[label] + noise).astype(np.float32)


def clustered_vectors(
    n: int, dim: int = 384, seed: int = 0, topics: int = 200, subtopics: int = 16
) -> np.ndarray:
    """Unit vectors shaped like sentence embeddings: topics > subtopics > points, skewed cluster sizes.

    All topics lean towards one shared direction (embedding models put vectors in a narrow cone;
    random pairs have cosine ~0.06 here), cluster sizes follow a Zipf-like law, and points sit far
    enough from their subtopic centre (nearest-neighbour cosine 0.3-0.7) that neighbours are not
    trivially separated. Uniform noise would make every ANN index look either perfect or useless.
    """
    rng = np.random.default_rng(seed)
    sub, weights = _centres(rng, dim, topics, subtopics)
    label = rng.choice(len(sub), size=n, p=weights)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 65_536):
        b = min(n, a + 65_536)
        out[a:b] = _points(rng, sub, label[a:b])
    return out


def clustered_batches(
    n: int, batch: int, dim: int = 384, seed: int = 0, topics: int = 200, subtopics: int = 16
) -> Iterator[np.ndarray]:
    """The distribution of clustered_vectors, generated `batch` rows at a time (for corpora too big
    to hold: 10M x 384 float32 is 15 GiB). Same seed, same stream."""
    rng = np.random.default_rng(seed)
    sub, weights = _centres(rng, dim, topics, subtopics)
    for a in range(0, n, batch):
        label = rng.choice(len(sub), size=min(batch, n - a), p=weights)
        yield _points(rng, sub, label)
