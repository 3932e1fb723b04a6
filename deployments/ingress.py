"""Ingress deployment: the Ray-free HTTP service (service/) over the chosen topology's stages.

All routes, validation, limits and the error map live in service/; this class only builds the
Stages for its topology (in-process for "inline", Serve handles for "graph" and "fused"),
and hands Serve the FastAPI app.
"""

from __future__ import annotations

from typing import Any

import faiss
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.model_replica import PassMetrics, scheduler_config
from deployments.stages import FusedStages, GraphStages
from embedder.artifact import Artifact
from embedder.config import session_config
from embedder.tokenize import TextTokenizer
from index.searcher import DEFAULT_SEARCH_THREADS
from service.collections import CollectionsConfig, collections_config
from service.config import serving_config
from service.core import EmbedService
from service.http import create_app
from service.inprocess import InProcessStages, LocalTokenizer, model_info
from service.stages import Stages


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP front door of one topology."""

    def __init__(
        self,
        artifact_dir: str,
        topology: str,
        serving: dict[str, Any] | None = None,
        model_name: str = "",
        handles: dict[str, DeploymentHandle] | None = None,
        inline: dict[str, Any] | None = None,
    ) -> None:
        handles = handles or {}
        stages: Stages
        if topology == "inline":
            opts = inline or {}
            faiss.omp_set_num_threads(int(opts.get("search_threads", DEFAULT_SEARCH_THREADS)))
            # Collections come with user_config (reconfigure), so a `serve deploy` that changes
            # them reconfigures this replica instead of restarting its model.
            stages = InProcessStages(
                artifact_dir,
                collections=CollectionsConfig(),
                session=session_config(opts.get("session")),
                scheduler=scheduler_config(opts.get("batching")),
                model_name=model_name,
                on_pass=PassMetrics(),
            )
        else:
            artifact = Artifact.load(artifact_dir)
            local = LocalTokenizer(TextTokenizer.from_artifact(artifact))
            model = model_info(artifact, local.tokenizer, model_name)
            searcher = handles.get("searcher")
            if topology == "graph":
                stages = GraphStages(
                    model, handles["tokenizer"], handles["backbone"], handles["pooling"], searcher
                )
            else:
                stages = FusedStages(model, local, handles["encoder"], searcher)
        # Request counts and latencies by route and status are Serve's own metrics
        # (ray_serve_num_http_requests, ray_serve_http_request_latency_ms); recording them again
        # here cost ~7% of the event loop's time per request (py-spy, 16 clients).
        self.stages = stages
        self.service = EmbedService(stages, serving_config(serving))

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: ServingConfig fields (limits, timeouts, api_key) changed without a restart.

        Inline topology: also `collections` (service/collections.py), served in this replica.
        """
        config = dict(config or {})
        collections = config.pop("collections", None)
        self.service.reconfigure(serving_config(config))
        if isinstance(self.stages, InProcessStages):
            self.stages.collections.configure(collections_config(collections))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after __init__: the app of this replica's service."""
        return create_app(self.service)
