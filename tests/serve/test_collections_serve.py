"""Collections on a real Ray Serve app: independent hot swaps under load, a redeploy that adds and
removes collections without restarting the replica that holds the model, and API keys rotated the
same way under load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from embedder import Encoder
from testkit.closed_loop import ClosedLoop
from testkit.keys import bearer, key_entry, new_key
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.serve_deploy import deploy_app, ingress_actors
from testkit.serve_index import FAQ, publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


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

    encoder = Encoder.load(tiny_artifact)
    base = tmp_path_factory.mktemp("collections-serve")
    roots = {name: base / name for name in ("shop", "help", "extra")}
    for root in roots.values():
        root.mkdir()
        publish_index(root, encoder, tag=f"-{root.name}-v1")
    with start_local_ray(num_cpus=4, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(tiny_artifact),
            "index": str(roots["shop"]),
            "collections": {"help": str(roots["help"])},
            "topology": "inline",
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
            "deployments": {"Ingress": {"ray_actor_options": {"num_cpus": 1}}},
        }
        deploy_app(args)  # declaratively, as `serve deploy serve_config.yaml` does
        wait_until(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
        yield App(url, encoder, roots, args)


class Load(ClosedLoop):
    """Closed-loop /match requests on two collections from a few threads, every outcome recorded."""

    def __init__(self, app: App, collections: tuple[str, ...]) -> None:
        super().__init__(threads=4, limit=20_000)
        self.app, self.collections = app, collections

    def request(self, thread: int, n: int) -> tuple[str, int, str | None]:
        name = self.collections[(thread + n) % len(self.collections)]
        try:
            r = self.app.match(name)
            return (name, r.status_code, r.json().get("index_version"))
        except requests.RequestException as exc:
            return (name, 0, str(exc))

    def last(self, name: str) -> str | None:
        with self.lock:
            seen = [v for c, _, v in self.outcomes[-20:] if c == name]
        return seen[-1] if seen else None


def test_two_collections_hot_swap_independently_under_load(app: App) -> None:
    before = app.collections()
    with Load(app, ("default", "help")) as load:
        wait_until(lambda: len(load.outcomes) >= 20, 60, "first requests")
        shop_v2 = publish_index(
            app.roots["shop"], app.encoder, [(q, a + " v2") for q, a in FAQ], tag="-shop-v2"
        )
        wait_until(lambda: load.last("default") == shop_v2, 60, "shop v2 live")
        # help did not move while shop swapped
        assert app.collections()["help"]["version"] == before["help"]["version"]
        help_v2 = publish_index(app.roots["help"], app.encoder, tag="-help-v2")
        wait_until(lambda: load.last("help") == help_v2, 60, "help v2 live")
        # A help version built with another model is refused; help v2 and shop keep serving.
        bad = publish_index(app.roots["help"], app.encoder, fingerprint="sha256:0000000000000000", tag="-bad")
        wait_until(lambda: (app.collections()["help"]["refused"] or {}).get("version") == bad, 60, "refusal")
        seen = len(load.outcomes)
        wait_until(lambda: len(load.outcomes) >= seen + 20, 60, "requests after the refusal")
    failed = [o for o in load.outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert {v for c, _, v in load.outcomes if c == "default"} <= {before["default"]["version"], shop_v2}
    assert {v for c, _, v in load.outcomes if c == "help"} <= {before["help"]["version"], help_v2}
    listed = app.collections()
    assert listed["default"]["version"] == shop_v2 and listed["help"]["version"] == help_v2
    assert "sha256:0000000000000000" in listed["help"]["refused"]["reason"]


def test_lexical_and_hybrid_modes_through_serve(app: App) -> None:
    # publish_index builds the question column's BM25 index, as jobs.build_index does.
    body = {"question": "password", "top_k": 1, "collection": "help", "mode": "lexical"}
    r = requests.post(app.url + "/match", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert (
        r.json()["mode"] == "lexical" and r.json()["matches"][0]["question"] == "How do I reset my password?"
    )
    r = requests.post(app.url + "/match", json={**body, "mode": "hybrid"}, timeout=30)
    assert r.status_code == 200 and (r.json()["mode"], r.json()["alpha"]) == ("hybrid", 1.0)  # unfitted
    r = requests.post(app.url + "/match", json={**body, "mode": "bm25"}, timeout=30)
    assert r.status_code == 422 and "mode" in r.text
    assert app.collections()["help"]["lexical"]["column"] == "question"


def test_redeploy_adds_and_removes_collections_without_restarting_the_model_replica(app: App) -> None:
    from deployments.app import AppArgs, collections_user_config

    replicas = ingress_actors()
    assert replicas
    # The same args (so the same code version: no restart); the inline Ingress's user_config
    # (its ServingConfig fields and the collection map) changed, as serve_config.yaml would.
    changed = {**app.args, "collections": {"extra": str(app.roots["extra"])}}  # help removed, extra added
    user_config = {"collections": collections_user_config(AppArgs.model_validate(changed))}
    deploy_app(app.args, [{"name": "Ingress", "user_config": user_config}])
    wait_until(lambda: set(app.collections()) == {"default", "extra"}, 60, "redeployed collections")
    assert app.match("extra").status_code == 200
    gone = app.match("help")
    assert gone.status_code == 404 and "'help'" in gone.json()["error"]["message"]
    assert ingress_actors() == replicas  # the same replica, reconfigured in place


class KeyedLoad(ClosedLoop):
    """Closed-loop /match requests with the key of the moment (`key`), every (key, status) recorded."""

    def __init__(self, app: App, key: str) -> None:
        super().__init__(threads=3, limit=5_000)
        self.app, self.key = app, key

    def request(self, thread: int, n: int) -> tuple[str, int]:
        key = self.key
        return key, keyed_match(self.app, key)


def keyed_match(app: App, key: str | None) -> int:
    # "default": the earlier tests leave `help`'s CURRENT on a refused version
    body = {"question": "where is my order?", "top_k": 1, "collection": "default"}
    try:
        headers = bearer(key) if key is not None else {}
        return requests.post(app.url + "/match", json=body, headers=headers, timeout=30).status_code
    except requests.RequestException:
        return 0


def test_keys_rotate_by_redeploying_the_ingress_user_config_under_load_with_no_failed_request(
    app: App,
) -> None:
    from deployments.app import ingress_user_config

    old, old_hash = new_key()
    new, new_hash = new_key()
    replicas = ingress_actors()

    def deploy_keys(*entries: dict[str, Any]) -> None:
        # What serve_config.yaml's `deployments: [{name: Ingress, user_config: ...}]` carries: the
        # serving fields, the collections and the key table (hashes only), as build_app would set them.
        keyed = {**app.args, "auth": {"keys": list(entries)}}
        deploy_app(app.args, [{"name": "Ingress", "user_config": ingress_user_config(keyed)}])

    try:
        deploy_keys(key_entry("shop", old_hash, ["default"]))
        wait_until(lambda: keyed_match(app, None) == 401 and keyed_match(app, old) == 200, 60, "keys on")
        with KeyedLoad(app, old) as load:
            wait_until(lambda: len(load.outcomes) >= 20, 60, "requests with the old key")
            deploy_keys(key_entry("shop", old_hash, ["default"]), key_entry("shop-2", new_hash, ["default"]))
            wait_until(lambda: keyed_match(app, new) == 200, 60, "the new key works")
            load.key = new  # clients move to the new key; the old one still works meanwhile
            seen = len(load.outcomes)
            wait_until(lambda: len(load.outcomes) >= seen + 20, 60, "requests with the new key")
            deploy_keys(key_entry("shop-2", new_hash, ["default"]))
            wait_until(lambda: keyed_match(app, old) == 401, 60, "the old key removed")
            seen = len(load.outcomes)
            wait_until(lambda: len(load.outcomes) >= seen + 20, 60, "requests after the removal")
        failed = [o for o in load.outcomes if o[1] != 200]
        assert not failed, failed[:5]
        assert {k for k, _ in load.outcomes} == {old, new}
        assert ingress_actors() == replicas  # keys changed in place: no replica restarted
    finally:  # the module's app as it was: no keys
        deploy_app(app.args, [{"name": "Ingress", "user_config": ingress_user_config(app.args)}])
        wait_until(lambda: keyed_match(app, None) == 200, 60, "keys off again")
