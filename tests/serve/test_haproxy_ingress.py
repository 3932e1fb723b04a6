"""The recommended production ingress: Serve's direct ingress behind its bundled HAProxy.

With RAY_SERVE_ENABLE_DIRECT_INGRESS=1 and RAY_SERVE_ENABLE_HA_PROXY=1 (as cluster.yaml starts
every node) ingress replicas run their own HTTP server and HAProxy routes to them; the Python
proxy actor is not in the path. This starts its own small cluster with those settings and checks
that the inline topology answers the same contract through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from embedder import Encoder
from testkit.net import http_ok
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.s3_server import patched_env
from testkit.serve_index import publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def haproxy_url(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from deployments.app import build_app

    root = tmp_path_factory.mktemp("haproxy-index") / "faq"
    root.mkdir()
    publish_index(root, Encoder.load(tiny_artifact))
    # Read by the controller and replicas this cluster starts.
    haproxy = {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # A replica behind HAProxy stays reachable this long when it stops (30 s by default, for
        # HAProxy reloads on a live cluster); nothing routes to it after the test, so 1 s.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }
    with patched_env(haproxy), start_local_ray(log_to_driver=False), serve_on_loopback() as url:
        app = build_app({"artifact": str(tiny_artifact), "index": str(root), "session": {"threads": 1}})
        serve.run(app, name="haproxy", route_prefix="/", blocking=False)
        wait_until(lambda: http_ok(url + "/ready"), timeout=120, what="/ready through HAProxy", interval=0.5)
        yield url


def test_inline_app_answers_through_haproxy(haproxy_url: str, tiny_artifact: Path) -> None:
    encoder = Encoder.load(tiny_artifact)
    texts = ["How do I reset my password?", "Where is my order?"]
    r = requests.post(haproxy_url + "/v1/embeddings", json={"input": texts}, timeout=30)
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    assert r.status_code == 200 and float(np.abs(got - encoder.encode(texts)).max()) <= 1e-5
    match = requests.post(
        haproxy_url + "/match", json={"question": "Where is my order?", "top_k": 1}, timeout=30
    )
    assert match.json()["matches"][0]["question"] == "Where is my order?"
    bad = requests.post(
        haproxy_url + "/v1/embeddings",
        data=b'{"input": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert requests.get(haproxy_url + "/info", timeout=10).json()["topology"] == "inline"
