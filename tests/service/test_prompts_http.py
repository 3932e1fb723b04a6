"""A model with prompts through the real HTTP app over the in-process backend (`python -m service`, no Ray).

The tiny model carries e5-style prompts ("query: ", "document": "passage: ", no default), so
every vector here differs from the unprompted one: /match must give questions the query prompt,
/embed and /v1/embeddings the prompt named, and a server must refuse an index whose documents got
another prompt. Expected vectors come from the Encoder, which applies sentence-transformers' rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedder.encoder import Encoder
from embedder.errors import ModelMismatch
from embedder.handoff import TokenPack
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.serve_index import FAQ, publish_index

TEXTS = ["where is my order", "how do i reset my password"]
NAMES = "'document', 'query'"


@pytest.fixture(scope="module")
def setup(prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    encoder = Encoder.load(prompted_artifact)
    roots = tmp_path_factory.mktemp("prompted-indexes")
    good, queried = roots / "faq", roots / "queried"
    good.mkdir()
    queried.mkdir()
    publish_index(good, encoder)  # documents get the document prompt, as the embed job gives them
    bad = publish_index(queried, encoder, prompt_name="query")  # same model, the wrong prompt
    config = {"collections": {"default": str(good), "queried": str(queried)}}
    backend = InProcessBackend(str(prompted_artifact), collections=collections_config(config))
    service = EmbedService(backend, ServingConfig())
    with TestClient(create_app(service)) as client:
        yield {"client": client, "encoder": encoder, "service": service, "backend": backend, "bad": bad}
    backend.collections.close()


def test_match_gives_the_question_the_query_prompt(setup: dict[str, Any]) -> None:
    client, encoder = setup["client"], setup["encoder"]
    question = "where is my parcel"
    got = client.post("/match", json={"question": question, "top_k": len(FAQ)}).json()["matches"]
    scores = {m["id"] - 1000: m["score"] for m in got}
    documents = encoder.encode_document([q for q, _ in FAQ])
    want = documents @ encoder.encode_query([question])[0]
    assert np.abs(np.array([scores[i] for i in range(len(FAQ))]) - want).max() < 1e-5
    unprompted = documents @ encoder.encode([question])[0]
    assert np.abs(want - unprompted).max() > 1e-3  # the prompt changes the scores: the check has teeth


def test_embed_and_openai_embeddings_apply_the_prompt_named(setup: dict[str, Any]) -> None:
    client, encoder = setup["client"], setup["encoder"]
    query = np.array(client.post("/embed", json={"inputs": TEXTS, "prompt_name": "query"}).json())
    assert np.abs(query - encoder.encode(TEXTS, prompt_name="query")).max() < 1e-5
    plain = np.array(client.post("/embed", json={"inputs": TEXTS}).json())  # no default prompt: none
    assert np.abs(plain - encoder.encode(TEXTS)).max() < 1e-5 and np.abs(plain - query).max() > 1e-3
    body = client.post("/v1/embeddings", json={"input": TEXTS, "prompt_name": "document"}).json()
    vectors = np.array([d["embedding"] for d in body["data"]])
    detailed = encoder.encode_detailed(TEXTS, prompt_name="document")
    assert np.abs(vectors - detailed.vectors).max() < 1e-5
    # The prompt's tokens are tokens the model saw.
    assert body["usage"]["prompt_tokens"] == int(detailed.token_counts.sum())
    unprompted = client.post("/v1/embeddings", json={"input": TEXTS}).json()["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] > unprompted


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"input": "x", "prompt_name": "passage"}, "prompt_name"),
        ("/v1/embeddings", {"input": [[5, 6]], "prompt_name": "query"}, "prompt_name"),
        ("/v1/embeddings", {"input": "x", "prompt_name": 1}, "prompt_name"),
        ("/embed", {"inputs": ["x"], "prompt_name": "Query"}, None),
    ],
)
def test_a_bad_prompt_name_is_a_422_naming_the_models_prompts(
    setup: dict[str, Any], path: str, body: dict[str, Any], param: str | None
) -> None:
    r = setup["client"].post(path, json=body)
    assert r.status_code == 422, r.text
    if path == "/embed":  # TEI shape
        assert r.json()["error_type"] == "Validation" and NAMES in r.json()["error"]
        return
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if isinstance(body["prompt_name"], str) and isinstance(body["input"], str):
        assert NAMES in err["message"]


def test_info_and_models_show_the_prompts_and_the_probe_passes(setup: dict[str, Any]) -> None:
    client = setup["client"]
    assert client.get("/ready").status_code == 200  # every probe group, prompts included, matched
    info = client.get("/info").json()
    assert info["prompts"] == {"query": "query: ", "document": "passage: "}
    assert info["default_prompt_name"] is None
    assert (info["query_prompt_name"], info["document_prompt_name"]) == ("query", "document")
    card = client.get("/v1/models").json()["data"][0]
    assert card["prompts"] == info["prompts"] and card["default_prompt_name"] is None


def test_an_index_embedded_with_another_prompt_is_refused(setup: dict[str, Any]) -> None:
    client = setup["client"]
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["data"]}
    assert listed["default"]["refused"] is None and listed["default"]["version"] is not None
    refused = listed["queried"]["refused"]
    assert listed["queried"]["version"] is None and refused["version"] == setup["bad"]
    assert "prompt 'query' ('query: ')" in refused["reason"]
    assert "prompt 'document' ('passage: ')" in refused["reason"]
    r = client.post("/match", json={"question": "where is my order", "collection": "queried"})
    assert r.status_code == 503 and "prompt 'query'" in r.json()["error"]["message"]


class DropsThePrompt(InProcessBackend):
    """A topology that loses the prompt on the way to the tokenizer (the bug the probe must catch)."""

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        return await super().tokenize(texts)


def test_the_probe_fails_when_a_topology_loses_the_prompt(prompted_artifact: Path) -> None:
    service = EmbedService(DropsThePrompt(str(prompted_artifact)), ServingConfig())
    with pytest.raises(ModelMismatch, match="probe vectors through the stages"):
        asyncio.run(service.probe())
