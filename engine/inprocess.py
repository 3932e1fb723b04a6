"""The in-process backend: tokenizer, onnxruntime model, pooling and FAISS search in this process.

This is the single-box mode (`python -m service`), the speed reference of bench.serve, and the
"inline" Serve topology, where each ingress replica is a whole pipeline and Serve spreads
requests over replicas: on CPU it has no hop to pay between stages.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from embedder.artifact import Artifact
from embedder.config import SessionConfig, session_config
from embedder.graph_runner import GraphRunner
from embedder.handoff import HiddenPack, TokenPack, finish_pooled, pool_pack
from embedder.pooling import Pooler
from embedder.tokenize import TextTokenizer
from engine.backend import EmbedOptions
from engine.local_tokenizer import LocalTokenizer
from engine.model_info import ModelInfo
from engine.model_memory import ModelMemory
from engine.scheduler import ModelScheduler, PassObserver, SchedulerConfig
from index.collections import CollectionsConfig, CollectionSet, collections_config
from index.follower import DEFAULT_POLL_SECONDS, IndexFollower
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult
from index.prompt import DocumentPrompt


class InProcessBackend(LocalTokenizer):
    """Every stage in this process; the model runs through the fair ModelScheduler."""

    topology = "inline"

    def __init__(
        self,
        artifact_dir: str,
        index_root: str | None = None,
        session: SessionConfig | None = None,
        scheduler: SchedulerConfig | None = None,
        model_name: str = "",
        poll_s: float = DEFAULT_POLL_SECONDS,
        index_version: str | None = None,
        on_pass: PassObserver | None = None,
        collections: CollectionsConfig | None = None,
    ) -> None:
        self.artifact = Artifact.load(artifact_dir)
        super().__init__(TextTokenizer.from_artifact(self.artifact))
        self.model = ModelInfo.from_artifact(self.artifact, self.tokenizer.vocab_size, model_name)
        session = session or session_config()
        scheduler = scheduler or SchedulerConfig()
        if not session.concurrent_runs:  # one model call per lane may run at once (engine/scheduler.py)
            session = replace(session, concurrent_runs=scheduler.workers)
        self.backbone = GraphRunner.from_artifact(self.artifact, session)
        self.pooler = Pooler.from_artifact(self.artifact)
        pooled = self.model.pooling_in_graph
        forward = self.backbone.run_pooled if pooled else self.backbone.run
        pad = self.artifact.manifest.pad_token_id
        self.scheduler = ModelScheduler(forward, pad, pooled, scheduler, on_pass)
        # `index_root` is the collection `default` (the one-index form); `collections` names more.
        if collections is None:
            single = {"default": {"index": index_root, "version": index_version}} if index_root else {}
            collections = collections_config({"collections": single, "poll_seconds": poll_s})
        prompt = DocumentPrompt.chosen(self.artifact.manifest.prompt_set())
        self.collections = CollectionSet(self.model.fingerprint, collections, prompt)
        # Set by a host holding several models (the inline Ingress): what each one takes.
        self.memory: ModelMemory | None = None

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Sentence vectors: model pass (shared with other requests), then this request's pooling."""
        out = await self.scheduler.submit(pack, options.tenant, options.weight)
        if self.model.pooling_in_graph:
            return finish_pooled(out, options.dimensions, self.model.normalize)
        return pool_pack(self.pooler, HiddenPack(out, pack.lengths), options.normalize, options.dimensions)

    @property
    def index(self) -> IndexFollower | None:
        """The `default` collection's follower (the one-index form), or None."""
        return self.collections.followers.get("default")

    async def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = "default",
        filter: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """FAISS search on a collection's live version (fast for the handful of queries a request has)."""
        return self.collections.search(vectors, top_k, collection, filter, group, query)

    async def check_search(
        self, collection: str, filter: Any, group: GroupBy | None = None, query: TextQuery | None = None
    ) -> None:
        """Unknown collection (404), bad filter or group_by (422), before any model work."""
        self.collections.check(collection, filter, group, query)

    async def index_status(self) -> dict[str, Any] | None:
        """The `default` collection's live version and size, or None without it."""
        return self.collections.default_status()

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection and the memory budget, or None without collections."""
        return self.collections.status()

    async def runtime(self) -> dict[str, Any]:
        """This process's session: backend, precision, device, CPU units; the models' memory if measured."""
        out = self.backbone.runtime.as_dict()
        if self.memory is not None:
            out["memory"] = self.memory.status()
        return out
