"""The app args' settings sections, resolved and validated once in build_app; what replicas get.

`serving`, `session` and `batching` arrive as mappings (serve_config.yaml, `serve run` key=value).
build_app resolves each on the driver, in the one order of every entry point (default < the args'
mapping < QM_SERVE_* / QM_SESSION_* / QM_SCHED_* environment), so a typo or a bad value fails
build_app at once with one line naming the key, not later inside a replica. Replicas receive the
resolved values and never read their own environment: every replica runs what was validated.
A user_config must stay JSON, so it carries the resolved fields and the replica rebuilds the
dataclass from them without environment overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from embedder.config import SessionConfig, session_config
from engine.scheduler import SchedulerConfig, scheduler_config
from service.auth import KeyTable, auth_config
from service.config import ServingConfig, serving_config
from settings.loader import as_dict, from_mapping

T = TypeVar("T")


class AppArgsError(ValueError):
    """A build_app argument that cannot be used: one line naming the key and why."""


@dataclass(frozen=True)
class AppSettings:
    """The resolved sections: the Ingress gets all of it, a model replica its session and batching."""

    serving: ServingConfig
    session: SessionConfig
    batching: SchedulerConfig
    # FAISS OpenMP threads of the search stage (the Searcher, or the inline Ingress).
    search_threads: int = 1


def section(name: str, build: Callable[[Any], T], data: Mapping[str, Any] | None) -> T:
    """One section resolved; its refusal as AppArgsError prefixed with the section's name."""
    try:
        return build(dict(data) if data is not None else None)
    except ValueError as exc:  # ConfigError names the key or variable; keep it on one line
        raise AppArgsError(f"build_app: {name}: " + " ".join(str(exc).split())) from None


def resolve_settings(
    serving: Mapping[str, Any] | None,
    session: Mapping[str, Any] | None,
    batching: Mapping[str, Any] | None,
    search_threads: int = 1,
) -> AppSettings:
    """Every section resolved on the driver (its environment applies here, and only here)."""
    return AppSettings(
        serving=section("serving", serving_config, serving),
        session=section("session", session_config, session),
        batching=section("batching", scheduler_config, batching),
        search_threads=search_threads,
    )


def batching_user_config(batching: SchedulerConfig) -> dict[str, Any]:
    """The model deployment's user_config: the resolved SchedulerConfig fields (JSON)."""
    return as_dict(batching)


def serving_user_config(serving: ServingConfig) -> dict[str, Any]:
    """The Ingress's user_config: the resolved ServingConfig fields but the API key (JSON).

    The key travels as an init argument instead: Serve shows a deployment's user_config in its
    dashboard and REST API, and a key that came from QM_SERVE_API_KEY (a Secret) must not land there.
    """
    return {k: v for k, v in as_dict(serving).items() if k != "api_key"}


def serving_from_user_config(config: Mapping[str, Any], api_key: str) -> ServingConfig:
    """ServingConfig rebuilt in a replica from user_config (no environment); the init key unless it names one."""
    return from_mapping(ServingConfig, {"api_key": api_key, **config})


def auth_user_config(auth: Mapping[str, Any] | None, serving: ServingConfig) -> dict[str, Any] | None:
    """The `auth` section validated (hashes only, so it may go in the Ingress's user_config, which
    Serve shows), normalised to JSON; None without one. A bad entry is one AppArgsError line."""
    if auth is None:
        return None
    try:
        config = auth_config(auth)
        KeyTable(serving.api_key, config)  # the union with api_key: a clash of names is refused here
    except ValueError as exc:
        raise AppArgsError(f"build_app: {exc}") from None
    return config.model_dump()
