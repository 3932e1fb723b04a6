"""Fused deployment: TokenPack -> pooled vectors in one replica, for any artifact.

Artifacts exported with --pooling-in-graph pool inside the ONNX graph; the others are pooled
here, in numpy, next to the session. Either way only one vector per text (1.5 KB for MiniLM)
leaves the replica, where the graph topology ships ~1.5 KB per *token* from Backbone to Ingress
and again to Pooling: on GPU nodes, whose model runs ~100x faster than a CPU's, those copies
would dominate. That is why "auto" picks this topology when replicas get GPUs.
"""

from __future__ import annotations

import numpy as np
from ray import serve

from deployments.model_replica import ModelReplica
from embedder.config import SessionConfig
from embedder.handoff import HiddenPack, TokenPack, pool_pack
from embedder.pooling import Pooler


@serve.deployment
class FusedEncoder(ModelReplica):
    """The model plus pooling: one hop from the ingress instead of two."""

    def __init__(self, artifact_dir: str, session: SessionConfig) -> None:
        super().__init__(artifact_dir, session)
        self.pooler = Pooler.from_artifact(self.artifact)

    async def __call__(self, pack: TokenPack, tenant: str = "", weight: int = 1) -> np.ndarray:
        """Pooled vectors (n, d) of one request's texts; not normalised unless the graph normalises.

        The ingress applies the request's own normalize / dimensions options (FusedBackend.encode).
        """
        out = await self.run_pack(pack, tenant, weight)
        if self.pooled:
            return out
        return pool_pack(self.pooler, HiddenPack(out, pack.lengths), normalize=False, dimensions=None)
