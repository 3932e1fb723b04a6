"""Shared dynamic batching for the model-running deployments (Backbone and the fused Encoder).

Requests queue in `@serve.batch`, whose batch size is counted in real tokens (batch_size_fn),
so one long request and forty short ones cost the same budget. The merged rows are then
re-planned by the core planner (sorted by length, cut by padded-token budget) into
onnxruntime calls. Budget and wait are changed at runtime through `reconfigure(user_config)`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Histogram

from embedder.artifact import Artifact
from embedder.backbone import Backbone as CoreBackbone
from embedder.config import SessionConfig, from_mapping
from embedder.serving import (
    BatchTuning,
    TokenPack,
    batch_tuning,
    join_pieces,
    run_merged,
    split_pack,
    total_tokens,
)

SIZE_BUCKETS = [1.0, 2, 4, 8, 16, 32, 64, 128, 256]
TOKEN_BUCKETS = [16.0, 64, 256, 1024, 2048, 4096, 8192, 16384]


class BatchedModel:
    """Holds one onnxruntime session and batches queued TokenPacks into it."""

    def __init__(self, artifact_dir: str, session: dict[str, Any] | None) -> None:
        self.artifact = Artifact.load(artifact_dir)
        self.model = CoreBackbone.from_artifact(
            self.artifact, from_mapping(SessionConfig, session, env_prefix="QM_SESSION_")
        )
        self.pooled = self.artifact.manifest.pooling_in_graph
        self.pad_token_id = self.artifact.manifest.pad_token_id
        self.tuning = BatchTuning()
        self._texts = Histogram("qm_batch_texts", "Texts per onnxruntime call", SIZE_BUCKETS)
        self._tokens = Histogram(
            "qm_batch_padded_tokens", "Padded tokens per onnxruntime call", TOKEN_BUCKETS
        )
        self._requests = Histogram(
            "qm_batch_requests", "Requests merged into one backbone pass", SIZE_BUCKETS
        )
        self._calls = Counter("qm_model_calls", "onnxruntime calls")

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """Apply user_config batching knobs without restarting the replica."""
        self.tuning = batch_tuning(config)
        self._run_batch.set_max_batch_size(self.tuning.batch_tokens)  # type: ignore[attr-defined]
        self._run_batch.set_batch_wait_timeout_s(self.tuning.max_wait_ms / 1000.0)  # type: ignore[attr-defined]

    async def run_pack(self, pack: TokenPack) -> np.ndarray:
        """Per-token vectors (total, d) or pooled vectors (n, d) for one request's pack."""
        pieces = split_pack(pack, self.tuning.batch_tokens)
        outs = await asyncio.gather(*(self._run_batch(p) for p in pieces))
        return join_pieces(outs)

    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.002, batch_size_fn=total_tokens)
    async def _run_batch(self, packs: list[TokenPack]) -> list[np.ndarray]:
        # Runs on the replica's event loop on purpose: while the model computes, new requests
        # queue up and form the next batch, so batches grow with load and not with waiting.
        forward = self.model.run_pooled if self.pooled else self.model.run
        per_pack, calls = run_merged(packs, self.pad_token_id, self.tuning.batch, forward, self.pooled)
        self._requests.observe(len(packs))
        for texts, padded in calls:
            self._texts.observe(texts)
            self._tokens.observe(padded)
            self._calls.inc()
        return per_pack
