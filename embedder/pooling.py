"""Numpy pooling: the one implementation shared by the jobs, Serve and the benchmarks."""

from __future__ import annotations

import numpy as np

from embedder.artifact import Artifact
from embedder.batches import HiddenStates, Vectors
from embedder.head import DenseLayer, load_dense

POOLING_MODES = ("mean", "cls", "max", "lasttoken")


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Reduce (b, L, d) token vectors to (b, d) sentence vectors, ignoring padding."""
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(
            f"pool: expected (b, L, d) embeddings and (b, L) mask, got "
            f"{token_embeddings.shape} and {attention_mask.shape}"
        )
    emb = token_embeddings.astype(np.float32, copy=False)
    mask = attention_mask.astype(np.float32)
    if mode == "mean":
        summed = np.einsum("bld,bl->bd", emb, mask)
        counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
        return (summed / counts).astype(np.float32)
    if mode == "cls":
        return emb[:, 0, :].copy()
    if mode == "max":
        # sentence-transformers sets padded positions to -1e9 before the max.
        masked = np.where(mask[:, :, None] > 0, emb, np.float32(-1e9))
        return masked.max(axis=1).astype(np.float32)
    if mode == "lasttoken":
        # Right padding: the last real token sits at (number of real tokens - 1).
        last = np.clip(attention_mask.sum(axis=1).astype(np.int64) - 1, 0, None)
        return emb[np.arange(emb.shape[0]), last, :].copy()
    raise ValueError(f"unknown pooling mode {mode!r}; expected one of {POOLING_MODES}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero), like torch.nn.functional.normalize."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def truncate_dims(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka-style: keep the first `dimensions` values, then re-normalise if asked."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if not 1 <= dimensions <= vectors.shape[1]:
        raise ValueError(f"dimensions must be between 1 and {vectors.shape[1]}, got {dimensions}")
    cut = np.ascontiguousarray(vectors[:, :dimensions])
    return l2_normalize(cut) if normalize else cut


class Pooler:
    """Everything after the backbone, as sentence-transformers runs it: Pooling -> Dense* -> Normalize.

    Then the request's options: normalisation override and the dimension cut. `finish` is the
    last part alone, for vectors pooled (and projected) elsewhere, e.g. in a GPU replica.
    """

    def __init__(self, mode: str, normalize: bool, dense: tuple[DenseLayer, ...] = ()) -> None:
        self.mode = mode
        self.normalize = normalize
        self.dense = dense

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> Pooler:
        """Read pooling mode, Dense layers and normalisation from the manifest."""
        m = artifact.manifest
        return cls(m.pooling, m.normalize, load_dense(artifact.path, m.dense))

    def project(self, pooled: np.ndarray) -> np.ndarray:
        """The Dense layers, in order (none for most models)."""
        for layer in self.dense:
            pooled = layer(pooled)
        return pooled

    def __call__(
        self, hidden: HiddenStates, normalize: bool | None = None, dimensions: int | None = None
    ) -> Vectors:
        """Pool, apply Dense layers, normalise (manifest default unless overridden), then cut dimensions."""
        vectors = self.project(pool(hidden.token_embeddings, hidden.attention_mask, self.mode))
        return Vectors(self.finish(vectors, normalize, dimensions), hidden.positions)

    def finish(
        self, pooled: np.ndarray, normalize: bool | None = None, dimensions: int | None = None
    ) -> np.ndarray:
        """Normalise (manifest default unless overridden) and cut dimensions of vectors pooled and projected unnormalised."""
        do_norm = self.normalize if normalize is None else normalize
        vectors = l2_normalize(pooled) if do_norm else pooled
        return truncate_dims(vectors, dimensions, do_norm)
