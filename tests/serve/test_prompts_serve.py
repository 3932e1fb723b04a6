"""A model with prompts on a real Ray Serve graph app (loopback only): the Tokenizer deployment gets the
prompt the service chose, so /match gives questions the query prompt, the probe passes, and the
Searcher deployment refuses an index whose documents got another prompt. Grouped /match crosses the
same Searcher handle (its group_by check, the collection's default, the grouping it answers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from embedder import Encoder
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.serve_index import FAQ, publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]
# The FAQ questions sharing four answers (three phrasings each), for the grouped check.
GROUPED = [(q, f"answer {i % 4}") for i, (q, _) in enumerate(FAQ)]


@pytest.fixture(scope="module")
def app(prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray import serve

    from deployments.app import build_app

    encoder = Encoder.load(prompted_artifact)
    base = tmp_path_factory.mktemp("prompted-serve")
    (base / "faq").mkdir()
    (base / "queried").mkdir()
    (base / "grouped").mkdir()
    publish_index(base / "grouped", encoder, GROUPED)
    publish_index(base / "faq", encoder)  # documents with the document prompt
    bad = publish_index(base / "queried", encoder, prompt_name="query")
    with start_local_ray(num_cpus=4, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(prompted_artifact),
            "index": str(base / "faq"),
            "collections": {
                "queried": str(base / "queried"),
                "grouped": {"index": str(base / "grouped"), "group_by": "answer"},
            },
            "topology": "graph",  # the one topology that tokenizes in its own deployment
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
        }
        serve.run(build_app(args), name="prompted", route_prefix="/", blocking=False)
        wait_until(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
        yield {"url": url, "encoder": encoder, "bad": bad}


def test_match_through_serve_uses_the_query_prompt(app: dict[str, Any]) -> None:
    url, encoder = app["url"], app["encoder"]
    question = "where is my parcel"
    got = requests.post(url + "/match", json={"question": question, "top_k": len(FAQ)}, timeout=30)
    assert got.status_code == 200, got.text
    scores = {m["id"] - 1000: m["score"] for m in got.json()["matches"]}
    documents = encoder.encode_document([q for q, _ in FAQ])
    want = documents @ encoder.encode_query([question])[0]
    assert np.abs(np.array([scores[i] for i in range(len(FAQ))]) - want).max() < 1e-5
    assert np.abs(want - documents @ encoder.encode([question])[0]).max() > 1e-3  # the prompt matters

    embedded = requests.post(url + "/embed", json={"inputs": [question], "prompt_name": "query"}, timeout=30)
    assert np.abs(np.array(embedded.json()) - encoder.encode_query([question])).max() < 1e-5

    listed = {c["name"]: c for c in requests.get(url + "/v1/collections", timeout=30).json()["data"]}
    refused = listed["queried"]["refused"]
    assert refused["version"] == app["bad"] and "prompt 'query' ('query: ')" in refused["reason"]


def test_grouped_match_through_the_searcher_deployment(app: dict[str, Any]) -> None:
    url, encoder = app["url"], app["encoder"]
    question = "where is my parcel"
    body = {"question": question, "top_k": 5, "collection": "grouped"}  # its default group_by: answer
    got = requests.post(url + "/match", json=body, timeout=30)
    assert got.status_code == 200, got.text
    matches, grouping = got.json()["matches"], got.json()["grouping"]
    want = encoder.encode_document([q for q, _ in GROUPED]) @ encoder.encode_query([question])[0]
    best = {}  # brute force: each answer's best row
    for i in np.argsort(-want):
        best.setdefault(GROUPED[i][1], int(i))
    assert [m["id"] - 1000 for m in matches] == list(best.values())  # all 4 answers, best first
    assert all(abs(m["score"] - want[m["id"] - 1000]) < 1e-5 for m in matches)
    assert grouping == {
        "by": "answer",
        "group_size": 1,
        "groups": 4,
        "candidates": 12,
        "stopped": "exhausted",
    }
    assert [m["group_hits"] for m in matches] == [3, 3, 3, 3]
    plain = requests.post(url + "/match", json={**body, "group_by": None}, timeout=30).json()
    assert "grouping" not in plain and len(plain["matches"]) == 5
    bad = requests.post(url + "/match", json={**body, "group_by": "nope"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "group_by"
