"""Several models in one service: real HTTP over two real artifacts, built as `python -m service` builds it.

`tiny_artifact` (no prompts) is the default model "tiny"; `prompted_artifact` (e5-style prompts) is
"e5". Every expected vector comes from each model's own Encoder, so a request routed to the wrong
model, or a collection matched by the wrong one, fails here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedder.encoder import Encoder
from embedder.handoff import TokenPack
from engine.inprocess import InProcessBackend
from service.__main__ import build, parse_args
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.serve_index import FAQ, publish_index

TEXTS = ["where is my order", "how do i reset my password"]


@pytest.fixture(scope="module")
def setup(
    tiny_artifact: Path, prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tiny, e5 = Encoder.load(tiny_artifact), Encoder.load(prompted_artifact)
    roots = tmp_path_factory.mktemp("models")
    for name in ("faq", "e5faq", "wrong"):
        (roots / name).mkdir()
    publish_index(roots / "faq", tiny)
    v_e5 = publish_index(roots / "e5faq", e5, [(q, a + " (e5)") for q, a in FAQ])
    wrong = publish_index(roots / "wrong", tiny)  # built by tiny, bound to e5: refused
    argv = [
        "--artifact", str(tiny_artifact), "--model-name", "tiny", "--index", str(roots / "faq"),
        "--model", f"e5={prompted_artifact}",
        "--collection", f"e5faq={roots / 'e5faq'}", "--collection-model", "e5faq=e5",
        "--collection", f"wrong={roots / 'wrong'}", "--collection-model", "wrong=e5",
    ]  # fmt: skip
    service = build(parse_args(argv))
    with TestClient(create_app(service)) as client:
        client.get("/health")  # starts every model's probe
        wait_until(lambda: all(s.ready for s in service.served.values()))
        yield {"client": client, "tiny": tiny, "e5": e5, "v_e5": v_e5, "wrong": wrong, "service": service}
    service.models.close()


def wait_until(done: Any, timeout_s: float = 60.0) -> None:
    """Poll `done` (the probes run in the app's event loop) until it holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_model_embeds_with_its_own_vectors(setup: dict[str, Any]) -> None:
    client, tiny, e5 = setup["client"], setup["tiny"], setup["e5"]
    for name, encoder in (("tiny", tiny), ("e5", e5)):
        body = client.post("/v1/embeddings", json={"input": TEXTS, "model": name}).json()
        assert body["model"] == name
        got = np.array([d["embedding"] for d in body["data"]])
        assert np.abs(got - encoder.encode(TEXTS)).max() < 1e-5
    default = client.post("/v1/embeddings", json={"input": TEXTS}).json()
    assert default["model"] == "tiny"
    assert np.abs(np.array([d["embedding"] for d in default["data"]]) - tiny.encode(TEXTS)).max() < 1e-5
    # /embed routes by `model` too, with the model's own prompts.
    query = np.array(
        client.post("/embed", json={"inputs": TEXTS, "model": "e5", "prompt_name": "query"}).json()
    )
    assert np.abs(query - e5.encode(TEXTS, prompt_name="query")).max() < 1e-5
    assert np.abs(tiny.encode(TEXTS) - e5.encode(TEXTS)).max() > 1e-3  # the two models differ: teeth
    # A prompt only e5 has is a 422 on tiny: each request is validated against its own model.
    r = client.post("/embed", json={"inputs": TEXTS, "model": "tiny", "prompt_name": "query"})
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": "x", "model": "nope"}),
        ("/embed", {"inputs": "x", "model": "nope"}),
        ("/tokenize", {"inputs": "x", "model": "nope"}),
    ],
)
def test_an_unknown_model_is_a_404_model_not_found(setup: dict[str, Any], path: str, body: dict) -> None:
    r = setup["client"].post(path, json=body)
    assert r.status_code == 404, r.text
    if path == "/v1/embeddings":  # OpenAI shape
        err = r.json()["error"]
        assert (err["type"], err["param"], err["code"]) == ("model_not_found", "model", 404)
        assert "'nope'" in err["message"] and "tiny, e5" in err["message"]
    else:  # TEI shape
        assert r.json()["error_type"] == "NotFound" and "'nope'" in r.json()["error"]


def test_models_lists_every_model_with_what_a_client_needs(setup: dict[str, Any]) -> None:
    cards = setup["client"].get("/v1/models").json()["data"]
    assert [c["id"] for c in cards] == ["tiny", "e5"] and [c["default"] for c in cards] == [True, False]
    tiny, e5 = cards
    assert tiny["prompts"] == {} and e5["prompts"] == {"query": "query: ", "document": "passage: "}
    assert tiny["dimension"] == setup["tiny"].dimension and e5["dimension"] == setup["e5"].dimension
    assert all(c["max_seq_length"] > 0 and c["runtime"]["backend"] for c in cards)


def test_tokenize_uses_the_named_models_tokenizer(setup: dict[str, Any]) -> None:
    client = setup["client"]
    for name in ("tiny", "e5"):
        tokens = client.post("/tokenize", json={"inputs": "where is my order", "model": name}).json()[0]
        want = setup[name].tokenizer.explain(["where is my order"])[0]  # the model's own Encoder
        assert [t["id"] for t in tokens] == [tid for tid, *_ in want]


