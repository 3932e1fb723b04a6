"""Typed application builder: `serve run deployments.app:build_app artifact=<dir> index=<indexes/name>`.

Topology "graph" (default): Ingress -> Tokenizer -> Backbone -> Pooling -> Searcher, each stage
scaled on its own (tokenizer and search on CPU nodes, backbone on GPU nodes).
Topology "fused": Ingress -> FusedEncoder (tokenizer + model with pooling in the graph) -> Searcher.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.backbone import Backbone
from deployments.fused import FusedEncoder
from deployments.ingress import Ingress
from deployments.pooling import Pooling
from deployments.searcher import Searcher
from deployments.tokenizer import Tokenizer
from embedder.artifact import Artifact

# Per-deployment defaults, chosen for a 2-CPU node: logical CPUs add up to 1.85, so the whole
# graph fits one small node (five 1-CPU replicas would not). Only the backbone computes for
# long; the light stages mostly wait on I/O, so a fraction of a CPU each is their honest share.
# max_ongoing_requests bounds work per replica; max_queued_requests turns overload into a 503
# with Retry-After (backpressure_config) instead of an ever-growing queue.
_BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}
DEFAULTS: dict[str, dict[str, Any]] = {
    # Above ServingConfig.max_in_flight (128), so the ingress answers 429 itself, with our body.
    "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25},
                "max_ongoing_requests": 256, "max_queued_requests": 256},
    "Tokenizer": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2},
                  "max_ongoing_requests": 64, "max_queued_requests": 512},
    # One replica per node's worth of cores; max_ongoing_requests must cover a full batch of
    # queued requests or @serve.batch can never fill.
    "Backbone": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1.0},
                 "max_ongoing_requests": 128, "max_queued_requests": 512},
    "FusedEncoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1.0},
                     "max_ongoing_requests": 128, "max_queued_requests": 512},
    "Pooling": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2},
                "max_ongoing_requests": 64, "max_queued_requests": 512},
    "Searcher": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2},
                 "max_ongoing_requests": 64, "max_queued_requests": 512},
}  # fmt: skip


class AppArgs(BaseModel):
    """Arguments of build_app (CLI `key=value` pairs or the `args:` block of serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    artifact: str
    index: str | None = None
    topology: Literal["graph", "fused"] = "graph"
    # Bearer key for the API routes; empty = no auth (QM_SERVE_API_KEY also sets it).
    api_key: str = ""
    # ServingConfig fields (limits, timeouts); user_config of the ingress.
    serving: dict[str, Any] = Field(default_factory=dict)
    # SessionConfig fields for the onnxruntime session (providers, threads).
    session: dict[str, Any] = Field(default_factory=dict)
    # BatchTuning fields; user_config of the backbone (change at runtime with `serve deploy`).
    batching: dict[str, Any] = Field(default_factory=dict)
    # Pin an index version (null follows CURRENT) and how often CURRENT is checked.
    index_version: str | None = None
    poll_seconds: float = 2.0
    # GPUs for each backbone replica (0 on CPU nodes); with >0, also set session.providers.
    num_gpus: float = 0.0
    # Name reported in responses ("model"); defaults to the artifact directory name.
    model_name: str = ""
    # Per-deployment overrides of DEFAULTS, e.g. {"Backbone": {"num_replicas": 2}}.
    deployments: dict[str, dict[str, Any]] = Field(default_factory=dict)


def deployment_options(name: str, args: AppArgs) -> dict[str, Any]:
    """Options for one deployment: DEFAULTS, then the args' overrides."""
    opts = copy.deepcopy(DEFAULTS[name])
    opts["backpressure_config"] = dict(_BACKPRESSURE)
    override = copy.deepcopy(args.deployments.get(name, {}))
    if "autoscaling_config" in override:
        opts.pop("num_replicas", None)
    actor = {**opts["ray_actor_options"], **override.pop("ray_actor_options", {})}
    if name in ("Backbone", "FusedEncoder") and args.num_gpus:
        actor["num_gpus"] = args.num_gpus
    opts.update(override)
    opts["ray_actor_options"] = actor
    return opts


def _dep(cls: Any) -> Deployment:
    # @serve.deployment turns each class into a Deployment; type checkers still see the class.
    return cast(Deployment, cls)


def build_app(raw: dict[str, Any]) -> Application:
    """Build the Serve application from `serve run` / serve_config.yaml args."""
    args = AppArgs.model_validate(raw)
    artifact_dir = str(Path(args.artifact).resolve())
    artifact = Artifact.load(artifact_dir)  # fail here, with the reason, not inside a replica
    serving = {**args.serving, **({"api_key": args.api_key} if args.api_key else {})}
    session = args.session or None
    searcher = None
    if args.index:
        searcher = (
            _dep(Searcher)
            .options(
                **deployment_options("Searcher", args),
                user_config={"index_version": args.index_version, "poll_seconds": args.poll_seconds},
            )
            .bind(str(Path(args.index).resolve()), artifact.fingerprint)
        )
    common = {"serving": serving, "model_name": args.model_name, "searcher": searcher}
    if args.topology == "fused":
        encoder = (
            _dep(FusedEncoder)
            .options(**deployment_options("FusedEncoder", args), user_config=args.batching)
            .bind(artifact_dir, session)
        )
        ingress = _dep(Ingress).options(**deployment_options("Ingress", args), user_config=serving)
        return ingress.bind(artifact_dir, "fused", encoder, **common)
    tokenizer = _dep(Tokenizer).options(**deployment_options("Tokenizer", args)).bind(artifact_dir)
    backbone = (
        _dep(Backbone)
        .options(**deployment_options("Backbone", args), user_config=args.batching)
        .bind(artifact_dir, session)
    )
    pooling = _dep(Pooling).options(**deployment_options("Pooling", args)).bind(artifact_dir)
    ingress = _dep(Ingress).options(**deployment_options("Ingress", args), user_config=serving)
    return ingress.bind(artifact_dir, "graph", backbone, tokenizer=tokenizer, pooling=pooling, **common)
