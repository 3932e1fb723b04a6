"""The pooling stage: HiddenStates -> Vectors, configured by the artifact."""

from __future__ import annotations

from embedder.artifact import Artifact
from embedder.pooling import l2_normalize, pool, truncate_dims
from embedder.types import HiddenStates, Vectors


class Pooler:
    """Applies the artifact's pooling mode, normalisation and optional dimension cut."""

    def __init__(self, mode: str, normalize: bool) -> None:
        self.mode = mode
        self.normalize = normalize

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> Pooler:
        """Read pooling mode and normalisation from the manifest."""
        return cls(artifact.manifest.pooling, artifact.manifest.normalize)

    def __call__(
        self, hidden: HiddenStates, normalize: bool | None = None, dimensions: int | None = None
    ) -> Vectors:
        """Pool, normalise (manifest default unless overridden), then cut dimensions."""
        do_norm = self.normalize if normalize is None else normalize
        vectors = pool(hidden.token_embeddings, hidden.attention_mask, self.mode)
        if do_norm:
            vectors = l2_normalize(vectors)
        return Vectors(truncate_dims(vectors, dimensions, do_norm), hidden.positions)
