"""Backbone deployment: TokenPack -> HiddenPack (per-token vectors of real tokens only)."""

from __future__ import annotations

from ray import serve

from deployments.model_replica import ModelReplica
from embedder.config import SessionConfig
from embedder.handoff import HiddenPack, TokenPack


@serve.deployment
class Backbone(ModelReplica):
    """The ONNX session, shared fairly by concurrent requests."""

    def __init__(self, artifact_dir: str, session: SessionConfig) -> None:
        super().__init__(artifact_dir, session)
        if self.pooled:
            raise ValueError("this artifact pools inside the graph: use topology 'fused' or 'inline'")

    async def __call__(self, pack: TokenPack, tenant: str = "", weight: int = 1) -> HiddenPack:
        """Hidden states of one request's texts, unpadded (`tenant`: whose, for the fair scheduler)."""
        return HiddenPack(await self.run_pack(pack, tenant, weight), pack.lengths)
