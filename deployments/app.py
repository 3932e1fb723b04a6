"""Typed application builder: `serve run deployments.app:build_app artifact=<dir> index=<indexes/name>`.

Topologies (all serve the same HTTP contract from service/, each over its engine Backend):
- "inline" (the CPU default): each Ingress replica runs tokenizer, model, pooling and search in
  process; scale with Ingress replicas. No hop between stages: on CPU every hop costs CPU time
  that the model needs (measured in bench/results/serve.json).
- "fused" (the GPU default): Ingress (tokenizer) -> FusedEncoder (model + pooling, any artifact)
  -> Searcher. Tokenizer and search stay on CPU nodes, the model on GPU nodes, and one vector per
  text crosses the network (1.5 KB for MiniLM), where "graph" ships the hidden states, ~1.5 KB
  per *token*, from Backbone to Ingress and again to Pooling.
- "graph": Ingress -> Tokenizer -> Backbone -> Pooling -> Searcher, each stage scaled on its own.
"auto" picks inline without GPUs and fused with them.

The `serving`, `session` and `batching` sections are resolved and validated here, once
(deployments/app_settings.py): a typo or a bad value fails build_app with one line naming it,
and replicas receive the resolved values.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

import storage
from deployments.app_args import AppArgs, app_args
from deployments.app_models import ModelPlan, model_plans, models_user_config
from deployments.app_settings import (
    AppArgsError,
    AppSettings,
    auth_user_config,
    batching_user_config,
    resolve_settings,
    serving_user_config,
)
from deployments.backbone import Backbone
from deployments.fused import FusedEncoder
from deployments.ingress import Ingress
from deployments.multiplexed import MultiplexedEncoder
from deployments.pooling import Pooling
from deployments.searcher import Searcher
from deployments.tokenizer import Tokenizer
from embedder.artifact import Artifact
from embedder.config import GPU_BATCH_TOKENS, batch_defaults
from index.collections import collections_config
from index.prompt import DocumentPrompt
from service.config import ServingConfig, serving_config
from settings.loader import as_dict

# Per-deployment defaults, chosen for a 2-CPU node: logical CPUs add up to 1.85, so the whole
# graph fits one small node (five 1-CPU replicas would not). Only the backbone computes for
# long; the light stages mostly wait on I/O, so a fraction of a CPU each is their honest share.
# max_ongoing_requests bounds work per replica; max_queued_requests turns overload into a 503
# with Retry-After (backpressure_config, its Retry-After from ServingConfig.retry_after_s)
# instead of an ever-growing queue.
# The Ingress admits more than ServingConfig.max_in_flight by this much (deployment_options
# derives its max_ongoing_requests), so the service's own admission answers 429 with its own
# body before Serve's queue limit is reached.
INGRESS_HEADROOM = 64
DEFAULTS: dict[str, dict[str, Any]] = {
    "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}, "max_queued_requests": 256},
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


def deployment_options(name: str, args: AppArgs, serving: ServingConfig | None = None) -> dict[str, Any]:
    """Options for one deployment: DEFAULTS, then the args' overrides.

    `serving` is the resolved ServingConfig (build_app passes it; resolved from the args if not).
    """
    opts = copy.deepcopy(DEFAULTS[name])
    serving = serving or serving_config(args.serving)  # the one home of the limits Serve must agree with
    opts["backpressure_config"] = {"status_code": 503, "retry_after_s": serving.retry_after_s}
    if name == "Ingress":
        opts["max_ongoing_requests"] = serving.max_in_flight + INGRESS_HEADROOM
    override = copy.deepcopy(args.deployments.get(name, {}))
    if "autoscaling_config" in override:
        opts.pop("num_replicas", None)
    given = override.pop("ray_actor_options", {})
    actor = {**opts["ray_actor_options"], **given}
    if name in ("Backbone", "FusedEncoder") and args.num_gpus:
        actor["num_gpus"] = args.num_gpus
        # GPU node types advertise CPU 0 (cluster.yaml: so CPU-only work never starts a GPU
        # node); a GPU replica that also asked for a CPU could never be placed on one.
        actor["num_cpus"] = given.get("num_cpus", 0.0)
    opts.update(override)
    opts["ray_actor_options"] = actor
    return opts


def _dep(cls: Any) -> Deployment:
    # @serve.deployment turns each class into a Deployment; type checkers still see the class.
    return cast(Deployment, cls)


# The inline topology on CPU: two passes side by side on single-threaded sessions (one session,
# two worker threads) instead of one pass on a two-threaded session, so no op waits for a
# straggler thread while the HTTP path shares the cores. On a 2-core node with HAProxy ingress
# (bench/results/serve-haproxy.json, "inline-1x2" is the other layout): 0.74 / 0.76 / 0.67 of
# in-process throughput at 4 / 16 / 32 clients against 0.66 / 0.70 / 0.66; single-question p50
# 20.5 ms against 15.2 ms. Reserves the 2 cores it uses.
INLINE_CPU_SESSION = {"threads": 1, "allow_spinning": False}
# tenant_lanes 2: each lane has one core, so keeping one free for another key would halve a lone
# key (engine/scheduler.py); keys share these lanes by round-robin only.
INLINE_CPU_BATCHING = {"workers": 2, "tenant_lanes": 2}
INLINE_CPU_NUM_CPUS = 2.0


def collections_user_config(args: AppArgs, models: list[str] | None = None) -> dict[str, Any]:
    """The collection map (with `index` as "default") and budget, as the search stage's user_config.

    With `models` (the served model names), a collection naming another model is refused here.
    """
    specs: dict[str, Any] = {}
    if args.index:
        specs["default"] = {
            "index": storage.resolve(args.index).uri,
            "version": args.index_version,
            "group_by": args.group_by,
        }
    for name, spec in args.collections.items():
        if name in specs:
            raise ValueError("collection 'default' is given twice: by `index` and in `collections`")
        if isinstance(spec, str):
            specs[name] = storage.resolve(spec).uri
        else:
            specs[name] = {**spec, "index": storage.resolve(str(spec.get("index", ""))).uri}
    out = {
        "collections": specs,
        "memory_budget_bytes": args.collections_memory_bytes,
        "poll_seconds": args.poll_seconds,
    }
    parsed = collections_config(out)  # fail in build_app, with the reason, not inside a replica
    for name, parsed_spec in parsed.collections.items():
        model = parsed_spec.model
        if models is not None and model is not None and model not in models:
            raise AppArgsError(
                f"build_app: collections.{name}: model {model!r} is not served (models: {', '.join(models)})"
            )
    return out


def inline_options(
    args: AppArgs, index_root: str | None = None, serving: ServingConfig | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ingress deployment options and the in-process backend's settings mappings (inline topology).

    `index_root` is unused: the collections (the index among them) travel in the Ingress's
    user_config (collections_user_config), so changing them never restarts the replica.

    Without GPUs, the INLINE_CPU_* layout applies unless the args set session / batching / the
    Ingress's ray_actor_options themselves.
    """
    opts = deployment_options("Ingress", args, serving)
    gpu = {"num_gpus": args.num_gpus} if args.num_gpus else {}
    # The model runs inside the ingress: it reserves what a model replica would.
    # On GPU, CPU 0: GPU node types advertise no CPUs (see deployment_options).
    actor = {"num_cpus": 0.0 if gpu else INLINE_CPU_NUM_CPUS, **gpu}
    opts["ray_actor_options"] = {**actor, **args.deployments.get("Ingress", {}).get("ray_actor_options", {})}
    session, batching = inline_sections(args)
    return opts, {"session": session, "batching": batching, "search_threads": args.search_threads}


