"""Serve helpers for tests: deploy the app declaratively and list the live Ingress replicas."""

from __future__ import annotations

from typing import Any


def deploy_app(args: dict[str, Any], deployments: list[dict[str, Any]] | None = None) -> None:
    """What `serve deploy` sends the controller: one application from import path, args and overrides."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    app = {"name": "qmatch", "route_prefix": "/", "import_path": "deployments.app:build_app", "args": args}
    config = {"applications": [{**app, "deployments": deployments or []}]}
    client = _get_global_client()
    assert client is not None, "Serve is not running (start it with serve_on_loopback)"
    client.deploy_apps(ServeDeploySchema.model_validate(config))


def ingress_actors() -> set[str]:
    """Live Ingress replica actors, from the GCS (the state API needs the dashboard, off here)."""
    return replica_actors("Ingress")


def replica_actors(deployment_class: str) -> set[str]:
    """Live replica actors whose class name holds `deployment_class` (e.g. "MultiplexedEncoder")."""
    from ray._private import state

    return {
        actor_id
        for actor_id, a in state.actors().items()
        if a.get("State") == "ALIVE" and deployment_class in str(a.get("ActorClassName", ""))
    }
