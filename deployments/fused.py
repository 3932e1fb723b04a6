"""Fused deployment: TokenPack -> pooled vectors in one replica (artifact exported with pooling in the graph)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from deployments.batching import BatchedModel
from embedder.handoff import TokenPack


@serve.deployment
class FusedEncoder(BatchedModel):
    """The pooled model: one hop from the ingress instead of two."""

    def __init__(self, artifact_dir: str, session: dict[str, Any] | None = None) -> None:
        super().__init__(artifact_dir, session)
        if not self.pooled:
            raise ValueError("topology 'fused' needs an artifact exported with --pooling-in-graph")

    async def __call__(self, pack: TokenPack) -> np.ndarray:
        """Pooled vectors (n, d) of one request's texts."""
        return await self.run_pack(pack)
