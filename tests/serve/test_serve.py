"""The HTTP service on a real Ray Serve instance (loopback only): endpoints, errors, hot swap, failover."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from embedder import Encoder
from testkit.bad_requests import Limits, bad_requests, check_refusal
from testkit.closed_loop import ClosedLoop
from testkit.net import http_ok
from testkit.ray_cluster import serve_on_loopback, start_local_ray
from testkit.serve_index import FAQ, publish_index
from testkit.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_INPUTS = 16
MAX_BODY = 200_000
MAX_IN_FLIGHT = 6
LONG_TEXT = "refund policy details " * 200  # ~600 tokens, over the 256-token limit


def _artifact(request: pytest.FixtureRequest, name: str, fallback: str | None) -> Path | None:
    path = REPO / "artifacts" / name
    if (path / "manifest.json").is_file():
        return path
    return request.getfixturevalue(fallback) if fallback else None


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    wait_until(lambda: http_ok(url + "/ready"), timeout, f"{url}/ready to answer 200")


class Service:
    """Base URL of the running app plus what the tests compare against."""

    def __init__(self, url: str, encoder: Encoder, index_root: Path, v1: str, fused_url: str | None) -> None:
        self.url, self.encoder, self.index_root, self.v1, self.fused_url = (
            url,
            encoder,
            index_root,
            v1,
            fused_url,
        )

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        return requests.post(
            self.url + path, json=body, headers={**AUTH, **(headers or {})}, timeout=60, **kw
        )


@pytest.fixture(scope="module")
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from ray import serve

    from deployments.app import build_app

    artifact = Path(request.getfixturevalue("shipped_minilm"))
    encoder = Encoder.load(artifact)
    index_root = tmp_path_factory.mktemp("indexes") / "faq"
    index_root.mkdir()
    v1 = publish_index(index_root, encoder)
    # Logical CPUs for three apps (graph 2.05, inline 2.0, fused 1.25); reservations, not cores.
    with start_local_ray(num_cpus=6, log_to_driver=False), serve_on_loopback() as url:
        args = {
            "artifact": str(artifact),
            "index": str(index_root),
            "api_key": KEY,
            "topology": "graph",
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
            "serving": {"max_inputs": MAX_INPUTS, "max_body_bytes": MAX_BODY, "max_in_flight": MAX_IN_FLIGHT},
            # Two pooling replicas so one can be killed while the other serves.
            "deployments": {"Pooling": {"num_replicas": 2}},
        }
        serve.run(build_app(args), name="default", route_prefix="/", blocking=False)
        # The CPU default: the whole pipeline inside each ingress replica.
        inline_args = {
            "artifact": str(artifact),
            "index": str(index_root),
            "api_key": KEY,
            "poll_seconds": 0.3,
            "session": {"threads": 1, "allow_spinning": False},
        }
        serve.run(build_app(inline_args), name="inline", route_prefix="/inline", blocking=False)
        fused_url = None
        fused = _artifact(request, "minilm-fused", "minilm_fused_artifact")
        if fused is not None:
            fused_args = {"artifact": str(fused), "topology": "fused", "api_key": KEY}
            serve.run(build_app(fused_args), name="fused", route_prefix="/fused", blocking=False)
            fused_url = url + "/fused"
        _wait_ready(url)
        _wait_ready(url + "/inline")
        if fused_url:
            _wait_ready(fused_url)
        yield Service(url, encoder, index_root, v1, fused_url)


def test_health_ready_info_and_page(service: Service) -> None:
    assert requests.get(service.url + "/health").json() == {"status": "ok"}
    assert requests.get(service.url + "/ready").json()["model_fingerprint"] == service.encoder.fingerprint
    info = requests.get(service.url + "/info", headers=AUTH).json()
    assert info["topology"] == "graph" and info["dimension"] == 384 and info["precision"] == "fp32"
    assert info["index"]["size"] == len(FAQ) and info["index"]["fingerprint"] == service.encoder.fingerprint
    page = requests.get(service.url + "/")
    assert page.status_code == 200 and "<form" in page.text and 'fetch("match"' in page.text


def test_openai_client_gets_the_offline_vectors(service: Service) -> None:
    import openai

    client = openai.OpenAI(base_url=service.url + "/v1", api_key=KEY)
    texts = ["How do I reset my password?", "héllo wörld 🤖", LONG_TEXT]
    want = service.encoder.encode(texts)
    # The client asks for base64 by default and decodes it itself.
    got = client.embeddings.create(model="minilm", input=texts)
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    assert float(np.abs(vectors - want).max()) <= 1e-5
    assert [d.index for d in got.data] == [0, 1, 2]
    counts = service.encoder.tokenizer.count_tokens(texts)
    assert got.usage.prompt_tokens == int(np.minimum(counts, service.encoder.max_seq_length).sum())
    floats = client.embeddings.create(model="minilm", input=texts[0], encoding_format="float")
    assert float(np.abs(np.array(floats.data[0].embedding) - want[0]).max()) <= 1e-5
    short = client.embeddings.create(model="minilm", input=texts[:2], dimensions=64)
    cut = np.array([d.embedding for d in short.data], dtype=np.float32)
    assert float(np.abs(cut - service.encoder.encode(texts[:2], dimensions=64)).max()) <= 1e-5


def test_tei_embed(service: Service) -> None:
    text = "Where is my order?"
    r = service.post("/embed", {"inputs": text})
    assert r.status_code == 200
    assert float(np.abs(np.array(r.json()) - service.encoder.encode([text])).max()) <= 1e-5
    raw = np.array(service.post("/embed", {"inputs": [text], "normalize": False}).json())
    assert float(np.abs(raw - service.encoder.encode([text], normalize=False)).max()) <= 1e-4
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3  # really not normalised
    assert service.post("/embed", {"inputs": [LONG_TEXT]}).status_code == 200  # truncate defaults to true


def test_match_single_and_batch(service: Service) -> None:
    r = service.post("/match", {"question": "I forgot my password, what now?"})
    body = r.json()
    assert (
        r.status_code == 200
        and body["index_version"]
        and body["model_fingerprint"] == service.encoder.fingerprint
    )
    matches = body["matches"]
    assert len(matches) == 5 and matches[0]["id"] == 1000 and matches[0]["answer"].startswith("Use")
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    qs = ["where is my parcel?", "do you deliver abroad?"]
    batch = service.post("/match", {"questions": qs, "top_k": 2}).json()
    assert [x["question"] for x in batch["results"]] == qs
    assert [x["matches"][0]["id"] for x in batch["results"]] == [1006, 1007]
    assert all(len(x["matches"]) == 2 for x in batch["results"])
    strict = service.post("/match", {"question": "password reset", "min_score": 0.5}).json()["matches"]
    assert strict and all(m["score"] >= 0.5 for m in strict) and len(strict) < 5


# The one table of client mistakes (testkit/bad_requests.py), with this deployment's limits.
MISTAKES = bad_requests(Limits(MAX_INPUTS, dimension=384, max_seq_length=256, max_body_bytes=MAX_BODY))


@pytest.mark.parametrize(("path", "body", "status", "param"), MISTAKES)
def test_bad_requests_get_4xx_naming_the_field(
    service: Service, path: str, body: Any, status: int, param: str
) -> None:
    if isinstance(body, bytes):
        r = requests.post(service.url + path, data=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = service.post(path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["param"] == param and param.split("[")[0] in err["message"]
    if isinstance(body, dict) and body.get("truncate") is False:
        assert err["token_count"] > err["max_tokens"] == 256 and str(err["token_count"]) in err["message"]
    check_refusal(err, status, param, body, 256)


def test_auth_size_timeout_and_routing_errors(service: Service) -> None:
    good = {"input": "hello"}
    missing = requests.post(service.url + "/v1/embeddings", json=good)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = requests.post(service.url + "/v1/embeddings", json=good, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    big = service.post("/v1/embeddings", {"input": "x" * (MAX_BODY + 10)})
    assert big.status_code == 413 and big.json()["error"]["param"] == "body"
    slow = service.post(
        "/v1/embeddings", {"input": ["a long sentence to embed"] * 16}, {"X-Timeout-Seconds": "0.001"}
    )
    assert slow.status_code == 408 and slow.json()["error"]["type"] == "timeout_error"
    missing_route = requests.get(service.url + "/nope")
    assert missing_route.status_code == 404 and missing_route.json()["error"]["code"] == 404
    # Still ready and still right after all of the above.
    assert requests.get(service.url + "/ready").status_code == 200
    assert service.post("/v1/embeddings", good).status_code == 200


def test_overload_is_429_with_retry_after_never_5xx(service: Service) -> None:
    body = {"input": ["a fairly long question about returns and refunds and shipping"] * MAX_INPUTS}
    with cf.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda _: service.post("/v1/embeddings", body), range(48)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert 429 in codes and 200 in codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and refused.json()["error"]["type"] == "rate_limit_error"
    assert requests.get(service.url + "/ready").status_code == 200


class Loop(ClosedLoop):
    """A bounded closed loop of /match requests from a few threads, recording every outcome."""

    def __init__(self, service: Service, threads: int = 3) -> None:
        super().__init__(threads, limit=5000)
        self.service = service

    def request(self, thread: int, n: int) -> tuple[int, str | None]:
        try:
            r = self.service.post("/match", {"question": "where is my order?", "top_k": 1})
            return (r.status_code, r.json().get("index_version"))
        except requests.RequestException as exc:
            return (0, str(exc))

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> None:
        wait_until(predicate, timeout, "condition")


def test_hot_swap_without_a_failed_request(service: Service) -> None:
    answers = [(q, a + " (v2)") for q, a in FAQ]
    with Loop(service) as loop:
        loop.wait_for(lambda: len(loop.outcomes) >= 10)
        v2 = publish_index(service.index_root, service.encoder, answers, tag="-v2")
        loop.wait_for(lambda: any(v == v2 for _, v in loop.outcomes[-3:]))
        # An index built with another model is refused; v2 keeps serving and /info says why.
        bad = publish_index(
            service.index_root, service.encoder, fingerprint="sha256:0000000000000000", tag="-bad"
        )
        loop.wait_for(
            lambda: (
                (requests.get(service.url + "/info", headers=AUTH).json()["index"]["refused"] or {}).get(
                    "version"
                )
                == bad
            )
        )
        seen_after_bad = len(loop.outcomes)
        loop.wait_for(lambda: len(loop.outcomes) >= seen_after_bad + 10)
    codes = {c for c, _ in loop.outcomes}
    assert codes == {200}, [o for o in loop.outcomes if o[0] != 200][:5]
    versions = [v for _, v in loop.outcomes]
    assert set(versions) <= {service.v1, v2} and versions[-1] == v2
    info = requests.get(service.url + "/info", headers=AUTH).json()["index"]
    assert info["version"] == v2 and "sha256:0000000000000000" in info["refused"]["reason"]
    top = service.post("/match", {"question": "where is my order?", "top_k": 1}).json()["matches"][0]
    assert top["answer"].endswith("(v2)")


def _pooling_replicas() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#Pooling#" in a["name"]}


def test_killed_replica_costs_a_handful_of_requests_and_is_replaced(service: Service) -> None:
    import ray

    before = _pooling_replicas()
    assert len(before) == 2
    victim = sorted(before)[0]
    with Loop(service) as loop:
        loop.wait_for(lambda: len(loop.outcomes) >= 10)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        loop.wait_for(
            lambda: len(_pooling_replicas() - before) == 1 and victim not in _pooling_replicas(), 90
        )
        done = len(loop.outcomes)
        loop.wait_for(lambda: len(loop.outcomes) >= done + 20)
    failures = [o for o in loop.outcomes if o[0] != 200]
    assert len(failures) <= 5, failures
    assert requests.get(service.url + "/ready").status_code == 200


def test_fused_topology_serves_the_same_vectors(service: Service) -> None:
    if service.fused_url is None:
        pytest.skip("no fused artifact at artifacts/minilm-fused (export with --pooling-in-graph)")
    texts = ["How do I reset my password?", "¿Dónde está la estación?"]
    r = requests.post(service.fused_url + "/v1/embeddings", json={"input": texts}, headers=AUTH)
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    assert float(np.abs(got - service.encoder.encode(texts)).max()) <= 1e-5
    info = requests.get(service.fused_url + "/info", headers=AUTH).json()
    assert info["topology"] == "fused" and info["index"] is None
    bad = requests.post(service.fused_url + "/embed", json={"inputs": "x", "normalize": False}, headers=AUTH)
    assert (
        bad.status_code == 422
        and bad.json()["error_type"] == "Validation"
        and "normalize" in bad.json()["error"]
    )


def test_tei_errors_keep_tei_shape(service: Service) -> None:
    long = service.post("/embed", {"inputs": ["fine", LONG_TEXT], "truncate": False})
    assert (
        long.status_code == 413
        and long.json()["error_type"] == "Validation"
        and "inputs[1]" in long.json()["error"]
    )
    wrong = service.post("/embed", {"inputs": "x", "normalize": "yes"})
    assert wrong.status_code == 422 and "normalize" in wrong.json()["error"]


def test_a_poisoned_request_never_fails_its_neighbours(service: Service) -> None:
    """Lone surrogates and deep nesting sent among good requests: only the bad ones fail, with 400."""
    good = {"input": ["where is my order?", "how do I return an item?"]}
    bad = b'{"input": ["fine", "a \\ud800 b"]}'

    def send(i: int) -> tuple[bool, int]:
        if i % 4 == 0:
            r = requests.post(
                service.url + "/v1/embeddings",
                data=bad,
                headers={**AUTH, "Content-Type": "application/json"},
                timeout=60,
            )
            return False, r.status_code
        return True, service.post("/v1/embeddings", good).status_code

    with cf.ThreadPoolExecutor(MAX_IN_FLIGHT - 1) as pool:  # under the in-flight limit: no 429
        outcomes = list(pool.map(send, range(40)))
    assert {code for ok, code in outcomes if ok} == {200}
    assert {code for ok, code in outcomes if not ok} == {400}
    assert requests.get(service.url + "/ready").status_code == 200


def test_inline_topology_serves_the_same_contract(service: Service) -> None:
    base = service.url + "/inline"
    texts = ["How do I reset my password?", "¿Dónde está la estación?"]
    r = requests.post(base + "/v1/embeddings", json={"input": texts}, headers=AUTH, timeout=60)
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    assert float(np.abs(got - service.encoder.encode(texts)).max()) <= 1e-5
    match = requests.post(
        base + "/match", json={"question": "I forgot my password, what now?"}, headers=AUTH, timeout=60
    )
    assert match.json()["matches"][0]["answer"].startswith("Use")
    info = requests.get(base + "/info", headers=AUTH).json()
    assert info["topology"] == "inline" and info["index"]["size"] == len(FAQ)
    assert "/tmp" not in str(info) and str(service.index_root) not in str(info)
