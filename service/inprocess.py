"""In-process stages: tokenizer, onnxruntime model, pooling and FAISS search in this process.

This is the single-box mode (`python -m service`), the speed reference of bench.serve, and the
"inline" Serve topology, where each ingress replica is a whole pipeline and Serve spreads
requests over replicas: on CPU it has no hop to pay between stages.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

import storage
from embedder.artifact import Artifact
from embedder.config import SessionConfig, session_config
from embedder.graph_runner import GraphRunner
from embedder.handoff import HiddenPack, TokenPack, finish_pooled, pack_tokens, pool_pack
from embedder.pooling import Pooler
from embedder.tokenize import TextTokenizer
from index.prompt import DocumentPrompt
from service.collections import CollectionsConfig, CollectionSet, collections_config
from service.index_follower import DEFAULT_POLL_SECONDS, IndexFollower
from service.scheduler import ModelScheduler, PassObserver, SchedulerConfig
from service.stages import EmbedOptions, ModelInfo, SearchResult, TokenSpan

# Tokenizing this many texts takes long enough (~0.1 ms a text) to move off the event loop.
THREAD_TOKENIZE_AT = 64


def model_info(artifact: Artifact, tokenizer: TextTokenizer, name: str = "") -> ModelInfo:
    """What the service needs to know about an artifact."""
    m = artifact.manifest
    prompts = m.prompt_set()  # only prompts with text, as the encoder applies them
    return ModelInfo(
        # The manifest's source_model is often a local path; the artifact directory names the model.
        name=name or (storage.resolve(artifact.origin).name if artifact.origin else artifact.path.name),
        fingerprint=artifact.fingerprint,
        dimension=m.dimension,
        max_seq_length=m.max_seq_length,
        precision=m.precision,
        pooling=m.pooling,
        normalize=m.normalize,
        pooling_in_graph=m.pooling_in_graph,
        vocab_size=tokenizer.vocab_size,
        probe_vectors=artifact.probe_vectors,
        prompts=dict(prompts.prompts),
        default_prompt_name=prompts.default_name,
    )


class LocalTokenizer:
    """The artifact's tokenizer as an async stage (the part every topology can run locally)."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Token ids truncated to max length, counts before truncation; the prompt counts toward both.

        Every topology tokenizes here (inline and fused in the ingress, graph in the Tokenizer
        deployment), so a prompt reaches the model the same way in all of them.
        """
        if len(texts) >= THREAD_TOKENIZE_AT:
            return await asyncio.to_thread(self._pack, texts, prompt)
        return self._pack(texts, prompt)

    def _pack(self, texts: list[str], prompt: str) -> TokenPack:
        return pack_tokens(self.tokenizer.tokenize(texts, truncate=True, prompt=prompt))

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with offsets."""
        rows = self.tokenizer.explain(texts, add_special_tokens)
        return [[TokenSpan(*t) for t in row] for row in rows]


class InProcessStages(LocalTokenizer):
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
        self.model = model_info(self.artifact, self.tokenizer, model_name)
        self.backbone = GraphRunner.from_artifact(self.artifact, session or session_config())
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

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Sentence vectors: model pass (shared with other requests), then this request's pooling."""
        out = await self.scheduler.submit(pack)
        if self.model.pooling_in_graph:
            return finish_pooled(out, options.dimensions, self.model.normalize)
        return pool_pack(self.pooler, HiddenPack(out, pack.lengths), options.normalize, options.dimensions)

    @property
    def index(self) -> IndexFollower | None:
        """The `default` collection's follower (the one-index form), or None."""
        return self.collections.followers.get("default")

    async def search(
        self, vectors: np.ndarray, top_k: int, collection: str = "default", filter: Any = None
    ) -> SearchResult:
        """FAISS search on a collection's live version (fast for the handful of queries a request has)."""
        return self.collections.search(vectors, top_k, collection, filter)

    async def check_search(self, collection: str, filter: Any) -> None:
        """Unknown collection (404) or bad filter (422), before any model work."""
        self.collections.check(collection, filter)

    async def index_status(self) -> dict[str, Any] | None:
        """The `default` collection's live version and size, or None without it."""
        return self.collections.default_status()

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection and the memory budget, or None without collections."""
        return self.collections.status()

    async def runtime(self) -> dict[str, Any]:
        """This process's session: backend, precision, device, CPU units."""
        return self.backbone.runtime.as_dict()
