"""The model replica shared by the model-running deployments (Backbone and FusedEncoder).

Concurrent requests are merged by the same fair, token-budgeted ModelScheduler the in-process
backend uses (engine/scheduler.py): round-robin across requests, so one large request cannot
starve small ones; a failed merged pass is re-run request by request. Budgets change at runtime
through `reconfigure(user_config)`.

The session and the batching arrive resolved by build_app (deployments/app_settings.py): a
replica never reads its own environment, so every replica runs what the driver validated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.serve.metrics import Counter, Histogram

from embedder.artifact import Artifact
from embedder.config import EncoderConfig, SessionConfig
from embedder.encoder import Encoder
from embedder.graph_runner import GraphRunner
from embedder.handoff import TokenPack
from engine.scheduler import ModelScheduler, SchedulerConfig
from settings.loader import from_mapping

SIZE_BUCKETS = [1.0, 2, 4, 8, 16, 32, 64, 128, 256]
TOKEN_BUCKETS = [16.0, 64, 256, 1024, 2048, 4096, 8192, 16384]


class PassMetrics:
    """Ray metrics of model passes (requests merged, texts and padded tokens per onnxruntime call)."""

    def __init__(self) -> None:
        self._texts = Histogram("qm_batch_texts", "Texts per onnxruntime call", SIZE_BUCKETS)
        self._tokens = Histogram(
            "qm_batch_padded_tokens", "Padded tokens per onnxruntime call", TOKEN_BUCKETS
        )
        self._requests = Histogram("qm_batch_requests", "Requests merged into one model pass", SIZE_BUCKETS)
        self._calls = Counter("qm_model_calls", "onnxruntime calls")

    def __call__(self, requests: int, calls: list[tuple[int, int]]) -> None:
        self._requests.observe(requests)
        for texts, padded in calls:
            self._texts.observe(texts)
            self._tokens.observe(padded)
            self._calls.inc()


class ModelReplica:
    """Holds one onnxruntime session and a scheduler that merges queued TokenPacks into it."""

    def __init__(self, artifact_dir: str, session: SessionConfig) -> None:
        self.artifact = Artifact.load(artifact_dir)
        self.model = GraphRunner.from_artifact(self.artifact, session)
        # Like a job actor, a replica re-embeds the probe through its own session and refuses to
        # start when its runtime drifts past the tolerance of the precision it runs (the Encoder
        # verifies the probe when it is built around the replica's runner).
        Encoder(self.artifact, EncoderConfig(session=self.model.config), backbone=self.model)
        self.pooled = self.artifact.manifest.pooling_in_graph
        forward = self.model.run_pooled if self.pooled else self.model.run
        self.scheduler = ModelScheduler(
            forward, self.artifact.manifest.pad_token_id, self.pooled, SchedulerConfig(), PassMetrics()
        )

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """Apply user_config batching knobs without restarting the replica.

        user_config holds SchedulerConfig fields (build_app puts the resolved ones there; a
        `serve deploy` may change them): rebuilt without environment overrides, so what was
        deployed is what runs.
        """
        self.scheduler.config = from_mapping(SchedulerConfig, config)

    def runtime(self) -> dict[str, Any]:
        """Backend, precision, device and CPU units of this replica's session (for /info and /ready)."""
        return self.model.runtime.as_dict()

    async def run_pack(self, pack: TokenPack, tenant: str = "", weight: int = 1) -> np.ndarray:
        """Per-token vectors (total, d) or pooled vectors (n, d) for one request's pack.

        `tenant` / `weight`: the API key the Ingress served it for (the scheduler's round-robin)."""
        return await self.scheduler.submit(pack, tenant, weight)
