"""Fused deployment: texts -> pooled vectors in one replica (artifact exported with pooling in the graph)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from deployments.batching import BatchedModel
from embedder.serving import TokenPack, pack_tokens
from embedder.tokenize import TextTokenizer


@serve.deployment
class FusedEncoder(BatchedModel):
    """Tokenizer and pooled model in one place: the two-hop topology the benchmark compares with."""

    def __init__(self, artifact_dir: str, session: dict[str, Any] | None = None) -> None:
        super().__init__(artifact_dir, session)
        if not self.pooled:
            raise ValueError("topology 'fused' needs an artifact exported with --pooling-in-graph")
        self.tokenizer = TextTokenizer.from_artifact(self.artifact)

    async def __call__(self, texts: list[str]) -> tuple[np.ndarray, TokenPack]:
        """Pooled vectors (n, d) plus the pack (token counts for usage and length checks)."""
        pack = pack_tokens(self.tokenizer.tokenize(texts, truncate=True))
        return await self.run_pack(pack), pack
