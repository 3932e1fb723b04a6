"""Pooling deployment: HiddenPack -> sentence vectors (artifact's mode, normalisation, dimension cut)."""

from __future__ import annotations

import numpy as np
from ray import serve

from embedder.artifact import Artifact
from embedder.handoff import HiddenPack, pool_pack
from embedder.pooling import Pooler


@serve.deployment
class Pooling:
    """Applies the one pooling implementation to one request's hidden states."""

    def __init__(self, artifact_dir: str) -> None:
        self.pooler = Pooler.from_artifact(Artifact.load(artifact_dir, verify_files=False))

    def __call__(
        self, hidden: HiddenPack, normalize: bool | None = None, dimensions: int | None = None
    ) -> np.ndarray:
        """(n, d') float32 vectors in the request's input order."""
        return pool_pack(self.pooler, hidden, normalize, dimensions)