def inline_sections(args: AppArgs) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The session and batching mappings of the inline topology: the args', else on CPU INLINE_CPU_*."""
    gpu = bool(args.num_gpus)
    return (
        args.session or (None if gpu else INLINE_CPU_SESSION),
        args.batching or (None if gpu else INLINE_CPU_BATCHING),
    )


def resolve_topology(args: AppArgs) -> str:
    """ "auto": inline on CPU (fastest measured there), fused when replicas get GPUs (see module doc)."""
    if args.topology != "auto":
        return args.topology
    return "fused" if args.num_gpus > 0 else "inline"


def with_gpu_profile(args: AppArgs) -> AppArgs:
    """num_gpus > 0: the CUDA provider and GPU batching unless set; refuse a CPU session on a GPU."""
    if not args.num_gpus:
        return args
    providers = [str(p).strip().lower() for p in args.session.get("providers", ["cuda"])]
    if "cuda" not in providers and not args.cpu_stand_in_for_gpu:
        raise ValueError(
            f"num_gpus={args.num_gpus} reserves a GPU, but session.providers={providers} runs the model on "
            "the CPU: set session.providers to [cuda] (or leave it unset), or num_gpus to 0"
        )
    session = {**args.session, "providers": providers}
    batching = args.batching or {
        # A pass of two full GPU calls: big enough to fill the device, ~10 ms of waiting at most.
        "pass_tokens": 2 * GPU_BATCH_TOKENS,
        "batch": as_dict(batch_defaults("gpu")),
    }
    return args.model_copy(update={"session": session, "batching": batching})


