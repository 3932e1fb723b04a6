"""Two models in one real Ray Serve app (inline topology): each model's vectors, each collection matched
by its own model, and a redeploy adding a collection bound to the second model without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from deployments.app import ingress_user_config
from embedder import Encoder
from testkit.model_load import TEXTS, ModelLoad, embed, matched_by
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.serve_deploy import deploy_app, ingress_actors
from testkit.serve_index import FAQ, publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(
    tiny_artifact: Path, prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    encoders = {"tiny": Encoder.load(tiny_artifact), "e5": Encoder.load(prompted_artifact)}
    base = tmp_path_factory.mktemp("models-serve")
    roots = {name: base / name for name in ("faq", "e5faq", "later")}
    for root in roots.values():
        root.mkdir()
    publish_index(roots["faq"], encoders["tiny"])
    publish_index(roots["e5faq"], encoders["e5"], [(q, a + " (e5)") for q, a in FAQ])
    publish_index(roots["later"], encoders["e5"], [(q, a + " (later)") for q, a in FAQ])
    with start_local_ray(num_cpus=2, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(tiny_artifact),
            "model_name": "tiny",
            "models": {"e5": str(prompted_artifact)},
            "index": str(roots["faq"]),
            "collections": {"e5faq": {"index": str(roots["e5faq"]), "model": "e5"}},
            "topology": "inline",
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
            "deployments": {"Ingress": {"ray_actor_options": {"num_cpus": 1}}},
        }
        deploy_app(args)
        wait_until(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
        yield {"url": url, "encoders": encoders, "roots": roots, "args": args, "tiny_artifact": tiny_artifact}


def test_each_model_embeds_and_each_collection_matches_with_its_model(app: dict[str, Any]) -> None:
    url, encoders = app["url"], app["encoders"]
    for name, encoder in encoders.items():
        body = requests.post(url + "/v1/embeddings", json={"input": TEXTS, "model": name}, timeout=30).json()
        assert body["model"] == name
        assert np.abs(np.array([d["embedding"] for d in body["data"]]) - encoder.encode(TEXTS)).max() < 1e-5
    unknown = requests.post(url + "/v1/embeddings", json={"input": "x", "model": "nope"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"
    question = "where is my parcel"
    for collection, name in (("default", "tiny"), ("e5faq", "e5")):
        assert matched_by(url, collection, encoders[name], question) == name
    assert [m["id"] for m in requests.get(url + "/v1/models", timeout=30).json()["data"]] == ["tiny", "e5"]
    memory = requests.get(url + "/info", timeout=30).json()["models"]["e5"]["runtime"]["memory"]
    assert set(memory["model_bytes"]) == {"tiny", "e5"} and min(memory["model_bytes"].values()) > 0


def test_redeploy_adds_a_collection_bound_to_the_second_model_without_restarting(app: dict[str, Any]) -> None:
    from deployments.app import AppArgs, collections_user_config

    url = app["url"]
    replicas = ingress_actors()
    assert replicas
    later = {"index": str(app["roots"]["later"]), "model": "e5"}
    changed = {**app["args"], "collections": {**app["args"]["collections"], "later": later}}
    user_config = {"collections": collections_user_config(AppArgs.model_validate(changed), ["tiny", "e5"])}
    deploy_app(app["args"], [{"name": "Ingress", "user_config": user_config}])
    listed = lambda: {c["name"]: c for c in requests.get(url + "/v1/collections", timeout=30).json()["data"]}  # noqa: E731
    wait_until(lambda: (listed().get("later") or {}).get("version") is not None, 60, "collection added")
    assert listed()["later"]["model"] == "e5" and listed()["later"]["refused"] is None
    got = requests.post(url + "/match", json={"question": "hi", "collection": "later"}, timeout=30).json()
    assert got["model"] == "e5" and all(m["answer"].endswith("(later)") for m in got["matches"])
    assert ingress_actors() == replicas  # the same replica, reconfigured in place


def test_a_model_is_added_and_removed_by_user_config_under_load_without_a_restart(
    app: dict[str, Any],
) -> None:
    url, encoders = app["url"], {**app["encoders"], "tiny2": app["encoders"]["tiny"]}
    replicas = ingress_actors()
    base = ingress_user_config(app["args"])  # what build_app gave the Ingress: serving, collections, models
    models = lambda: [m["id"] for m in requests.get(url + "/v1/models", timeout=30).json()["data"]]  # noqa: E731
    with ModelLoad(url, ["tiny", "e5"], encoders) as load:
        added = {**base["models"], "tiny2": str(app["tiny_artifact"])}  # the tiny artifact under a new name
        deploy_app(app["args"], [{"name": "Ingress", "user_config": {**base, "models": added}}])
        wait_until(lambda: "tiny2" in models(), 60, "model added")
        got = embed(url, "tiny2")
        assert got.status_code == 200 and got.json()["model"] == "tiny2"
        assert (
            np.abs(
                np.array([d["embedding"] for d in got.json()["data"]]) - encoders["tiny"].encode(TEXTS)
            ).max()
            < 1e-5
        )
        deploy_app(app["args"], [{"name": "Ingress", "user_config": base}])
        wait_until(lambda: "tiny2" not in models(), 60, "model removed")
        wait_until(lambda: len(load.outcomes) >= 40, 60, "requests under load")
    failed = [o for o in load.outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert max(o[2] for o in load.outcomes) < 1e-5
    gone = embed(url, "tiny2")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "model_not_found"
    assert models() == ["tiny", "e5"]
    assert ingress_actors() == replicas  # reconfigured in place: the other models were never reloaded
