"""Real clients against the real app over real HTTP: the `openai` package and LangChain's
OpenAIEmbeddings talk to uvicorn serving the Ray-free app with the tiny model in-process, and
get exactly the vectors embedder.Encoder computes locally."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from embedder import Encoder
from engine.inprocess import InProcessBackend
from service.config import ServingConfig
from service.core import EmbedService
from testkit.live_server import live_server

KEY = "k"
TEXTS = [
    "how do I reset my password?",
    "what is the capital of france",
    "can I return an item",
    "where is my order",
    "x",
    "refund for shipping, how long does it take?",
    "如何重置我的密码",
]
TOLERANCE = 1e-5


@dataclass
class Served:
    url: str
    model: str
    # Number of inputs of every /v1/embeddings request the service received, in order.
    request_sizes: list[int]


@pytest.fixture(scope="module")
def encoder(tiny_artifact: Path) -> Encoder:
    return Encoder.load(tiny_artifact)


@pytest.fixture(scope="module")
def served(tiny_artifact: Path) -> Iterator[Served]:
    """uvicorn serving create_app(EmbedService(InProcessBackend(tiny))) in a background thread."""
    backend = InProcessBackend(str(tiny_artifact))
    service = EmbedService(backend, ServingConfig(api_key=KEY))
    sizes: list[int] = []
    embed = service.embed

    async def recording_embed(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(1 if isinstance(inputs, str) or isinstance(inputs[0], int) else len(inputs))
        return await embed(inputs, *args, **kwargs)

    service.embed = recording_embed  # type: ignore[method-assign]
    with live_server(service) as url:
        yield Served(url, backend.model.name, sizes)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=served.url + "/v1", api_key=KEY) as c:
        yield c


def _vectors(response: Any) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def _max_diff(a: Any, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float32)
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


# ---- the openai client ---------------------------------------------------------------------


def test_openai_default_base64_and_float_match_encoder(
    client: openai.OpenAI, served: Served, encoder: Encoder
) -> None:
    expected = encoder.encode(TEXTS)
    default = client.embeddings.create(model=served.model, input=TEXTS)  # the client asks for base64
    assert default.model == served.model
    assert default.usage.prompt_tokens > 0
    assert _max_diff(_vectors(default), expected) <= TOLERANCE
    floats = client.embeddings.create(model=served.model, input=TEXTS, encoding_format="float")
    assert _max_diff(_vectors(floats), expected) <= TOLERANCE
    single = client.embeddings.create(model=served.model, input=TEXTS[0])
    assert _max_diff(_vectors(single), expected[:1]) <= TOLERANCE


def test_openai_models_list(client: openai.OpenAI, served: Served) -> None:
    assert [m.id for m in client.models.list()] == [served.model]


def test_openai_token_ids_of_this_models_tokenizer(
    client: openai.OpenAI, served: Served, encoder: Encoder
) -> None:
    ids = [[int(t) for t in row] for row in encoder.tokenizer.tokenize(TEXTS).ids]
    expected = encoder.encode(TEXTS)
    batch = client.embeddings.create(model=served.model, input=ids)
    assert _max_diff(_vectors(batch), expected) <= TOLERANCE
    one = client.embeddings.create(model=served.model, input=ids[0])  # a single list of ids
    assert _max_diff(_vectors(one), expected[:1]) <= TOLERANCE


def test_openai_dimensions(client: openai.OpenAI, served: Served, encoder: Encoder) -> None:
    response = client.embeddings.create(model=served.model, input=TEXTS, dimensions=8)
    assert _max_diff(_vectors(response), encoder.encode(TEXTS, dimensions=8)) <= TOLERANCE


# ---- LangChain -----------------------------------------------------------------------------


def _varied_texts(n: int) -> list[str]:
    rng = random.Random(0)
    # Words of the tiny model's vocabulary (plus CJK characters), so texts tokenize to real ids.
    words = ["how", "do", "i", "reset", "my", "password", "what", "is", "the", "capital", "of"]
    words += ["france", "can", "return", "an", "item", "where", "order", "refund", "shipping"]
    words += ["long", "take", "does", "it", "a", "to", "and", "in", "for", "on", "with", "this"]
    words += list("如何重置我的密码北京")
    texts = []
    for i in range(n):
        picked = rng.choices(words, k=rng.randint(1, 9))
        texts.append(" ".join(picked) + rng.choice(["", "?", "!", f" {i}"]))
    return texts


def test_langchain_openai_embeddings(served: Served, encoder: Encoder) -> None:
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: LangChain sends the texts as they are. With the default
    # (True) it first cuts every text into OpenAI's cl100k_base token ids with tiktoken (which
    # downloads the encoding file on first use: no network here) and sends those ids, which mean
    # nothing to this model's vocabulary. Nothing else touches tiktoken or the network.
    embeddings = OpenAIEmbeddings(
        model="tiny", base_url=served.url + "/v1", api_key=KEY, check_embedding_ctx_length=False
    )
    texts = _varied_texts(1500)
    served.request_sizes.clear()
    got = embeddings.embed_documents(texts)
    assert served.request_sizes == [1000, 500]  # chunk_size=1000 (LangChain's default)
    assert len(got) == len(texts)
    assert _max_diff(got, encoder.encode(texts)) <= TOLERANCE
    query = embeddings.embed_query(TEXTS[0])
    assert _max_diff([query], encoder.encode(TEXTS[:1])) <= TOLERANCE


# ---- limits --------------------------------------------------------------------------------


def test_max_inputs_is_2048(served: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=served.url, headers=headers, timeout=30) as http:
        over = http.post("/v1/embeddings", json={"model": served.model, "input": ["q"] * 2049})
        assert over.status_code == 422
        error = over.json()["error"]
        assert error["param"] == "input"
        assert error["type"] == "invalid_request_error"
        assert error["code"] == 422
        assert "2049" in error["message"] and "2048" in error["message"]
        ok = http.post(
            "/v1/embeddings", json={"model": served.model, "input": [f"q {i}" for i in range(2048)]}
        )
        assert ok.status_code == 200
        assert len(ok.json()["data"]) == 2048
