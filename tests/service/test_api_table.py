"""The API table of docs/serving.md names exactly the routes, methods and request bodies of /openapi.json."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.dummy_backend import DummyBackend

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def readme_routes() -> set[tuple[str, str, str | None]]:
    text = API_PAGE.read_text(encoding="utf-8")
    table = text.split("<!-- api-routes:start", 1)[1].split("<!-- api-routes:end -->", 1)[0]
    rows = set()
    for line in table.splitlines():
        m = re.match(r"\| (GET|POST) \| `([^`]+)` \| (?:`(\w+)`|–)", line)
        if m:
            rows.add((m.group(1), m.group(2), m.group(3)))
    return rows


def test_api_table_matches_openapi() -> None:
    spec = TestClient(create_app(EmbedService(DummyBackend(), ServingConfig()))).get("/openapi.json").json()
    documented = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            documented.add((method.upper(), path, ref["$ref"].rsplit("/", 1)[1] if "$ref" in ref else None))
    assert readme_routes() == documented


def test_every_api_route_is_nameable_in_a_keys_routes_and_in_the_auth_table() -> None:
    # A new route must be given to keys (service.auth.ROUTES) and tried without a key (API_CALLS);
    # only the probes, the page and the docs stay open.
    from service.auth import ROUTES
    from testkit.bad_requests import API_CALLS

    spec = TestClient(create_app(EmbedService(DummyBackend(), ServingConfig()))).get("/openapi.json").json()
    open_routes = {"/health", "/ready"}
    assert set(spec["paths"]) - open_routes == set(ROUTES) == {path for _, path, _ in API_CALLS}
