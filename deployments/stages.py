"""Stages over Serve handles: the staged graph and the fused topology (see service/stages.py).

Each call is one handle hop; domain exceptions raised in a replica arrive here as the same
exception types (Ray re-raises them as subclasses), so the service's error map applies unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from embedder.errors import IndexUnavailable
from embedder.handoff import HiddenPack, TokenPack, finish_pooled
from embedder.pooling import Pooler
from service.inprocess import LocalTokenizer
from service.stages import EmbedOptions, ModelInfo, SearchResult, TokenSpan


class _Search:
    searcher: DeploymentHandle | None

    async def search(
        self, vectors: np.ndarray, top_k: int, collection: str = "default", filter: Any = None
    ) -> SearchResult:
        """Top-k matches from the Searcher deployment."""
        if self.searcher is None:
            raise IndexUnavailable("this service was started without an index; /match is unavailable")
        result: SearchResult = await self.searcher.search.remote(vectors, top_k, collection, filter)
        return result

    async def check_search(self, collection: str, filter: Any) -> None:
        """The Searcher checks the collection and the filter (one hop, before the model runs)."""
        if self.searcher is None:
            raise IndexUnavailable("this service was started without an index; /match is unavailable")
        await self.searcher.check.remote(collection, filter)

    async def index_status(self) -> dict[str, Any] | None:
        """The Searcher's `default` collection, or None without one."""
        if self.searcher is None:
            return None
        status: dict[str, Any] | None = await self.searcher.info.remote()
        return status

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection the Searcher serves, or None without a Searcher."""
        if self.searcher is None:
            return None
        status: dict[str, Any] | None = await self.searcher.collections_status.remote()
        return status


class GraphStages(_Search):
    """Tokenizer -> Backbone -> Pooling -> Searcher, each its own deployment (scale each stage alone)."""

    topology = "graph"

    def __init__(
        self,
        model: ModelInfo,
        tokenizer: DeploymentHandle,
        backbone: DeploymentHandle,
        pooling: DeploymentHandle,
        searcher: DeploymentHandle | None,
    ) -> None:
        self.model = model
        self.tokenizer, self.backbone, self.pooling, self.searcher = tokenizer, backbone, pooling, searcher

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Token ids from the Tokenizer deployment (which prepends the prompt, as every topology does)."""
        pack: TokenPack = await self.tokenizer.remote(texts, prompt)
        return pack

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with offsets from the Tokenizer deployment."""
        spans: list[list[TokenSpan]] = await self.tokenizer.explain.remote(texts, add_special_tokens)
        return spans

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Backbone, then Pooling, with the hidden states passed by value through here.

        Not by reference (handing Pooling the Backbone's DeploymentResponse): in Ray 2.60 the
        objects passed that way stayed referenced after the request, pinned in the Backbone
        node's object store, and a node holding objects is never removed, so scaled-down GPU
        nodes stayed up (docs/operations.md#autoscaling-shown-on-one-machine;
        bench/results/autoscale.json shows them go now).
        The extra hop costs one copy of the hidden states (~1.5 KB per token).
        """
        hidden: HiddenPack = await self.backbone.remote(pack)
        vectors: np.ndarray = await self.pooling.remote(hidden, options.normalize, options.dimensions)
        return vectors

    async def runtime(self) -> dict[str, Any]:
        """The Backbone replica's runtime (one replica answers; all run the same config)."""
        info: dict[str, Any] = await self.backbone.runtime.remote()
        return info


class FusedStages(LocalTokenizer, _Search):
    """Tokenizer in the ingress, model with pooling in its graph in one deployment, Searcher."""

    topology = "fused"

    def __init__(
        self,
        model: ModelInfo,
        local: LocalTokenizer,
        encoder: DeploymentHandle,
        searcher: DeploymentHandle | None,
    ) -> None:
        super().__init__(local.tokenizer)
        self.model = model
        self.encoder, self.searcher = encoder, searcher
        # Normalisation and the dimension cut for vectors the replica pooled unnormalised.
        self.pooler = Pooler(model.pooling, model.normalize)

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Pooled vectors from the FusedEncoder, then this request's normalisation and dimension cut."""
        pooled: np.ndarray = await self.encoder.remote(pack)
        if self.model.pooling_in_graph:
            return finish_pooled(pooled, options.dimensions, self.model.normalize)
        # Pooled in the replica without normalising: the request decides (manifest default otherwise).
        return self.pooler.finish(pooled, options.normalize, options.dimensions)

    async def runtime(self) -> dict[str, Any]:
        """The model replica's runtime (one replica answers; all run the same config)."""
        info: dict[str, Any] = await self.encoder.runtime.remote()
        return info
