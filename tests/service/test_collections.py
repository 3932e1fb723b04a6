"""Collections and filters through the real HTTP app over the in-process backend and real indexes (no Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from embedder.encoder import Encoder
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.serve_index import FAQ, publish_index

CATEGORY = ["account", "orders", "billing", "orders", "orders", "account",
            "orders", "orders", "support", "account", "billing", "orders"]  # fmt: skip
LANG = ["en", "de"] * 6


@pytest.fixture(scope="module")
def setup(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    encoder = Encoder.load(tiny_artifact)
    roots = tmp_path_factory.mktemp("collections")
    shop, help_ = roots / "shop", roots / "help"
    filters = {"category": CATEGORY, "language": LANG, "rank": list(range(len(FAQ)))}
    shop.mkdir()
    help_.mkdir()
    v_shop = publish_index(shop, encoder, filters=filters)
    v_help = publish_index(help_, encoder, [(q, a + " (help)") for q, a in FAQ])
    backend = InProcessBackend(
        str(tiny_artifact),
        collections=collections_config({"collections": {"default": str(shop), "help": str(help_)}}),
    )
    client = TestClient(create_app(EmbedService(backend, ServingConfig())))
    yield {
        "client": client,
        "backend": backend,
        "encoder": encoder,
        "roots": (shop, help_),
        "v": (v_shop, v_help),
    }
    backend.collections.close()


def test_each_collection_answers_from_its_own_index(setup: dict[str, Any]) -> None:
    client = setup["client"]
    shop = client.post("/match", json={"question": "Where is my order?", "top_k": 3}).json()
    help_ = client.post(
        "/match", json={"question": "Where is my order?", "top_k": 3, "collection": "help"}
    ).json()
    assert shop["collection"] == "default" and shop["index_version"] == setup["v"][0]
    assert help_["collection"] == "help" and help_["index_version"] == setup["v"][1]
    assert all(m["answer"].endswith("(help)") for m in help_["matches"])
    assert "filter_selected" not in shop


def test_a_filter_selects_rows_and_says_how_many(setup: dict[str, Any]) -> None:
    client = setup["client"]
    body = {
        "question": "Where is my order?",
        "top_k": 10,
        "filter": {"category": "orders", "language": {"in": ["de"]}},
    }
    got = client.post("/match", json=body).json()
    want = {i for i in range(len(FAQ)) if CATEGORY[i] == "orders" and LANG[i] == "de"}
    assert got["filter_selected"] == len(want)
    assert {m["id"] - 1000 for m in got["matches"]} == want  # all of them: fewer match than top_k
    ranged = client.post(
        "/match", json={"question": "refund", "top_k": 3, "filter": {"rank": {"gte": 4, "lt": 9}}}
    ).json()
    assert ranged["filter_selected"] == 5 and len(ranged["matches"]) == 3
    assert all(4 <= m["rank"] < 9 for m in ranged["matches"])


def test_grouped_match_returns_each_category_once_within_a_filter(setup: dict[str, Any]) -> None:
    client = setup["client"]
    got = client.post(
        "/match", json={"question": "Where is my order?", "top_k": 5, "group_by": "category"}
    ).json()
    assert [m["category"] for m in got["matches"]] == [m["group_value"] for m in got["matches"]]
    assert sorted(m["category"] for m in got["matches"]) == sorted(set(CATEGORY))  # 4 exist: all, once
    assert got["grouping"]["groups"] == 4 and got["grouping"]["stopped"] == "exhausted"
    assert {m["category"]: m["group_hits"] for m in got["matches"]} == {
        c: CATEGORY.count(c) for c in CATEGORY
    }
    body = {
        "questions": ["refund", "password"],
        "top_k": 2,
        "group_by": "category",
        "filter": {"language": "de"},
    }
    for result in client.post("/match", json=body).json()["results"]:
        rows = [i for i in range(len(FAQ)) if LANG[i] == "de"]
        assert all(m["id"] - 1000 in rows for m in result["matches"]) and result["grouping"]["groups"] == 2
        assert len({m["category"] for m in result["matches"]}) == 2


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"collection": "nope"}, 404, "collection"),
        ({"filter": {"colour": "red"}}, 422, "filter.colour"),
        ({"filter": {"category": 1}}, 422, "filter.category"),
        ({"filter": {"rank": {"gte": "4"}}}, 422, "filter.rank.gte"),
        ({"filter": {"rank": {"near": 4}}}, 422, "filter.rank"),
        ({"filter": {"category": {"lt": "b"}}}, 422, "filter.category"),
        ({"filter": "category=orders"}, 422, "filter"),
        ({"collection": "help", "filter": {"category": "orders"}}, 422, "filter.category"),
        ({"group_by": "colour"}, 422, "group_by"),
        ({"collection": "help", "group_by": "category"}, 422, "group_by"),
        ({"group_size": 3}, 422, "group_size"),
    ],
)
def test_bad_collection_or_filter_is_a_4xx_naming_the_field(
    setup: dict[str, Any], body: dict[str, Any], status: int, param: str
) -> None:
    r = setup["client"].post("/match", json={"question": "Where is my order?", **body})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    if status == 404:
        assert "'nope'" in r.json()["error"]["message"]


def test_bad_filters_are_refused_before_any_model_work(setup: dict[str, Any], monkeypatch) -> None:
    backend = setup["backend"]

    async def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the model ran for a request that was going to be refused")

    monkeypatch.setattr(backend, "encode", never)
    monkeypatch.setattr(backend, "tokenize", never)
    assert (
        setup["client"].post("/match", json={"question": "x", "filter": {"colour": "red"}}).status_code == 422
    )
    assert setup["client"].post("/match", json={"question": "x", "collection": "nope"}).status_code == 404


def test_collections_route_and_info_show_versions_filters_and_memory(setup: dict[str, Any]) -> None:
    client = setup["client"]
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["data"]}
    assert set(listed) == {"default", "help"}
    assert listed["default"]["version"] == setup["v"][0] and listed["default"]["size"] == len(FAQ)
    assert listed["default"]["filter_columns"]["category"]["type"] == "string"
    assert listed["default"]["filter_columns"]["rank"]["type"] == "int"
    assert listed["help"]["filter_columns"] == {} and listed["help"]["memory_bytes"] > 0
    info = client.get("/info").json()
    assert info["index"]["version"] == setup["v"][0]
    assert info["collections"]["collections"]["help"]["memory_bytes"] == listed["help"]["memory_bytes"]


def test_a_collection_over_the_memory_budget_is_refused_and_nothing_else_unloaded(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    shop, help_ = setup["roots"]
    backend = setup["backend"]
    used = backend.collections.status()["memory_used_bytes"]
    big = tmp_path / "big"
    big.mkdir()
    publish_index(big, setup["encoder"], FAQ * 3)
    budget = used + 1_000  # room for neither a third collection of 36 rows
    backend.collections.configure(
        collections_config(
            {
                "collections": {"default": str(shop), "help": str(help_), "big": str(big)},
                "memory_budget_bytes": budget,
            }
        )
    )
    try:
        client = setup["client"]
        listed = {c["name"]: c for c in client.get("/v1/collections").json()["data"]}
        assert listed["big"]["version"] is None and "memory budget" in listed["big"]["refused"]["reason"]
        assert listed["default"]["version"] == setup["v"][0] and listed["help"]["version"] == setup["v"][1]
        r = client.post("/match", json={"question": "x", "collection": "big"})
        assert r.status_code == 503 and "memory budget" in r.json()["error"]["message"]
        assert client.post("/match", json={"question": "x", "collection": "help"}).status_code == 200
    finally:
        backend.collections.configure(
            collections_config({"collections": {"default": str(shop), "help": str(help_)}})
        )
    assert "big" not in {c["name"] for c in setup["client"].get("/v1/collections").json()["data"]}


def test_the_single_index_paths_set_the_default_group_by(setup: dict[str, Any], tiny_artifact: Path) -> None:
    from deployments.app import AppArgs, collections_user_config
    from service.__main__ import build, parse_args

    shop, _ = setup["roots"]
    argv = ["--artifact", str(tiny_artifact), "--index", str(shop), "--group-by", "default=category"]
    service = build(parse_args(argv))
    try:
        got = TestClient(create_app(service)).post("/match", json={"question": "order", "top_k": 3}).json()
        assert got["grouping"]["by"] == "category" and len({m["category"] for m in got["matches"]}) == 3
    finally:
        service.models.close()
    with pytest.raises(SystemExit, match="--group-by help=answer: no collection 'help'"):
        build(parse_args([*argv, "--group-by", "help=answer"]))
    # The Serve app's `group_by` arg is the `index` collection's default, carried in its user_config.
    spec = collections_user_config(AppArgs(artifact="a", index=str(shop), group_by="answer"))
    assert collections_config(spec).collections["default"].group_by == "answer"
