"""Keys scoped to collections and routes, over real HTTP (uvicorn on loopback) against the in-process
app with the tiny model and real FAISS collections: cross-tenant attempts on every route, the legacy
api_key, what /v1/collections and /info show each key, per-key counters and refusal log lines."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from embedder.encoder import Encoder
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from service.auth import auth_config
from service.config import ServingConfig
from service.core import EmbedService
from testkit.bad_requests import API_CALLS, check_auth_refusal
from testkit.keys import bearer, key_entry, new_key
from testkit.live_server import live_server
from testkit.serve_index import publish_index

LEGACY = "legacy-key-for-everything"
EMBEDDING_ROUTES = ("/v1/embeddings", "/embed", "/tokenize", "/v1/models")


@dataclass
class Tenants:
    url: str
    service: EmbedService
    keys: dict[str, str]  # name -> key
    hashes: dict[str, str]  # name -> sha256
    versions: dict[str, str]  # collection -> live version

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> requests.Response:
        headers = bearer(self.keys.get(key, key)) if key is not None else {}
        return requests.request(method, self.url + path, json=body, headers=headers, timeout=30)

    def match(self, key: str, **body: Any) -> requests.Response:
        return self.call("POST", "/match", {"question": "where is my order?", "top_k": 1, **body}, key)


@pytest.fixture(scope="module")
def tenants(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    encoder = Encoder.load(tiny_artifact)
    base = tmp_path_factory.mktemp("tenants")
    versions: dict[str, str] = {}
    roots: dict[str, str] = {}
    for name in ("default", "acme", "globex"):
        (base / name).mkdir()
        versions[name] = publish_index(base / name, encoder, [(f"q {name} {i}", f"a {i}") for i in range(6)])
        roots[name] = str(base / name)
    made = {name: new_key() for name in ("tenant-a", "tenant-b", "ops")}
    auth = auth_config(
        {
            "keys": [
                # "initech" is allowed but not served: its 404 must not list the others.
                key_entry(
                    "tenant-a",
                    made["tenant-a"][1],
                    ["acme", "initech"],
                    routes=["/match", "/v1/collections", "/info"],
                ),
                key_entry("tenant-b", made["tenant-b"][1], ["globex", "default"]),
                key_entry("ops", made["ops"][1], "*"),
            ]
        }
    )
    backend = InProcessBackend(str(tiny_artifact), collections=collections_config({"collections": roots}))
    service = EmbedService(backend, ServingConfig(api_key=LEGACY), auth=auth)
    keys = {name: k for name, (k, _) in made.items()} | {"legacy": LEGACY}
    hashes = {name: h for name, (_, h) in made.items()}
    try:
        with live_server(service) as url:
            yield Tenants(url, service, keys, hashes, versions)
    finally:
        backend.collections.close()


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS, ids=[c[1] for c in API_CALLS])
def test_no_key_or_a_wrong_key_is_401_on_every_api_route(
    tenants: Tenants, method: str, path: str, body: Any
) -> None:
    valid = tenants.keys["ops"]
    wrong = [
        None,  # no Authorization header
        "not-a-key",
        tenants.hashes["ops"],  # the configured hash itself (Serve's dashboard shows it): not a key
        valid + "x",
        valid[:-1],  # a prefix: lengths differ, still one digest comparison per entry
        valid[:-1] + ("A" if valid[-1] != "A" else "B"),  # the last character differs
        "schlüssel-é",  # non-ASCII (headers are latin-1): hashed, never compared raw (no 500)
    ]
    for token in wrong:
        check_auth_refusal(path, 401, tenants.call(method, path, body, token))
    check_auth_refusal(
        path,
        401,
        requests.request(
            method, tenants.url + path, json=body, timeout=30, headers={"Authorization": f"Basic {valid}"}
        ),
    )


def test_probes_stay_open(tenants: Tenants) -> None:
    assert requests.get(tenants.url + "/health", timeout=30).status_code == 200
    assert requests.get(tenants.url + "/ready", timeout=30).status_code in (200, 503)  # open either way


@pytest.mark.parametrize("path", EMBEDDING_ROUTES)
def test_a_route_the_key_may_not_use_is_403(tenants: Tenants, path: str) -> None:
    method, _, body = next(c for c in API_CALLS if c[1] == path)
    r = tenants.call(method, path, body, "tenant-a")
    check_auth_refusal(path, 403, r)
    assert not any(name in r.text for name in ("acme", "globex", "initech"))
    # The same route with a key that has it.
    assert tenants.call(method, path, body, "tenant-b").status_code == 200


def test_another_tenants_collection_is_403_naming_no_other_collection(tenants: Tenants) -> None:
    for key, asked, others in (
        ("tenant-a", "globex", ("acme", "initech", "default")),
        ("tenant-b", "acme", ("globex", "default")),
        ("tenant-b", "nope", ("globex", "default", "acme")),  # unknown to all: still 403, not 404
    ):
        r = tenants.match(key, collection=asked)
        check_auth_refusal("/match", 403, r)
        error = r.json()["error"]
        assert error["param"] == "collection" and f"'{asked}'" in error["message"]
        assert not any(name in r.text for name in others), r.text
    # No `collection` means "default": allowed only for a key that may use it.
    refused = tenants.match("tenant-a")
    check_auth_refusal("/match", 403, refused)
    assert "acme" not in refused.text and "globex" not in refused.text
    ok = tenants.match("tenant-b")
    assert ok.status_code == 200 and ok.json()["collection"] == "default"
    assert tenants.match("tenant-a", collection="acme").json()["index_version"] == tenants.versions["acme"]


def test_a_keys_own_collection_that_is_not_served_is_a_404_listing_nothing(tenants: Tenants) -> None:
    r = tenants.match("tenant-a", collection="initech")
    assert r.status_code == 404 and r.json()["error"]["param"] == "collection"
    assert not any(name in r.text for name in ("acme", "globex", "default")), r.text
    listed = tenants.match("ops", collection="initech")  # an admin still gets the list
    assert listed.status_code == 404 and "globex" in listed.text


def test_collections_and_info_show_a_key_only_its_own_collections(tenants: Tenants) -> None:
    seen = {
        key: (tenants.call("GET", "/v1/collections", key=key), tenants.call("GET", "/info", key=key))
        for key in ("tenant-a", "tenant-b", "ops", "legacy")
    }
    own = {"tenant-a": {"acme"}, "tenant-b": {"globex", "default"}}
    for key, (listed, info) in seen.items():
        assert listed.status_code == 200 and info.status_code == 200
        names = {c["name"] for c in listed.json()["data"]}
        assert names == own.get(key, {"default", "acme", "globex"})
        assert set(info.json()["collections"]["collections"]) == names
        for collection, version in tenants.versions.items():
            shown = collection in names
            for body in (listed.text, info.text):  # the raw bodies, anywhere in them
                assert (version in body) == shown, (key, collection)
                if collection != "default":  # "default" is also a word of /info's fields
                    assert (collection in body) == shown, (key, collection)
    assert seen["tenant-a"][1].json()["index"] is None  # the default collection's status: not its own
    assert seen["tenant-b"][1].json()["index"]["version"] == tenants.versions["default"]
    a_used = seen["tenant-a"][0].json()["memory_used_bytes"]
    assert 0 < a_used < seen["ops"][0].json()["memory_used_bytes"]


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS, ids=[c[1] for c in API_CALLS])
def test_the_single_api_key_still_works_on_every_route(
    tenants: Tenants, method: str, path: str, body: Any
) -> None:
    r = tenants.call(method, path, body, "legacy")
    assert r.status_code == 200, r.text
    bearer_lower = requests.request(
        method, tenants.url + path, json=body, headers={"authorization": f"bearer  {LEGACY} "}, timeout=30
    )
    assert bearer_lower.status_code == 200  # scheme case and surrounding spaces, as before


def _row(tenants: Tenants, key: str, name: str | None = None) -> dict[str, Any]:
    info = tenants.call("GET", "/info", key=key).json()
    return info["keys"][name or key]


def test_counters_per_key_count_requests_tokens_and_refusals(tenants: Tenants) -> None:
    before = _row(tenants, "ops", "tenant-b")
    embedded = tenants.call(
        "POST", "/v1/embeddings", {"input": ["one two", "three"], "model": "m"}, "tenant-b"
    )
    assert embedded.status_code == 200
    tenants.match("tenant-b", collection="acme")  # a 403
    after = _row(tenants, "ops", "tenant-b")
    assert after["tokens"] - before["tokens"] >= embedded.json()["usage"]["prompt_tokens"] > 0
    # tenant-b sent two requests between the two reads (the reads are ops's).
    assert after["requests"] - before["requests"] == 2
    assert after["refusals"]["403"] - before["refusals"]["403"] == 1
    # A key sees only its own row; an admin sees every key's, the unknown tokens' too.
    mine = tenants.call("GET", "/info", key="tenant-b").json()
    assert mine["key"] == "tenant-b" and set(mine["keys"]) == {"tenant-b"}
    tenants.call("GET", "/info", key="not-a-key")
    everyone = tenants.call("GET", "/info", key="ops").json()["keys"]
    assert {"tenant-b", "ops", "unknown key"} <= set(everyone)
    assert everyone["unknown key"]["refusals"]["401"] >= 1
    assert tenants.service.usage.snapshot()["tenant-b"]["tokens"] == everyone["tenant-b"]["tokens"]


def test_each_refusal_is_one_log_line_naming_the_key_never_the_key_itself(
    tenants: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qmatch.auth")
    wrong = "sekrit-token-xyz"
    tenants.call("POST", "/match", {"question": "x"}, wrong)
    tenants.match("tenant-a", collection="globex")
    tenants.call("POST", "/embed", {"inputs": "x"}, "tenant-a")
    lines = [r.getMessage() for r in caplog.records if r.name == "qmatch.auth"]
    assert "refused 401 /match for key unknown key" in lines
    assert "refused 403 /match for key tenant-a" in lines
    assert "refused 403 /embed for key tenant-a" in lines
    secrets_ = [
        wrong,
        hashlib.sha256(wrong.encode()).hexdigest(),
        *tenants.keys.values(),
        *tenants.hashes.values(),
    ]
    assert not any(s in line for s in secrets_ for line in lines)


def test_a_new_key_table_swaps_at_once(tenants: Tenants) -> None:
    service = tenants.service
    old_auth, old_config = service.keys, service.config
    new, new_hash = new_key()
    try:
        service.reconfigure(old_config, auth_config({"keys": [key_entry("tenant-c", new_hash, ["acme"])]}))
        assert tenants.match(new, collection="acme").status_code == 200
        assert tenants.match("tenant-a", collection="acme").status_code == 401  # gone with the old table
        assert tenants.match("legacy", collection="acme").status_code == 200  # api_key: still the union
    finally:
        service.keys = old_auth
        service.admission.weights = dict(old_auth.weights)
