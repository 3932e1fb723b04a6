"""Two models on one multiplexed model replica holding one at a time (fused topology, N=1):
every request answers with its own model's vectors while the replica evicts and reloads models,
each collection is matched by its own model, and a model added by user_config loads on demand."""

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
from testkit.serve_deploy import deploy_app, ingress_actors, replica_actors
from testkit.serve_index import FAQ, publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(
    tiny_artifact: Path, prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    encoders = {"tiny": Encoder.load(tiny_artifact), "e5": Encoder.load(prompted_artifact)}
    base = tmp_path_factory.mktemp("multiplexed-serve")
    roots = {name: base / name for name in ("faq", "e5faq", "wrong")}
    for root in roots.values():
        root.mkdir()
    publish_index(roots["faq"], encoders["tiny"])
    publish_index(roots["e5faq"], encoders["e5"], [(q, a + " (e5)") for q, a in FAQ])
    publish_index(roots["wrong"], encoders["tiny"])  # bound to e5 below: built by the other model
    with start_local_ray(num_cpus=2, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(tiny_artifact),
            "model_name": "tiny",
            "models": {"e5": str(prompted_artifact)},
            "topology": "fused",
            "max_models_per_replica": 1,
            "index": str(roots["faq"]),
            "collections": {
                "e5faq": {"index": str(roots["e5faq"]), "model": "e5"},
                "wrong": {"index": str(roots["wrong"]), "model": "e5"},
            },
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
            "deployments": {"FusedEncoder": {"ray_actor_options": {"num_cpus": 1}}},
        }
        deploy_app(args)
        wait_until(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
        yield {"url": url, "encoders": encoders, "args": args, "tiny_artifact": tiny_artifact}


def test_models_are_evicted_and_reloaded_with_no_failed_request(app: dict[str, Any]) -> None:
    url = app["url"]
    for i, model in enumerate(("tiny", "e5", "tiny", "e5")):  # one resident at a time: every switch reloads
        r = embed(url, model)
        assert r.status_code == 200 and r.json()["model"] == model
        if i:  # the request that waited for its model's load says what it cost (W3C Server-Timing)
            timing = r.headers.get("Server-Timing", "")
            assert timing.startswith("model-load;dur=") and float(timing.split("dur=")[1]) > 0, timing
    with ModelLoad(url, ["tiny", "e5"], app["encoders"]) as load:
        wait_until(lambda: len(load.outcomes) >= 60, 120, "requests under load")
    failed = [o for o in load.outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert max(o[2] for o in load.outcomes) < 1e-5  # each request got its own model's vectors
    models = requests.get(url + "/info", timeout=30).json()["models"]
    for name in ("tiny", "e5"):
        runtime = models[name]["runtime"]
        assert runtime["multiplexed"] and runtime["max_models_per_replica"] == 1
        assert runtime["loads"] >= 2 and runtime["evictions"] >= 1, runtime
    assert sum(models[n]["runtime"]["resident"] for n in ("tiny", "e5")) <= 1
    for name in ("tiny", "e5"):  # the replica that answered lists what its resident model took
        # (not asserted > 0: with one model at a time, a load may fit in pages the evicted one freed)
        memory = models[name]["runtime"]["memory"]
        resident = models[name]["runtime"]["resident_models"]
        assert sorted(memory["model_bytes"]) == resident and memory["rss_bytes"] > 0


def test_each_collection_is_matched_by_its_model_and_a_wrong_one_is_refused(app: dict[str, Any]) -> None:
    url, encoders = app["url"], app["encoders"]
    question = "where is my parcel"
    for collection, name in (("default", "tiny"), ("e5faq", "e5")):
        assert matched_by(url, collection, encoders[name], question) == name
    # Grouped through the one Searcher that holds every model's collections (the model, then the grouping).
    body = {"question": question, "top_k": 3, "collection": "e5faq", "group_by": "answer"}
    grouped = requests.post(url + "/match", json=body, timeout=60).json()
    assert grouped["model"] == "e5" and grouped["grouping"]["groups"] == 3, grouped
    e5 = encoders["e5"]
    want = e5.encode_document([q for q, _ in FAQ]) @ e5.encode_query([question])[0]
    assert [m["id"] - 1000 for m in grouped["matches"]] == np.argsort(-want)[:3].tolist()  # e5's scores
    listed = {c["name"]: c for c in requests.get(url + "/v1/collections", timeout=30).json()["data"]}
    assert {n: c["model"] for n, c in listed.items()} == {"default": "tiny", "e5faq": "e5", "wrong": "e5"}
    assert listed["e5faq"]["refused"] is None and listed["default"]["refused"] is None
    assert "was built with model" in (listed["wrong"]["refused"] or {}).get("reason", "")
    refused = requests.post(url + "/match", json={"question": question, "collection": "wrong"}, timeout=60)
    assert refused.status_code == 503 and refused.headers.get("Retry-After")


def test_a_model_added_by_user_config_loads_on_its_first_request_without_a_restart(
    app: dict[str, Any],
) -> None:
    url = app["url"]
    encoders = replica_actors("FusedEncoder"), ingress_actors()
    base = ingress_user_config(app["args"])
    added = {**base["models"], "tiny2": str(app["tiny_artifact"])}
    deploy_app(app["args"], [{"name": "Ingress", "user_config": {**base, "models": added}}])
    models = lambda: [m["id"] for m in requests.get(url + "/v1/models", timeout=30).json()["data"]]  # noqa: E731
    wait_until(lambda: "tiny2" in models(), 60, "model added")
    got = embed(url, "tiny2")
    assert got.status_code == 200 and got.json()["model"] == "tiny2"
    want = app["encoders"]["tiny"].encode(TEXTS)
    assert np.abs(np.array([d["embedding"] for d in got.json()["data"]]) - want).max() < 1e-5
    assert (replica_actors("FusedEncoder"), ingress_actors()) == encoders  # nothing restarted
