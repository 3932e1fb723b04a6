"""Two models on one multiplexed model replica holding one at a time (fused topology, N=1):
every request answers with its own model's vectors while the replica evicts and reloads models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from embedder import Encoder
from testkit.closed_loop import ClosedLoop
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.serve_deploy import deploy_app
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TEXTS = ["where is my order", "how do i reset my password"]


@pytest.fixture(scope="module")
def app(tiny_artifact: Path, prompted_artifact: Path) -> Iterator[dict[str, Any]]:
    encoders = {"tiny": Encoder.load(tiny_artifact), "e5": Encoder.load(prompted_artifact)}
    with start_local_ray(num_cpus=2, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(tiny_artifact),
            "model_name": "tiny",
            "models": {"e5": str(prompted_artifact)},
            "topology": "fused",
            "max_models_per_replica": 1,
            "session": {"threads": 1, "allow_spinning": False},
            "deployments": {"FusedEncoder": {"ray_actor_options": {"num_cpus": 1}}},
        }
        deploy_app(args)
        wait_until(lambda: requests.get(url + "/ready", timeout=10).status_code == 200, 120, "ready")
        yield {"url": url, "encoders": encoders}


def embed(url: str, model: str) -> requests.Response:
    return requests.post(url + "/v1/embeddings", json={"input": TEXTS, "model": model}, timeout=60)


class Load(ClosedLoop):
    """Closed-loop /v1/embeddings from a few threads, alternating the two models; every outcome kept."""

    def __init__(self, app: dict[str, Any]) -> None:
        super().__init__(threads=4, limit=2_000)
        self.app = app

    def request(self, thread: int, n: int) -> tuple[str, int, float]:
        model = ("tiny", "e5")[(thread + n) % 2]
        try:
            r = embed(self.app["url"], model)
        except requests.RequestException:
            return (model, 0, 1.0)
        if r.status_code != 200:
            return (model, r.status_code, 1.0)
        got = np.array([d["embedding"] for d in r.json()["data"]])
        return (model, 200, float(np.abs(got - self.app["encoders"][model].encode(TEXTS)).max()))


def test_models_are_evicted_and_reloaded_with_no_failed_request(app: dict[str, Any]) -> None:
    url = app["url"]
    for model in ("tiny", "e5", "tiny", "e5"):  # one resident at a time: every switch is a reload
        r = embed(url, model)
        assert r.status_code == 200 and r.json()["model"] == model
    with Load(app) as load:
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
