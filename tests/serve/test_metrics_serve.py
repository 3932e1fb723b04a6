"""The Serve app's metrics as Prometheus scrapes them (loopback only): a real Ray with its metrics
export port, the fused topology (Ingress + FusedEncoder replicas) over the tiny model, a known
mix of requests, then http://127.0.0.1:<port>/metrics read until the node's metrics agent has
flushed them. Counts per route and status equal what the client got back, tokens equal the
usage the responses reported, the model replica reports its passes, and every series the shipped
Grafana dashboard queries is in the scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.dashboard import queried_series
from testkit.net import free_port, http_ok
from testkit.prometheus_text import Sample, names, scrape, total
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KEY = "metrics-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
APP = "metered"
# Series that only a fused app with several (multiplexed) models records.
MULTIPLEXED_ONLY = {"ray_qm_model_loads_total", "ray_qm_model_evictions_total"}


@pytest.fixture(scope="module")
def app(tiny_artifact: Path) -> Iterator[dict[str, Any]]:
    from ray import serve

    from deployments.app import build_app

    port = free_port()
    with (
        start_local_ray(num_cpus=2, log_to_driver=False, metrics_export_port=port),
        serve_on_loopback() as url,
    ):
        args = {
            "artifact": str(tiny_artifact),
            "model_name": "tiny",
            "topology": "fused",
            "api_key": KEY,
            "session": {"threads": 1, "allow_spinning": False},
            "deployments": {"FusedEncoder": {"ray_actor_options": {"num_cpus": 0.5}}},
        }
        serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
        wait_until(lambda: http_ok(url + "/ready"), 120, "the metered app's /ready")
        yield {"url": url, "metrics": f"http://127.0.0.1:{port}/metrics"}


def _send(url: str) -> tuple[Counter[tuple[str, int]], int]:
    """A known mix of answered and refused requests: (route, status) -> count, and the tokens the
    /v1/embeddings responses reported."""
    sent: Counter[tuple[str, int]] = Counter()
    usage = 0
    calls: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        *[("/v1/embeddings", {"input": [f"where is order {i}", "hello"]}, AUTH) for i in range(5)],
        ("/v1/embeddings", {"input": []}, AUTH),  # 422
        ("/v1/embeddings", {"input": ["no key"]}, {}),  # 401
        *[("/embed", {"inputs": ["how do I reset my password"]}, AUTH) for _ in range(3)],
        ("/embed", {"inputs": [""]}, AUTH),  # empty text
        ("/tokenize", {"inputs": "hello there"}, AUTH),
    ]
    for path, body, headers in calls:
        r = requests.post(url + path, json=body, headers=headers, timeout=60)
        sent[(path, r.status_code)] += 1
        if path == "/v1/embeddings" and r.status_code == 200:
            usage += r.json()["usage"]["prompt_tokens"]
    return sent, usage


def test_scraped_metrics_count_what_was_sent(app: dict[str, Any]) -> None:
    sent, usage = _send(app["url"])
    assert sum(n for (_, status), n in sent.items() if 400 <= status < 500) >= 3, sent
    assert sent[("/v1/embeddings", 200)] == 5 and usage > 0

    mine = {"application": APP}
    got: list[Sample] = []

    def flushed() -> bool:
        nonlocal got
        got = scrape(app["metrics"])
        return total(got, "ray_qm_http_requests_total", **mine) >= sum(sent.values())

    # The metrics agent exports what the replicas reported every few seconds.
    wait_until(flushed, 60, "the metrics agent to export every request", interval=1.0)
    for (route, status), n in sent.items():
        assert total(got, "ray_qm_http_requests_total", **mine, route=route, status=str(status)) == n
    assert total(got, "ray_qm_http_requests_total", **mine) == sum(sent.values())
    assert total(got, "ray_qm_http_requests_total", **mine, status="200", model="tiny") == 9
    assert total(got, "ray_qm_prompt_tokens_total", **mine, route="/v1/embeddings", model="tiny") == usage
    per_route = Counter[str]()
    for (route, _), n in sent.items():
        per_route[route] += n
    for route, n in per_route.items():
        assert total(got, "ray_qm_http_request_seconds_count", **mine, route=route) == n
    refused = sum(n for (_, status), n in sent.items() if status == 401)
    assert total(got, "ray_qm_key_requests_total", **mine, key="default") == sum(sent.values()) - refused
    assert total(got, "ray_qm_key_requests_total", **mine, key="unknown key", status="401") == refused == 1
    # Model passes are recorded by the model replica itself (deployment FusedEncoder).
    encoder = {**mine, "deployment": "FusedEncoder"}
    assert total(got, "ray_qm_batch_requests_count", **encoder) >= 1
    assert total(got, "ray_qm_model_calls_total", **encoder) >= 1
    assert total(got, "ray_serve_deployment_replica_healthy", **mine, deployment="FusedEncoder") == 1
    missing = queried_series("ray_") - MULTIPLEXED_ONLY - names(got)
    assert not missing, f"the dashboard queries series the app does not export: {sorted(missing)}"
