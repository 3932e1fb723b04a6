"""Collections on a real Ray Serve app: independent hot swaps under load, and a redeploy that adds and
removes collections without restarting the replica that holds the model."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from embedder import Encoder
from tests.serve.helpers import FAQ, publish_index

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s")


def _deploy(args: dict[str, Any], deployments: list[dict[str, Any]] | None = None) -> None:
    """What `serve deploy` sends the controller: one application from import path, args and overrides."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    app = {"name": "qmatch", "route_prefix": "/", "import_path": "deployments.app:build_app", "args": args}
    config = {"applications": [{**app, "deployments": deployments or []}]}
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


class App:
    def __init__(self, url: str, encoder: Encoder, roots: dict[str, Path], args: dict[str, Any]) -> None:
        self.url, self.encoder, self.roots, self.args = url, encoder, roots, args

    def match(self, collection: str) -> requests.Response:
        body = {"question": "where is my order?", "top_k": 1, "collection": collection}
        return requests.post(self.url + "/match", json=body, timeout=30)

    def collections(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in requests.get(self.url + "/v1/collections", timeout=30).json()["data"]}


@pytest.fixture(scope="module")
def app(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    import ray
    from ray import serve

    encoder = Encoder.load(tiny_artifact)
    base = tmp_path_factory.mktemp("collections-serve")
    roots = {name: base / name for name in ("shop", "help", "extra")}
    for root in roots.values():
        root.mkdir()
        publish_index(root, encoder, tag=f"-{root.name}-v1")
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "artifact": str(tiny_artifact),
        "index": str(roots["shop"]),
        "collections": {"help": str(roots["help"])},
        "topology": "inline",
        "poll_seconds": 0.3,
        "session": {"threads": 1, "allow_spinning": False},
        "deployments": {"Ingress": {"ray_actor_options": {"num_cpus": 1}}},
    }
    _deploy(args)  # declaratively, as `serve deploy serve_config.yaml` does
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
    try:
        yield App(url, encoder, roots, args)
    finally:
        serve.shutdown()
        ray.shutdown()


class Load:
    """Closed-loop /match requests on two collections from a few threads, every outcome recorded."""

    def __init__(self, app: App, collections: tuple[str, ...]) -> None:
        self.app, self.collections, self.stop = app, collections, threading.Event()
        self.outcomes: list[tuple[str, int, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(4)]

    def _run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set() and len(self.outcomes) < 20_000:
            name = self.collections[(i + n) % len(self.collections)]
            n += 1
            try:
                r = self.app.match(name)
                outcome = (name, r.status_code, r.json().get("index_version"))
            except requests.RequestException as exc:
                outcome = (name, 0, str(exc))
            with self.lock:
                self.outcomes.append(outcome)

    def last(self, name: str) -> str | None:
        with self.lock:
            seen = [v for c, _, v in self.outcomes[-20:] if c == name]
        return seen[-1] if seen else None

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_two_collections_hot_swap_independently_under_load(app: App) -> None:
    before = app.collections()
    with Load(app, ("default", "help")) as load:
        _wait(lambda: len(load.outcomes) >= 20, what="first requests")
        shop_v2 = publish_index(
            app.roots["shop"], app.encoder, [(q, a + " v2") for q, a in FAQ], tag="-shop-v2"
        )
        _wait(lambda: load.last("default") == shop_v2, what="shop v2 live")
        # help did not move while shop swapped
        assert app.collections()["help"]["version"] == before["help"]["version"]
        help_v2 = publish_index(app.roots["help"], app.encoder, tag="-help-v2")
        _wait(lambda: load.last("help") == help_v2, what="help v2 live")
        # A help version built with another model is refused; help v2 and shop keep serving.
        bad = publish_index(app.roots["help"], app.encoder, fingerprint="sha256:0000000000000000", tag="-bad")
        _wait(lambda: (app.collections()["help"]["refused"] or {}).get("version") == bad, what="refusal")
        seen = len(load.outcomes)
        _wait(lambda: len(load.outcomes) >= seen + 20, what="requests after the refusal")
    failed = [o for o in load.outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert {v for c, _, v in load.outcomes if c == "default"} <= {before["default"]["version"], shop_v2}
    assert {v for c, _, v in load.outcomes if c == "help"} <= {before["help"]["version"], help_v2}
    listed = app.collections()
    assert listed["default"]["version"] == shop_v2 and listed["help"]["version"] == help_v2
    assert "sha256:0000000000000000" in listed["help"]["refused"]["reason"]


def _ingress_actors() -> set[str]:
    """Live Ingress replica actors, from the GCS (the state API needs the dashboard, off here)."""
    from ray._private import state

    return {
        actor_id
        for actor_id, a in state.actors().items()
        if a.get("State") == "ALIVE" and "Ingress" in str(a.get("ActorClassName", ""))
    }


def test_redeploy_adds_and_removes_collections_without_restarting_the_model_replica(app: App) -> None:
    from deployments.app import AppArgs, collections_user_config

    replicas = _ingress_actors()
    assert replicas
    # The same args (so the same code version: no restart); the inline Ingress's user_config
    # (its ServingConfig fields and the collection map) changed, as serve_config.yaml would.
    changed = {**app.args, "collections": {"extra": str(app.roots["extra"])}}  # help removed, extra added
    user_config = {"collections": collections_user_config(AppArgs.model_validate(changed))}
    _deploy(app.args, [{"name": "Ingress", "user_config": user_config}])
    _wait(lambda: set(app.collections()) == {"default", "extra"}, what="redeployed collections")
    assert app.match("extra").status_code == 200
    gone = app.match("help")
    assert gone.status_code == 404 and "'help'" in gone.json()["error"]["message"]
    assert _ingress_actors() == replicas  # the same replica, reconfigured in place
