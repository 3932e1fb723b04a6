"""The app's models (`artifact`, `models`, `default_model`), resolved and checked once in build_app.

`models: {name: artifact-uri | {artifact: uri, session: {...}, batching: {...}}}` names every model
the app serves; the `artifact` arg stays valid and is the one model when `models` is absent (named
`model_name`, else its directory). With both, the `artifact` model is the default unless
`default_model` names another; with `models` alone, the first is. Each model's `session` and
`batching` are the app's sections with the model's own keys on top, resolved like the app's
(deployments/app_settings.py), so a typo in one model's section fails build_app naming the model.
Each artifact is loaded here, so a missing or broken one fails build_app, not a replica.

The models beside the default travel in the Ingress's user_config (`models_user_config`), not in
its init args: a `serve deploy` whose `deployments: [{name: Ingress, user_config: {models: ...}}]`
adds or removes one is a lightweight update (Serve calls `reconfigure`, it restarts no replica),
and the replica builds each new plan with `replica_plans` (no environment, as every user_config).
The default model stays in the init args: changing it restarts the replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import storage
from deployments.app_settings import AppArgsError, section
from embedder.artifact import Artifact
from embedder.config import SessionConfig, session_config
from engine.model_info import ModelInfo
from engine.scheduler import SchedulerConfig, scheduler_config
from settings.loader import as_dict, from_mapping


@dataclass(frozen=True)
class ModelPlan:
    """One served model as a replica builds it: its name, artifact URI and resolved settings."""

    name: str
    artifact_dir: str
    session: SessionConfig
    batching: SchedulerConfig
    fingerprint: str = ""


def model_plans(
    artifact: str | None,
    model_name: str,
    models: Mapping[str, str | Mapping[str, Any]],
    default_model: str | None,
    session: Mapping[str, Any] | None,
    batching: Mapping[str, Any] | None,
) -> list[ModelPlan]:
    """Every model, the default first; AppArgsError (one line) for a missing, repeated or bad one."""
    given: dict[str, tuple[str, Mapping[str, Any], Mapping[str, Any]]] = {}
    if artifact is None and not models:
        raise AppArgsError("build_app: give `artifact` (one model) or `models` ({name: artifact, ...})")
    for name, spec in models.items():
        if isinstance(spec, str):
            given[name] = (spec, {}, {})
            continue
        extra = set(spec) - {"artifact", "session", "batching"}
        if extra or not isinstance(spec.get("artifact"), str):
            raise AppArgsError(
                f"build_app: models.{name}: give an artifact URI or {{artifact, session, batching}}"
                + (f" (unknown key(s) {sorted(extra)})" if extra else "")
            )
        given[name] = (spec["artifact"], dict(spec.get("session") or {}), dict(spec.get("batching") or {}))
    plans: list[ModelPlan] = []
    if artifact is not None:
        loaded = _load(artifact, "artifact")
        name = model_name or ModelInfo.default_name(loaded[1])
        if name in given:
            raise AppArgsError(
                f"build_app: models.{name}: the name is already the `artifact` model's "
                "(set model_name, or leave that model out of `models`)"
            )
        plans.append(_plan(name, loaded, session, batching, {}, {}))
    for name, (uri, own_session, own_batching) in given.items():
        plans.append(_plan(name, _load(uri, f"models.{name}"), session, batching, own_session, own_batching))
    names = [p.name for p in plans]
    default = default_model if default_model is not None else names[0]
    if default not in names:
        raise AppArgsError(f"build_app: default_model {default!r} is not one of the models {names}")
    return sorted(plans, key=lambda p: p.name != default)  # stable: the default first, the rest in order


def _load(uri: str, where: str) -> tuple[str, Artifact]:
    """The artifact's URI (local paths made absolute) and the artifact, loaded to check it."""
    resolved = storage.resolve(uri).uri
    try:
        return resolved, Artifact.load(resolved)
    except Exception as exc:  # the reason on one line, naming the argument
        raise AppArgsError(f"build_app: {where}: " + " ".join(str(exc).split())) from None


def _plan(
    name: str,
    loaded: tuple[str, Artifact],
    session: Mapping[str, Any] | None,
    batching: Mapping[str, Any] | None,
    own_session: Mapping[str, Any],
    own_batching: Mapping[str, Any],
) -> ModelPlan:
    """One model's plan: the app's sections with the model's own keys on top, each resolved."""
    where = "" if not (own_session or own_batching) else f"models.{name}."
    merged_session = {**(session or {}), **own_session} if (session or own_session) else None
    merged_batching = {**(batching or {}), **own_batching} if (batching or own_batching) else None
    uri, artifact = loaded
    return ModelPlan(
        name,
        uri,
        section(f"{where}session", session_config, merged_session),
        section(f"{where}batching", scheduler_config, merged_batching),
        artifact.fingerprint,
    )


def models_user_config(plans: list[ModelPlan]) -> dict[str, dict[str, Any]]:
    """The resolved plans as JSON for a user_config: {name: {artifact, session, batching}}."""
    return {
        p.name: {"artifact": p.artifact_dir, "session": as_dict(p.session), "batching": as_dict(p.batching)}
        for p in plans
    }


def replica_plans(
    models: Mapping[str, Any], default: ModelPlan, session: SessionConfig, batching: SchedulerConfig
) -> dict[str, ModelPlan]:
    """A user_config's `models` as plans, in a replica: each model's own keys over the app's sections.

    The same shapes as the `models` arg (an artifact URI, or {artifact, session, batching}); no
    environment applies. A bad entry, or one that names the default model (fixed at start), is a
    ValueError naming it, and the deploy that sent it fails with the replicas unchanged.
    """
    plans: dict[str, ModelPlan] = {}
    for name, spec in models.items():
        if name == default.name:
            raise ValueError(
                f"models.{name}: {name!r} is the default model, given by the app's args (changing it restarts)"
            )
        given: dict[str, Any] = {"artifact": spec} if isinstance(spec, str) else dict(spec)
        extra = set(given) - {"artifact", "session", "batching"}
        if extra or not isinstance(given.get("artifact"), str):
            raise ValueError(f"models.{name}: give an artifact URI or {{artifact, session, batching}}")
        try:
            own_session = from_mapping(SessionConfig, {**as_dict(session), **(given.get("session") or {})})
            own_batching = from_mapping(
                SchedulerConfig, {**as_dict(batching), **(given.get("batching") or {})}
            )
        except ValueError as exc:
            raise ValueError(f"models.{name}: " + " ".join(str(exc).split())) from None
        plans[name] = ModelPlan(name, storage.resolve(given["artifact"]).uri, own_session, own_batching)
    return plans