def build_app(raw: dict[str, Any]) -> Application:
    """Build the Serve application from `serve run` / serve_config.yaml args."""
    args = with_gpu_profile(app_args(raw))
    topology = resolve_topology(args)
    serving_args = {**args.serving, **({"api_key": args.api_key} if args.api_key is not None else {})}
    if topology == "inline":  # the inline CPU layout unless the args set session / batching
        session_args, batching_args = inline_sections(args)
    else:
        session_args, batching_args = args.session or None, args.batching
    # Every section resolved and checked here, before any file is read or replica started.
    settings = resolve_settings(serving_args, session_args, batching_args, args.search_threads)
    # Every model's artifact loaded and its sections resolved here, not inside a replica.
    plans = model_plans(
        args.artifact, args.model_name, args.models, args.default_model, session_args, batching_args
    )
    if topology == "graph" and len(plans) > 1:
        raise AppArgsError(
            f"build_app: topology 'graph' serves one model; `models` gives {len(plans)} "
            f"({', '.join(p.name for p in plans)}): use topology 'inline' (every model in every "
            "Ingress replica), 'fused' (multiplexed model replicas), or one app per model"
        )
    collections = collections_user_config(args, [p.name for p in plans])
    auth = auth_user_config(args.auth, settings.serving)
    ingress_config = {**serving_user_config(settings.serving), **({"auth": auth} if auth is not None else {})}
    default = plans[0]
    if topology == "inline":
        opts, _ = inline_options(args, serving=settings.serving)
        user_config = {**ingress_config, "collections": collections, "models": models_user_config(plans[1:])}
        return (
            _dep(Ingress)
            .options(**opts, user_config=user_config)
            .bind(
                default.artifact_dir,
                "inline",
                settings=settings,
                model_name=default.name,
                models=[default],
                model_memory_bytes=args.model_memory_bytes,
                auth=auth,
            )
        )
    artifact = Artifact.load(default.artifact_dir)
    args = args.model_copy(update={"model_name": default.name})
    # The one model's own session / batching keys (if it came from `models`) over the app's.
    settings = dataclasses.replace(settings, session=default.session, batching=default.batching)
    if len(plans) > 1:  # the other models and which collection each matches: lightweight to change
        bound = collection_models(collections, default.name)
        ingress_config = {
            **ingress_config,
            "models": models_user_config(plans[1:]),
            "collection_models": bound,
        }
    return _staged(
        args, topology, default.artifact_dir, artifact, settings, collections, ingress_config, plans, auth
    )


