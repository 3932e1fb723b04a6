"""`python -m service`'s GET /metrics: the app `main` serves (service/__main__.py's build and
single_box_app) with the tiny model in process, scraped as Prometheus text after a known mix of
requests. Every count is exact: requests per route and status, the tokens the responses reported,
latency observations per route; scrapes, /health and /ready are not counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.__main__ import build, parse_args, single_box_app
from service.metrics import METRICS, Meter, PrometheusSink
from testkit.prometheus_text import Sample, names, parse, total

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture()
def app(tiny_artifact: Path) -> Iterator[TestClient]:
    args = parse_args(["--artifact", str(tiny_artifact), "--model-name", "tiny", "--api-key", KEY])
    sink = PrometheusSink()

    with TestClient(single_box_app(build(args, Meter(sink)), sink)) as client:
        yield client


def _scrape(client: TestClient) -> list[Sample]:
    r = client.get("/metrics")  # no key: a scraper carries none
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def test_metrics_count_each_route_status_and_the_reported_tokens(app: TestClient) -> None:
    usage = 0
    for texts in (["where is my order"], ["hello", "how do I reset my password"], ["x"]):
        r = app.post("/v1/embeddings", json={"input": texts}, headers=AUTH)
        assert r.status_code == 200, r.text
        usage += r.json()["usage"]["prompt_tokens"]
    assert app.post("/v1/embeddings", json={"input": []}, headers=AUTH).status_code == 422
    bad_deadline = {**AUTH, "X-Timeout-Seconds": "soon"}
    assert app.post("/v1/embeddings", json={"input": ["a"]}, headers=bad_deadline).status_code == 400
    assert app.post("/v1/embeddings", json={"input": ["a"]}).status_code == 401  # no key
    for _ in range(2):
        assert app.post("/embed", json={"inputs": ["where is my order"]}, headers=AUTH).status_code == 200
    assert app.post("/tokenize", json={"inputs": "hello"}, headers=AUTH).status_code == 200
    assert app.get("/health").status_code == 200 and app.get("/metrics").status_code == 200

    got = _scrape(app)
    requests = "qm_http_requests_total"
    embeddings = {"route": "/v1/embeddings"}
    assert total(got, requests, **embeddings, status="200", model="tiny") == 3
    assert total(got, requests, **embeddings, status="422", model="tiny") == 1
    assert total(got, requests, **embeddings, status="400", model="") == 1  # no model was chosen yet
    assert total(got, requests, **embeddings, status="401", model="") == 1
    assert total(got, requests, route="/embed", status="200", model="tiny") == 2
    assert total(got, requests, route="/tokenize", status="200", model="tiny") == 1
    assert total(got, requests) == 9  # /health, /ready and the scrapes are not API requests
    assert total(got, "qm_prompt_tokens_total", **embeddings, model="tiny") == usage
    assert total(got, "qm_prompt_tokens_total", route="/tokenize") == 0  # tokenizing embeds nothing
    assert total(got, "qm_http_request_seconds_count", **embeddings) == 6
    assert total(got, "qm_http_request_seconds_count", route="/embed") == 2
    # The single api_key is the key named "default"; a request without a valid key is "unknown key".
    assert total(got, "qm_key_requests_total", key="default", status="200") == 6
    assert total(got, "qm_key_requests_total", key="default") == 8
    assert total(got, "qm_key_requests_total", key="unknown key", status="401") == 1
    assert total(got, "qm_batch_requests_count") >= 1 and total(got, "qm_model_calls_total") >= 1
    # Every series of the table is registered, even the Serve-only ones (loads, evictions).
    serve_only = {"qm_model_loads_total", "qm_model_evictions_total"}
    assert {n for m in METRICS for n in m.exported()} - serve_only <= names(got)


def test_each_app_counts_only_its_own_requests(app: TestClient, tiny_artifact: Path) -> None:
    assert app.post("/embed", json={"inputs": ["hello"]}, headers=AUTH).status_code == 200
    # A second app in the same process starts from zero: its registry is its own, not the global one.
    other_sink = PrometheusSink()
    assert total(parse(other_sink.scrape()[0].decode()), "qm_http_requests_total") == 0
    assert total(_scrape(app), "qm_http_requests_total") == 1
