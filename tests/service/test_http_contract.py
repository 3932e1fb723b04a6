"""The whole HTTP contract in seconds: every route and error through FastAPI's TestClient.

The dummy backend (testkit/dummy_backend.py) runs the real scheduler, pooling, admission and error map
around a tiny numpy "model", so what is asserted here holds for every topology; the Ray tests in
tests/serve/ prove the same contract end to end on a real Serve cluster.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.bad_requests import Limits, bad_requests, check_refusal
from testkit.dummy_backend import MAX_LEN, POISON, DummyBackend

KEY = "k-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
FAQ = [
    {"id": 1, "question": "how do I reset my password", "answer": "Use Forgot password."},
    {"id": 2, "question": "where is my order", "answer": "Track it."},
    {"id": 3, "question": "can I return an item", "answer": "Within 30 days."},
]
LIMITS = {"max_inputs": 8, "max_body_bytes": 4000, "max_request_tokens": 64, "max_queued_tokens": 64}


def make(backend: DummyBackend | None = None, **limits: Any) -> tuple[TestClient, EmbedService]:
    service = EmbedService(backend or DummyBackend(FAQ), ServingConfig(api_key=KEY, **{**LIMITS, **limits}))
    return TestClient(create_app(service)), service


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    c, _ = make()
    with c:
        yield c


def post(client: TestClient, path: str, body: Any, **kw: Any) -> httpx.Response:
    return client.post(path, json=body, headers={**AUTH, **kw.pop("headers", {})}, **kw)


def test_embeddings_openai_shape_float_and_base64(client: TestClient) -> None:
    r = post(client, "/v1/embeddings", {"input": ["where is my order", "hello"], "model": "x"})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list" and body["model"] == "dummy"
    floats = np.array([d["embedding"] for d in body["data"]], np.float32)
    assert floats.shape == (2, 16) and np.allclose(np.linalg.norm(floats, axis=1), 1, atol=1e-5)
    assert body["usage"] == {"prompt_tokens": 6 + 3, "total_tokens": 9}  # [CLS] words [SEP]
    b64 = post(
        client, "/v1/embeddings", {"input": ["where is my order", "hello"], "encoding_format": "base64"}
    )
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64.json()["data"]])
    assert np.array_equal(decoded, floats)
    # Same text alone or beside others: the same vector (batching never changes a vector).
    alone = post(client, "/v1/embeddings", {"input": "hello"}).json()["data"][0]["embedding"]
    assert np.allclose(alone, floats[1], atol=1e-6)


def test_token_id_inputs_give_the_texts_vectors(client: TestClient) -> None:
    texts = ["where is my order", "hello there"]
    want = np.array([d["embedding"] for d in post(client, "/v1/embeddings", {"input": texts}).json()["data"]])
    spans = post(client, "/tokenize", {"inputs": texts}).json()
    ids = [[t["id"] for t in row] for row in spans]
    got = post(client, "/v1/embeddings", {"input": ids}).json()["data"]
    assert np.allclose([d["embedding"] for d in got], want, atol=1e-6)
    one = post(client, "/v1/embeddings", {"input": ids[0]}).json()["data"]
    assert len(one) == 1 and np.allclose(one[0]["embedding"], want[0], atol=1e-6)
    bad = post(client, "/v1/embeddings", {"input": [[1, 5000, 2]]})
    assert bad.status_code == 422 and "vocabulary" in bad.json()["error"]["message"]


def test_models_and_tokenize(client: TestClient) -> None:
    models = client.get("/v1/models", headers=AUTH).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["dummy"]
    toks = post(client, "/tokenize", {"inputs": "where is", "add_special_tokens": False}).json()
    assert [(t["text"], t["start"], t["stop"], t["special"]) for t in toks[0]] == [
        ("where", 0, 5, False),
        ("is", 6, 8, False),
    ]


def test_tei_embed_and_its_error_shape(client: TestClient) -> None:
    r = post(client, "/embed", {"inputs": "where is my order", "normalize": False})
    vec = np.array(r.json())
    assert r.status_code == 200 and vec.shape == (1, 16) and abs(np.linalg.norm(vec) - 1) > 1e-3
    too_long = post(client, "/embed", {"inputs": ["ok", "w " * 40], "truncate": False})
    assert too_long.status_code == 413 and too_long.json() == {
        "error": "inputs[1] has 42 tokens; the model accepts at most 16 (send truncate=true to cut it)",
        "error_type": "Validation",
    }
    many = post(client, "/embed", {"inputs": ["a"] * 9})
    assert many.status_code == 413 and many.json()["error_type"] == "Validation"
    empty = post(client, "/embed", {"inputs": ["a", "  "]})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"
    wrong_type = post(client, "/embed", {"inputs": "x", "normalize": "yes"})
    assert wrong_type.status_code == 422 and set(wrong_type.json()) == {"error", "error_type"}


def test_match_single_batch_min_score(client: TestClient) -> None:
    r = post(client, "/match", {"question": "reset my password", "top_k": 2})
    body = r.json()
    assert (
        r.status_code == 200 and body["index_version"] == "v1" and body["model_fingerprint"] == "sha256:dummy"
    )
    assert body["matches"][0]["id"] == 1 and len(body["matches"]) == 2
    assert body["matches"][0]["answer"] == "Use Forgot password."
    batch = post(client, "/match", {"questions": ["where is my order", "return an item"], "top_k": 1}).json()
    assert [(x["question"], x["matches"][0]["id"]) for x in batch["results"]] == [
        ("where is my order", 2),
        ("return an item", 3),
    ]
    strict = post(client, "/match", {"question": "where is my order", "min_score": 0.99}).json()["matches"]
    assert [m["id"] for m in strict] == [2]


# The shared table (testkit/bad_requests.py) plus the mistakes only this server's limits and
# model can show: a request over max_request_tokens (64 here), a prompt_name of a model without prompts.
MISTAKES = [
    *bad_requests(Limits(LIMITS["max_inputs"], dimension=16, max_seq_length=MAX_LEN, max_body_bytes=4000)),
    ("/v1/embeddings", {"input": ["w " * 14] * 5}, 422, "input"),  # 5 x 16 tokens > 64 per request
    ("/v1/embeddings", {"input": "x", "prompt_name": "query"}, 422, "prompt_name"),  # no prompts
    ("/match", {"question": "w " * 40, "truncate": False}, 422, "question"),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), MISTAKES)
def test_client_mistakes_get_a_precise_4xx(
    client: TestClient, path: str, body: Any, status: int, param: str
) -> None:
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = post(client, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["param"] == param and err["type"] == "invalid_request_error"
    check_refusal(err, status, param, body, MAX_LEN)
    assert client.get("/ready").status_code == 200  # nothing a client sends makes us unready


def test_input_too_long_reports_token_counts(client: TestClient) -> None:
    err = post(client, "/match", {"question": "w " * 40, "truncate": False}).json()["error"]
    assert err["token_count"] == 42 and err["max_tokens"] == MAX_LEN and "42" in err["message"]


def test_auth_size_timeout_and_routing(client: TestClient) -> None:
    missing = client.post("/v1/embeddings", json={"input": "x"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "Unauthorized"
    big = post(client, "/v1/embeddings", {"input": "x" * 5000})
    assert big.status_code == 413 and big.json()["error"]["param"] == "body"
    bad_deadline = post(client, "/v1/embeddings", {"input": "x"}, headers={"X-Timeout-Seconds": "soon"})
    assert bad_deadline.status_code == 400 and bad_deadline.json()["error"]["param"] == "X-Timeout-Seconds"
    nope = client.get("/nope")
    assert nope.status_code == 404 and nope.json()["error"]["code"] == 404
    # Probes and the page stay open without a key.
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and 'type="submit"' in page.text


def test_info_says_what_is_served_without_server_paths(client: TestClient) -> None:
    info = client.get("/info", headers=AUTH).json()
    assert info["topology"] == "dummy" and info["dimension"] == 16 and info["index"]["size"] == 3
    assert info["limits"]["max_inputs"] == 8
    assert "/tmp" not in str(info) and "/work" not in str(info)


def test_openapi_describes_request_and_response_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, schema in [
        ("/v1/embeddings", "EmbeddingsRequest"),
        ("/embed", "EmbedRequest"),
        ("/tokenize", "TokenizeRequest"),
        ("/match", "MatchRequest"),
    ]:
        op = spec["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(schema)
        assert "200" in op["responses"] and "422" in op["responses"]
        assert schema in spec["components"]["schemas"]
    assert "input" in spec["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert client.get("/docs").status_code == 200


def wait_ready(c: TestClient, timeout_s: float = 10.0) -> None:
    """Poll /ready (bounded) until the readiness probe has gone through the backend."""
    deadline = time.monotonic() + timeout_s
    while c.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, c.get("/ready").text
        time.sleep(0.05)


def test_timeout_is_408_and_the_service_stays_ready() -> None:
    c, _ = make(DummyBackend(FAQ, delay_s=0.3))
    with c:
        wait_ready(c)
        slow = post(c, "/v1/embeddings", {"input": ["a b c"]}, headers={"X-Timeout-Seconds": "0.05"})
        assert slow.status_code == 408 and slow.json()["error"]["type"] == "timeout_error"
        assert c.get("/ready").status_code == 200
        assert post(c, "/v1/embeddings", {"input": "x"}).status_code == 200


def test_a_deadline_missed_while_a_stage_has_no_replica_is_a_503_and_not_ready() -> None:
    c, service = make(DummyBackend(FAQ, delay_s=0.3))
    with c:
        wait_ready(c)
        # What deployments.stage_watch sets while a stage's node is lost and Serve replaces it.
        service.unavailable = "no running replica of FusedEncoder"
        ready = c.get("/ready")
        assert ready.status_code == 503 and "FusedEncoder" in ready.json()["error"]["message"]
        waited = post(c, "/v1/embeddings", {"input": ["a b c"]}, headers={"X-Timeout-Seconds": "0.05"})
        assert waited.status_code == 503 and waited.headers["retry-after"] == "1", waited.text
        service.unavailable = ""
        assert c.get("/ready").status_code == 200


def run_concurrently(service: EmbedService, bodies: list[tuple[str, Any]]) -> list[httpx.Response]:
    """Send requests at once to the app in one event loop (so they really share model passes)."""

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as ac:
            return await asyncio.gather(*(ac.post(p, json=b) for p, b in bodies))

    return asyncio.run(main())


def test_a_request_that_breaks_a_shared_model_pass_fails_alone() -> None:
    backend = DummyBackend(FAQ, delay_s=0.02)
    service = EmbedService(backend, ServingConfig(api_key=KEY))
    good = [("/v1/embeddings", {"input": [f"question number {i}", "where is my order"]}) for i in range(12)]
    bad = ("/v1/embeddings", {"input": ["fine text", f"boom {POISON}"]})
    bad_tei = ("/embed", {"inputs": f"{POISON}"})
    responses = run_concurrently(service, [*good[:6], bad, bad_tei, *good[6:]])
    codes = [r.status_code for r in responses]
    assert codes[6] == 500 and responses[6].json()["error"]["type"] == "server_error"
    assert codes[7] == 424 and responses[7].json()["error_type"] == "Backend"
    assert [c for i, c in enumerate(codes) if i not in (6, 7)] == [200] * 12
    assert max(backend.model_calls) > 2  # requests really were merged into shared model calls


def test_token_budget_refuses_with_429_and_small_requests_are_not_starved() -> None:
    backend = DummyBackend(FAQ, delay_s=0.02)
    service = EmbedService(backend, ServingConfig(api_key=KEY, max_request_tokens=128, max_queued_tokens=256))
    big = ("/v1/embeddings", {"input": ["w " * 14] * 8})  # 128 tokens each
    small = ("/v1/embeddings", {"input": "x"})
    responses = run_concurrently(service, [big, big, big, small])
    codes = [r.status_code for r in responses]
    assert codes[:2] == [200, 200] and codes[2] == 429, codes and codes[3] == 200
    assert (
        int(responses[2].headers["Retry-After"]) >= 1
        and responses[2].json()["error"]["type"] == "rate_limit_error"
    )


def test_in_flight_limit_is_429() -> None:
    backend = DummyBackend(FAQ, delay_s=0.05)
    service = EmbedService(backend, ServingConfig(api_key=KEY, max_in_flight=2))
    responses = run_concurrently(service, [("/v1/embeddings", {"input": f"q {i}"}) for i in range(6)])
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}


def test_slow_body_is_408_and_holds_no_slot() -> None:
    backend = DummyBackend(FAQ)
    service = EmbedService(backend, ServingConfig(api_key=KEY, body_timeout_s=0.2, max_in_flight=1))

    async def trickle() -> Any:
        yield b'{"input": '
        await asyncio.sleep(1.0)
        yield b'"x"}'

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as ac:
            slow = asyncio.create_task(ac.post("/v1/embeddings", content=trickle()))
            await asyncio.sleep(0.05)
            # The only in-flight slot is free while the slow body is still arriving.
            fast = await ac.post("/v1/embeddings", json={"input": "x"})
            return await slow, fast

    slow, fast = asyncio.run(main())
    assert fast.status_code == 200
    assert slow.status_code == 408 and slow.json()["error"]["param"] == "body"


def test_no_index_means_match_is_503_but_embeddings_work() -> None:
    c, _ = make(DummyBackend(None))
    with c:
        r = post(c, "/match", {"question": "x"})
        assert r.status_code == 503 and "without an index" in r.json()["error"]["message"]
        assert "Retry-After" in r.headers
        assert post(c, "/v1/embeddings", {"input": "x"}).status_code == 200
        assert c.get("/info", headers=AUTH).json()["index"] is None