def test_match_on_a_collection_uses_its_own_model(setup: dict[str, Any]) -> None:
    client, e5 = setup["client"], setup["e5"]
    question = "where is my parcel"
    got = client.post("/match", json={"question": question, "top_k": len(FAQ), "collection": "e5faq"}).json()
    assert got["model"] == "e5" and got["index_version"] == setup["v_e5"]
    assert got["model_fingerprint"] == setup["service"].served["e5"].model.fingerprint
    assert all(m["answer"].endswith("(e5)") for m in got["matches"])
    scores = {m["id"] - 1000: m["score"] for m in got["matches"]}
    want = e5.encode_document([q for q, _ in FAQ]) @ e5.encode_query([question])[0]
    assert np.abs(np.array([scores[i] for i in range(len(FAQ))]) - want).max() < 1e-5
    default = client.post("/match", json={"question": question}).json()
    assert default["model"] == "tiny" and default["collection"] == "default"


def test_a_collection_built_by_the_other_model_is_refused_and_the_rest_serve(setup: dict[str, Any]) -> None:
    client = setup["client"]
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["data"]}
    assert {n: c["model"] for n, c in listed.items()} == {"default": "tiny", "e5faq": "e5", "wrong": "e5"}
    refused = listed["wrong"]["refused"]
    assert listed["wrong"]["version"] is None and refused["version"] == setup["wrong"]
    served = setup["service"].served
    fingerprints = [served[name].model.fingerprint[:23] for name in ("tiny", "e5")]  # sha256: + 16 hex
    assert "was built with model" in refused["reason"] and all(f in refused["reason"] for f in fingerprints)
    assert listed["e5faq"]["refused"] is None and listed["default"]["refused"] is None
    r = client.post("/match", json={"question": "where is my order", "collection": "wrong"})
    assert r.status_code == 503
    for collection in ("default", "e5faq"):
        assert client.post("/match", json={"question": "hi", "collection": collection}).status_code == 200
    r = client.post("/match", json={"question": "hi", "collection": "nope"})
    assert r.status_code == 404 and "'e5faq'" in r.json()["error"]["message"]  # every model's collections


def test_info_counts_requests_and_tokens_per_model(setup: dict[str, Any]) -> None:
    client = setup["client"]
    before = client.get("/info").json()["models"]
    usage = client.post("/v1/embeddings", json={"input": TEXTS, "model": "e5"}).json()["usage"]
    client.post("/match", json={"question": "hi", "collection": "e5faq"})
    after = client.get("/info").json()["models"]
    assert after["e5"]["requests"] == before["e5"]["requests"] + 2
    assert after["e5"]["tokens"] >= before["e5"]["tokens"] + usage["prompt_tokens"] + 1
    assert (after["tiny"]["requests"], after["tiny"]["tokens"]) == (
        before["tiny"]["requests"],
        before["tiny"]["tokens"],
    )


def test_info_shows_every_model_and_which_collection_each_matches(setup: dict[str, Any]) -> None:
    info = setup["client"].get("/info").json()
    assert info["model"] == "tiny" and info["default_model"] == "tiny"  # top level: the default's, as before
    assert info["model_fingerprint"] == setup["service"].served["tiny"].model.fingerprint
    models = info["models"]
    assert list(models) == ["tiny", "e5"] and models["e5"]["prompts"]["query"] == "query: "
    assert models["tiny"]["collections"] == ["default"] and models["e5"]["collections"] == ["e5faq", "wrong"]
    assert all(m["ready"] and m["runtime"]["backend"] for m in models.values())
    assert info["collections"]["collections"]["e5faq"]["model"] == "e5"


def test_a_collection_naming_an_unknown_model_fails_at_start_up(tiny_artifact: Path, tmp_path: Path) -> None:
    argv = ["--artifact", str(tiny_artifact), "--model-name", "tiny",
            "--collection", f"help={tmp_path}", "--collection-model", "help=e5"]  # fmt: skip
    with pytest.raises(SystemExit, match="collection 'help' names model 'e5'.*models: tiny"):
        build(parse_args(argv))


class DropsThePrompt(InProcessBackend):
    """A model whose topology loses the prompt on the way to the tokenizer: its probe fails."""

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        return await super().tokenize(texts)


@pytest.mark.parametrize("default", ["tiny", "broken"])
def test_a_model_failing_its_probe_is_refused_for_its_own_requests_only(
    tiny_artifact: Path, prompted_artifact: Path, default: str
) -> None:
    backends = {
        "tiny": InProcessBackend(str(tiny_artifact), model_name="tiny"),
        "broken": DropsThePrompt(str(prompted_artifact), model_name="broken"),
    }
    service = EmbedService(backends, ServingConfig(), default_model=default)
    with TestClient(create_app(service)) as client:
        client.get("/health")  # starts the probes
        wait_until(lambda: service.served["tiny"].ready and service.served["broken"].refused is not None)
        r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "broken"})
        assert r.status_code == 503 and "model 'broken' is not serving" in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "model"
        assert client.post("/embed", json={"inputs": TEXTS, "model": "broken"}).status_code == 503
        assert client.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny"}).status_code == 200
        # /ready follows the default model; every model's state is in /info.
        ready = client.get("/ready")
        assert ready.status_code == (200 if default == "tiny" else 503)
        models = client.get("/info").json()["models"]
        assert models["tiny"]["ready"] and not models["broken"]["ready"]
        assert "probe vectors" in models["broken"]["refused"]
