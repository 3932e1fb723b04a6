"""Backends over Serve handles: the staged graph and the fused topology (see engine/backend.py).

Each call is one handle hop, inside deployments.ray_errors.domain_errors: a replica's domain
error arrives as itself and Ray's own failures as engine.errors.BackendUnavailable, so the
service's error map applies unchanged and sees no Ray type.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from deployments.app_models import ModelPlan
from deployments.ray_errors import domain_errors
from embedder.handoff import HiddenPack, TokenPack, finish_pooled
from embedder.pooling import Pooler
from engine import timings as request_timings
from engine.backend import EmbedOptions, TokenSpan
from engine.local_tokenizer import LocalTokenizer
from engine.model_info import ModelInfo
from index.errors import IndexUnavailable
from index.groups import GroupBy
from index.hybrid import TextQuery
from index.matches import SearchResult

NO_INDEX = "this service was started without an index; /match is unavailable"


class _SearcherCalls:
    """The calls to the Searcher deployment both topologies make."""

    searcher: DeploymentHandle | None
    model: ModelInfo
    # Several models share one Searcher (fused): each call names the model that embedded the query.
    names_model: bool = False

    def _model_arg(self) -> tuple[str, ...]:
        return (self.model.name,) if self.names_model else ()

    async def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        collection: str = "default",
        filter: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Top-k matches (grouped: top-k groups) from the Searcher deployment."""
        if self.searcher is None:
            raise IndexUnavailable(NO_INDEX)
        with domain_errors("Searcher"):
            result: SearchResult = await self.searcher.search.remote(
                vectors, top_k, collection, filter, *self._model_arg(), group=group, query=query
            )
        return result

    async def check_search(
        self, collection: str, filter: Any, group: GroupBy | None = None, query: TextQuery | None = None
    ) -> None:
        """The Searcher checks the collection, the filter and group_by (one hop, before the model runs)."""
        if self.searcher is None:
            raise IndexUnavailable(NO_INDEX)
        with domain_errors("Searcher"):
            await self.searcher.check.remote(collection, filter, *self._model_arg(), group=group, query=query)

    async def index_status(self) -> dict[str, Any] | None:
        """The Searcher's `default` collection, or None without one."""
        if self.searcher is None:
            return None
        with domain_errors("Searcher"):
            status: dict[str, Any] | None = await self.searcher.info.remote()
        return status

    async def collections_status(self) -> dict[str, Any] | None:
        """Every collection the Searcher serves, or None without a Searcher."""
        if self.searcher is None:
            return None
        with domain_errors("Searcher"):
            status: dict[str, Any] | None = await self.searcher.collections_status.remote()
        return status


class GraphBackend(_SearcherCalls):
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
        with domain_errors("Tokenizer"):
            pack: TokenPack = await self.tokenizer.remote(texts, prompt)
        return pack

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with offsets from the Tokenizer deployment."""
        with domain_errors("Tokenizer"):
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
        with domain_errors("Backbone"):
            # The tenant travels with the pack, so the model replica's scheduler shares fairly by key.
            hidden: HiddenPack = await self.backbone.remote(pack, options.tenant, options.weight)
        with domain_errors("Pooling"):
            vectors: np.ndarray = await self.pooling.remote(hidden, options.normalize, options.dimensions)
        return vectors

    async def runtime(self) -> dict[str, Any]:
        """The Backbone replica's runtime (one replica answers; all run the same config)."""
        with domain_errors("Backbone"):
            info: dict[str, Any] = await self.backbone.runtime.remote()
        return info


class FusedBackend(LocalTokenizer, _SearcherCalls):
    """Tokenizer in the ingress, model with pooling in one deployment (FusedEncoder), Searcher."""

    topology = "fused"

    def __init__(
        self,
        model: ModelInfo,
        local: LocalTokenizer,
        encoder: DeploymentHandle,
        searcher: DeploymentHandle | None,
        names_model: bool = False,
        plan: ModelPlan | None = None,
    ) -> None:
        """`plan`: the model's plan, sent with each call to a multiplexed model stage (which loads
        the model from it when it does not hold it yet); None for the one-model FusedEncoder."""
        super().__init__(local.tokenizer)
        self.model = model
        self.encoder, self.searcher, self.names_model = encoder, searcher, names_model
        self._plan_arg = () if plan is None else (plan,)
        # Normalisation and the dimension cut for vectors the replica pooled unnormalised.
        self.pooler = Pooler(model.pooling, model.normalize)

    async def encode(self, pack: TokenPack, options: EmbedOptions) -> np.ndarray:
        """Pooled vectors from the FusedEncoder, then this request's normalisation and dimension cut."""
        with domain_errors("FusedEncoder"):
            if self._plan_arg:  # multiplexed: the vectors and how long this call waited for a load
                pooled, load_ms = await self.encoder.remote(
                    pack, *self._plan_arg, options.tenant, options.weight
                )
                if load_ms:
                    request_timings.record("model-load", load_ms)
            else:
                pooled = await self.encoder.remote(pack, options.tenant, options.weight)
        if self.model.pooling_in_graph:
            return finish_pooled(pooled, options.dimensions, self.model.normalize)
        # Pooled in the replica without normalising: the request decides (manifest default otherwise).
        return self.pooler.finish(pooled, options.normalize, options.dimensions)

    async def runtime(self) -> dict[str, Any]:
        """The model replica's runtime (one replica answers; all run the same config)."""
        with domain_errors("FusedEncoder"):
            info: dict[str, Any] = await self.encoder.runtime.remote()
        return info
