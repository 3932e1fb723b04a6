"""Ingress deployment: the Ray-free HTTP service (service/) over the chosen topology's backend.

All routes, validation, limits and the error map live in service/; this class only builds the
engine Backend of its topology (in-process for "inline", Serve handles for "graph" and "fused"),
and hands Serve the FastAPI app. Its settings arrive resolved by build_app
(deployments/app_settings.py): the replica never reads its own environment.
"""

from __future__ import annotations

from typing import Any

import faiss
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.app_models import ModelPlan
from deployments.app_settings import AppSettings, serving_from_user_config
from deployments.handle_backends import FusedBackend, GraphBackend
from deployments.serve_metrics import ray_meter
from deployments.stage_watch import StageWatch
from embedder.artifact import Artifact
from embedder.tokenize import TextTokenizer
from engine.backend import Backend
from engine.inprocess import InProcessBackend
from engine.local_tokenizer import LocalTokenizer
from engine.model_info import ModelInfo
from engine.model_set import ModelSet
from index.collections import CollectionsConfig, collections_config
from service.core import EmbedService
from service.http import create_app


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP front door of one topology."""

    def __init__(
        self,
        artifact_dir: str,
        topology: str,
        settings: AppSettings,
        model_name: str = "",
        handles: dict[str, DeploymentHandle] | None = None,
        models: list[ModelPlan] | None = None,
    ) -> None:
        handles = handles or {}
        backend: Backend
        self.models: ModelSet | None = None
        if topology == "inline":
            faiss.omp_set_num_threads(settings.search_threads)
            # Every model resident in this replica, each with its own scheduler (the default first).
            plans = models or [ModelPlan(model_name, artifact_dir, settings.session, settings.batching)]
            metrics = ray_meter()  # Ray metrics are per process: one recorder for every model
            # Collections come with user_config (reconfigure), so a `serve deploy` that changes
            # them reconfigures this replica instead of restarting its models.
            backends: dict[str, Backend] = {}
            for plan in plans:
                one = InProcessBackend(
                    plan.artifact_dir,
                    collections=CollectionsConfig(),
                    session=plan.session,
                    scheduler=plan.batching,
                    model_name=plan.name,
                    on_pass=metrics,
                )
                backends[one.model.name] = one
            self.models = ModelSet(backends)
            backend = backends[next(iter(backends))]
        elif topology == "fused" and models:
            # Several models over one multiplexed model deployment: each request's handle call
            # names its model, so Serve routes it to a replica holding it (or loads it there).
            # The Searcher serves the default model's collections (build_app checks that).
            backends = {}
            for i, plan in enumerate(models):
                info, local = _local_model(plan.artifact_dir, plan.name)
                encoder = handles["encoder"].options(multiplexed_model_id=plan.name)
                backends[plan.name] = FusedBackend(
                    info, local, encoder, handles.get("searcher") if i == 0 else None
                )
            self.models = ModelSet(backends)
            backend = backends[models[0].name]
        else:
            artifact = Artifact.load(artifact_dir)
            local = LocalTokenizer(TextTokenizer.from_artifact(artifact))
            model = ModelInfo.from_artifact(artifact, local.tokenizer.vocab_size, model_name)
            searcher = handles.get("searcher")
            if topology == "graph":
                backend = GraphBackend(
                    model, handles["tokenizer"], handles["backbone"], handles["pooling"], searcher
                )
            else:
                backend = FusedBackend(model, local, handles["encoder"], searcher)
        # Requests by route, status, model and key, latency and tokens: service/metrics.py's
        # series, recorded by the app's `serve` wrapper into Ray metrics (deployments/serve_metrics.py).
        # Serve's own ray_serve_num_http_requests has no model, key or token count. An earlier
        # recorder here cost ~7% of the event loop's time per request (py-spy, 16 clients); this
        # one makes 3-5 samples per request, not re-measured (docs/operations.md#what-to-watch).
        self.backend = backend
        self.api_key = settings.serving.api_key
        self.service = EmbedService(self.models or backend, settings.serving)
        # The stages this replica calls, by deployment name: /ready is 503 while one has no live replica.
        stages = sorted({h.deployment_name for h in handles.values()})
        self.watch = StageWatch(self.service, stages) if stages else None

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: ServingConfig fields (limits, timeouts, api_key) changed without a restart.

        Inline topology: also `collections` (index/collections.py), each served in this replica
        by the model it names.
        Rebuilt without environment overrides; the API key stays the one build_app resolved
        unless the user_config names one.
        """
        config = dict(config or {})
        collections = config.pop("collections", None)
        self.service.reconfigure(serving_from_user_config(config, self.api_key))
        if isinstance(self.backend, InProcessBackend) and self.models is not None:
            # each collection to the model it names (the default if none)
            self.models.configure(collections_config(collections))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after __init__: the app of this replica's service."""
        return create_app(self.service, ray_meter())


def _local_model(artifact_dir: str, name: str) -> tuple[ModelInfo, LocalTokenizer]:
    """A model's ModelInfo and tokenizer, for the Ingress of a staged topology."""
    artifact = Artifact.load(artifact_dir)
    local = LocalTokenizer(TextTokenizer.from_artifact(artifact))
    return ModelInfo.from_artifact(artifact, local.tokenizer.vocab_size, name), local
