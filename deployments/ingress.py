"""Ingress deployment: the Ray-free HTTP service (service/) over the chosen topology's backend.

All routes, validation, limits and the error map live in service/; this class only builds the
engine Backend of its topology (in-process for "inline", Serve handles for "graph" and "fused"),
and hands Serve the FastAPI app. Its settings arrive resolved by build_app
(deployments/app_settings.py): the replica never reads its own environment.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.app_models import ModelPlan, replica_plans
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
from engine.model_memory import ModelMemory
from engine.model_set import ModelSet
from engine.scheduler import Lanes
from index.collections import CollectionsConfig, collections_config
from service.auth import AuthConfig, auth_config
from service.core import EmbedService
from service.http import create_app

log = logging.getLogger("qmatch.ingress")


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
        model_memory_bytes: int = 0,
        auth: dict[str, Any] | None = None,
    ) -> None:
        """`models`: the default model's plan (its name and settings); the other models arrive with
        user_config (`models`, deployments/app_models.py), so adding one restarts nothing.
        `model_memory_bytes`: the inline replica's budget for its models (0 = none)."""
        self.memory = ModelMemory(model_memory_bytes)
        self.handles = handles or {}
        self.topology, self.settings = topology, settings
        default = (models or [ModelPlan(model_name, artifact_dir, settings.session, settings.batching)])[0]
        self.default_plan = default
        # Several models: inline holds each in process; fused multiplexes them over the model stage.
        self.multi = topology == "inline" or (topology == "fused" and models is not None)
        self.plans: dict[str, ModelPlan] = {default.name: default}
        backend: Backend
        if topology == "inline":
            faiss.omp_set_num_threads(settings.search_threads)
            # As many passes at once as one model's scheduler runs, across all the models: the
            # sessions are sized for the replica's cores, so more would only split them.
            self.gate = Lanes.of(settings.batching)
            self.metrics = ray_meter()  # Ray metrics are per process: one recorder for every model
            backend = self._model_backend(default)
        elif self.multi:
            backend = self._model_backend(default)
        else:
            artifact = Artifact.load(artifact_dir)
            local = LocalTokenizer(TextTokenizer.from_artifact(artifact))
            model = ModelInfo.from_artifact(artifact, local.tokenizer.vocab_size, model_name)
            searcher = self.handles.get("searcher")
            if topology == "graph":
                backend = GraphBackend(
                    model,
                    self.handles["tokenizer"],
                    self.handles["backbone"],
                    self.handles["pooling"],
                    searcher,
                )
            else:
                backend = FusedBackend(model, local, self.handles["encoder"], searcher)
        # Requests by route, status, model and key, latency and tokens: service/metrics.py's
        # series, recorded by the app's `serve` wrapper into Ray metrics (deployments/serve_metrics.py).
        # Serve's own ray_serve_num_http_requests has no model, key or token count. An earlier
        # recorder here cost ~7% of the event loop's time per request (py-spy, 16 clients); this
        # one makes 3-5 samples per request, not re-measured (docs/operations.md#what-to-watch).
        self.backend = backend
        self.backends: dict[str, Backend] = {default.name: backend}
        self.api_key = settings.serving.api_key
        # The app args' key table (build_app validated it): kept when a user_config has no `auth`,
        # so a user_config written for collections alone never opens the service.
        self.auth: AuthConfig | None = auth_config(auth) if auth is not None else None
        self.service = EmbedService(ModelSet(dict(self.backends)), settings.serving, auth=self.auth)
        # The stages this replica calls, by deployment name: /ready is 503 while one has no live replica.
        stages = sorted({h.deployment_name for h in self.handles.values()})
        self.watch = StageWatch(self.service, stages) if stages else None

    def _model_backend(self, plan: ModelPlan) -> Backend:
        """One model's backend: in process (inline), or over the multiplexed model stage (fused)."""
        if self.topology == "inline":
            # Collections come with user_config (reconfigure), so a `serve deploy` that changes
            # them reconfigures this replica instead of restarting its models.
            # Each model's RSS growth is measured; a load past the replica's budget is refused.
            with self.memory.loading(plan.name, plan.artifact_dir):
                backend = InProcessBackend(
                    plan.artifact_dir,
                    collections=CollectionsConfig(),
                    session=plan.session,
                    scheduler=plan.batching,
                    model_name=plan.name,
                    on_pass=self.metrics,
                )
            backend.memory = self.memory
            backend.scheduler.gate = self.gate  # the replica's passes shared by all its models
            return backend
        # Each model call names its model (multiplexed_model_id), so Serve routes it to a replica
        # that holds it (or loads it there); the plan travels with the call, so the model stage
        # learns a model added by user_config from its first request. One Searcher holds every
        # model's collections (which model matches which: `collection_models` in user_config),
        # and each search names its model.
        info, local = _local_model(plan.artifact_dir, plan.name)
        encoder = self.handles["encoder"].options(multiplexed_model_id=plan.name)
        return FusedBackend(info, local, encoder, self.handles.get("searcher"), names_model=True, plan=plan)

    def _set_models(self, models: dict[str, Any]) -> None:
        """Serve the default model plus exactly `models`; unchanged ones keep their backend."""
        wanted = replica_plans(models, self.default_plan, self.settings.session, self.settings.batching)
        backends = {self.default_plan.name: self.backends[self.default_plan.name]}
        for name, plan in wanted.items():
            same = self.plans.get(name) == plan and name in self.backends
            backends[name] = self.backends[name] if same else self._model_backend(plan)
        for name, old in self.backends.items():
            if name not in backends or backends[name] is not old:
                log.info("model %s %s", name, "removed" if name not in backends else "replaced")
                if isinstance(old, InProcessBackend):
                    old.collections.close()
                    self.memory.forget(name)
        self.plans = {self.default_plan.name: self.default_plan, **wanted}
        self.backends = backends
        self.service.set_models(backends)

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: ServingConfig fields (limits, timeouts, api_key) and `auth` (the key table)
        changed without a restart.

        Inline and fused with several models: also `models` ({name: artifact | {artifact, session,
        batching}}, the models beside the default; absent: unchanged), loaded or dropped in place.
        Inline: also `collections` (index/collections.py), each served in this replica by the
        model it names. Fused with several models: `collection_models` (collection -> model), so
        each /match embeds its question with the model of its collection.
        Rebuilt without environment overrides; the API key stays the one build_app resolved
        unless the user_config names one.
        """
        config = dict(config or {})
        collections = config.pop("collections", None)
        bound = config.pop("collection_models", None)
        models = config.pop("models", None)
        # `auth` (hashes only): the new key table, swapped in at once (a bad one raises here and
        # the old table keeps serving); absent, the args' table stays.
        auth = auth_config(config.pop("auth")) if "auth" in config else self.auth
        serving = serving_from_user_config(config, self.api_key)  # checked before anything changes
        if models is not None:
            if not self.multi:
                raise ValueError(f"user_config models: topology {self.topology!r} serves one model")
            self._set_models(dict(models))
        self.service.reconfigure(serving, auth)
        if bound is not None:  # fused, several models: the Searcher's map
            self.service.models.bound = dict(bound)
        if self.topology == "inline":
            # each collection to the model it names (the default if none)
            self.service.models.configure(collections_config(collections))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after __init__: the app of this replica's service."""
        return create_app(self.service, ray_meter())


def _local_model(artifact_dir: str, name: str) -> tuple[ModelInfo, LocalTokenizer]:
    """A model's ModelInfo and tokenizer, for the Ingress of a staged topology."""
    artifact = Artifact.load(artifact_dir)
    local = LocalTokenizer(TextTokenizer.from_artifact(artifact))
    return ModelInfo.from_artifact(artifact, local.tokenizer.vocab_size, name), local
