"""The Serve app's arguments (`serve run deployments.app:build_app key=value ...` or the `args:`
block of serve_config.yaml), typed and checked once: a wrong key or value is one line naming it.

Their meaning is documented field by field below; docs/options.md is generated from them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.app_settings import AppArgsError
from index.follower import DEFAULT_POLL_SECONDS
from index.searcher import DEFAULT_SEARCH_THREADS


class AppArgs(BaseModel):
    """Arguments of build_app (CLI `key=value` pairs or the `args:` block of serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    # The one model's artifact (named `model_name`); with `models`, the default unless
    # `default_model` names another (deployments/app_models.py).
    artifact: str | None = None
    # Several models: name -> artifact URI, or {artifact: uri, session: {...}, batching: {...}}
    # (the model's keys over the app's sections). Every model is resident in every inline
    # Ingress replica; fused multiplexes them (max_models_per_replica); graph serves one.
    models: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    # Which model a request without `model` gets (default: the `artifact` model, else the first).
    default_model: str | None = None
    # Topology "fused" with several models: the most each model replica holds at once (Ray Serve
    # multiplexing, least recently used evicted); 0 = every model.
    max_models_per_replica: int = Field(default=0, ge=0)
    # Resident bytes one replica holding several models (inline Ingress, fused model replica) may
    # reach: a model load that would pass it is refused with the numbers (503), not run into the
    # OOM killer; each model's measured RSS is in /info (runtime.memory). 0 = no budget.
    model_memory_bytes: int = Field(default=0, ge=0)
    # The index root of the collection "default" (matched by the default model).
    index: str | None = None
    topology: Literal["auto", "inline", "graph", "fused"] = "auto"
    # Shorthand for serving.api_key (the setting's one home is ServingConfig: empty = no auth,
    # QM_SERVE_API_KEY where build_app runs); None leaves it to serving / the environment.
    api_key: str | None = None
    # Keys scoped to collections and routes, by SHA-256 only (service/auth.py):
    # {keys: [{name, sha256, collections: [...] | "*", routes: [...]?, weight: 1}]}. Goes in the
    # Ingress's user_config (hashes only: Serve shows user_config), so an Ingress user_config
    # with another `auth` swaps the keys on `serve deploy` without a restart. With api_key too,
    # both are valid (the api_key is the key "default", with every right).
    auth: dict[str, Any] | None = None
    # ServingConfig fields (limits, timeouts); user_config of the ingress.
    serving: dict[str, Any] = Field(default_factory=dict)
    # SessionConfig fields for the onnxruntime session (providers, threads).
    session: dict[str, Any] = Field(default_factory=dict)
    # SchedulerConfig fields (pass_tokens, batch: {batch_tokens, max_batch_size}); user_config of
    # the model deployment (change at runtime with `serve deploy`).
    batching: dict[str, Any] = Field(default_factory=dict)
    # More collections (index/collections.py): name -> index root, or {index: root, version: pin,
    # model: name} (no model: the default model).
    # `index` above is the collection named "default". Part of the Searcher's (inline: the
    # Ingress's) user_config, so a `serve deploy` that adds or removes one restarts no model.
    collections: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    # Resident bytes all collections together may take in one search replica; 0 = no budget.
    collections_memory_bytes: int = Field(default=0, ge=0)
    # Pin the default collection's version (null follows CURRENT) and how often CURRENT is checked.
    index_version: str | None = None
    # The metadata column /match groups the default collection by when a request gives no
    # group_by (e.g. `answer`: distinct answers); null: ungrouped. Other collections: their
    # `{index, group_by}` in `collections`.
    group_by: str | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS
    # FAISS OpenMP threads of the search stage (why 1 by default: index.searcher.DEFAULT_SEARCH_THREADS).
    search_threads: int = Field(default=DEFAULT_SEARCH_THREADS, ge=1)
    # GPUs for each model replica (0 on CPU nodes). >0 means the CUDA provider (session.providers
    # defaults to [cuda]; a CPU-only session with a GPU reserved is refused) and GPU batching.
    num_gpus: float = 0.0
    # Only for rehearsing GPU scheduling on a fake cluster: let replicas that reserve a (fake) GPU
    # run the CPU provider. The vectors then come from the CPU.
    cpu_stand_in_for_gpu: bool = False
    # Name reported in responses ("model"); defaults to the artifact directory name.
    model_name: str = ""
    # Per-deployment overrides of DEFAULTS, e.g. {"Backbone": {"num_replicas": 2}}.
    deployments: dict[str, dict[str, Any]] = Field(default_factory=dict)


def app_args(raw: dict[str, Any]) -> AppArgs:
    """The args validated: a wrong key or value is an AppArgsError of one line naming it."""
    try:
        return AppArgs.model_validate(raw)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise AppArgsError(f"build_app: {where}") from None