def collection_models(collections: dict[str, Any], default: str) -> dict[str, str]:
    """collection -> the name of the model that matches it (fused with several models: the Ingress's
    user_config, so it routes each /match to the model the Searcher checks the collection with)."""
    return {
        name: (spec.get("model") if isinstance(spec, dict) else None) or default
        for name, spec in collections["collections"].items()
    }


def _collection_check(artifact: Artifact) -> tuple[str, DocumentPrompt]:
    """What a collection's index must agree with to be matched by this model."""
    return artifact.fingerprint, DocumentPrompt.chosen(artifact.manifest.prompt_set())


def _staged(
    args: AppArgs,
    topology: str,
    artifact_dir: str,
    artifact: Artifact,
    settings: AppSettings,
    collections: dict[str, Any],
    ingress_config: dict[str, Any],
    plans: list[ModelPlan] | None = None,
    auth: dict[str, Any] | None = None,
) -> Application:
    """The graph or fused application: its deployments bound, then the Ingress over their handles.

    Fused with several `plans`: one MultiplexedEncoder deployment holds them, at most
    `max_models_per_replica` per replica (deployments/multiplexed.py).
    """
    serving = settings.serving
    handles: dict[str, Any] = {}
    several = plans is not None and len(plans) > 1
    if collections["collections"]:
        # Several models: each collection checked against the fingerprint and prompt of its model.
        checks = {p.name: _collection_check(Artifact.load(p.artifact_dir)) for p in plans or []}
        handles["searcher"] = (
            _dep(Searcher)
            .options(**deployment_options("Searcher", args, serving), user_config=collections)
            .bind(
                artifact.fingerprint,
                settings.search_threads,
                DocumentPrompt.chosen(artifact.manifest.prompt_set()),
                checks if several else None,
            )
        )
    batching = batching_user_config(settings.batching)
    if topology == "fused" and several:
        assert plans is not None
        handles["encoder"] = (
            _dep(MultiplexedEncoder)  # named FusedEncoder: the same `deployments:` key and stage
            .options(name="FusedEncoder", **deployment_options("FusedEncoder", args, serving))
            .bind(args.max_models_per_replica or -1, args.model_memory_bytes)  # N 0: every model
        )
    elif topology == "fused":
        handles["encoder"] = (
            _dep(FusedEncoder)
            .options(**deployment_options("FusedEncoder", args, serving), user_config=batching)
            .bind(artifact_dir, settings.session)
        )
    else:
        handles["tokenizer"] = (
            _dep(Tokenizer).options(**deployment_options("Tokenizer", args, serving)).bind(artifact_dir)
        )
        handles["backbone"] = (
            _dep(Backbone)
            .options(**deployment_options("Backbone", args, serving), user_config=batching)
            .bind(artifact_dir, settings.session)
        )
        handles["pooling"] = (
            _dep(Pooling).options(**deployment_options("Pooling", args, serving)).bind(artifact_dir)
        )
    ingress = _dep(Ingress).options(
        **deployment_options("Ingress", args, serving), user_config=ingress_config
    )
    return ingress.bind(
        artifact_dir,
        topology,
        settings=settings,
        model_name=args.model_name,
        handles=handles,
        models=plans[:1] if several and plans else None,
        auth=auth,
    )


def ingress_user_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The Ingress user_config build_app sets for these args (serving fields, `auth`, and per
    topology `collections`, `models`, `collection_models`): what to put under the Ingress in
    serve_config.yaml's `deployments:` to change keys, collections or models with `serve deploy`
    and no restart. Built by build_app itself, so the two never disagree."""
    bound = build_app(raw)._bound_deployment  # type: ignore[attr-defined]
    return dict(bound._deployment_config.user_config or {})
