"""The one table of client mistakes and the 4xx each must get, for every server the tests start.

tests/service/test_http_contract.py runs it against the dummy backend behind the real app (no
Ray), tests/serve/test_serve.py against a real Serve deployment: the same requests, the same
statuses and fields, with the limits of the server under test filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# path, body (bytes: sent as is; else JSON), status, the `param` the error must name
Case = tuple[str, Any, int, str]


@dataclass(frozen=True)
class Limits:
    """What the table needs to know about the server under test."""

    max_inputs: int
    dimension: int
    max_seq_length: int
    max_body_bytes: int
    max_top_k: int = 100

    @property
    def long_text(self) -> str:
        """A text of more tokens than the model accepts (2 per word with [CLS]/[SEP] or wordpieces)."""
        return "refund policy details " * self.max_seq_length


def bad_requests(limits: Limits) -> list[Case]:
    """Every mistake a client can make in a body, with the status and field it must get back."""
    # Nesting past the JSON parser's recursion limit inside "input", as deep as the body limit allows.
    deep = min(5000, (limits.max_body_bytes - 12) // 2)
    return [
        ("/v1/embeddings", b"{not json", 400, "body"),
        ("/v1/embeddings", b"[1, 2]", 400, "body"),
        ("/v1/embeddings", b"[" * 1900 + b"]" * 1900, 400, "body"),  # past the parser's recursion limit
        ("/v1/embeddings", b'{"input": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "body"),  # parses; too deep
        ("/v1/embeddings", b'{"input": ' + b"[" * deep + b"]" * deep + b"}", 400, "body"),
        ("/v1/embeddings", b'{"input": "a \\ud800 b"}', 400, "input"),
        ("/v1/embeddings", b'{"input": ["ok", "\\udfff"]}', 400, "input[1]"),
        ("/v1/embeddings", b'{"input": ["ok", "a \\ud800"]}', 400, "input[1]"),
        ("/v1/embeddings", b'{"input": "x", "dimensions": NaN}', 400, "body"),
        ("/v1/embeddings", b'{"input": "x", "dimensions": Infinity}', 400, "body"),
        ("/v1/embeddings", b'{"input": "\xff\xfe"}', 400, "body"),
        ("/v1/embeddings", {"input": 123}, 422, "input"),
        ("/v1/embeddings", {"input": [1.5, 2]}, 422, "input"),
        ("/v1/embeddings", {"input": []}, 422, "input"),
        ("/v1/embeddings", {"input": ""}, 400, "input"),
        ("/v1/embeddings", {"input": ["ok", "   "]}, 400, "input[1]"),
        ("/v1/embeddings", {"input": ["q"] * (limits.max_inputs + 1)}, 422, "input"),
        ("/v1/embeddings", {"input": [[]]}, 422, "input"),
        ("/v1/embeddings", {"input": "x", "dimensions": 0}, 422, "dimensions"),
        ("/v1/embeddings", {"input": "x", "dimensions": limits.dimension + 1}, 422, "dimensions"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
        ("/v1/embeddings", {"input": "x", "prompt_name": 7}, 422, "prompt_name"),
        ("/match", {"question": "x", "top_k": 0}, 422, "top_k"),
        ("/match", {"question": "x", "top_k": limits.max_top_k + 1}, 422, "top_k"),
        ("/match", {"question": "x", "questions": ["y"]}, 422, "question"),
        ("/match", {}, 422, "question"),
        ("/match", {"question": ""}, 400, "question"),
        ("/match", {"question": "x", "min_score": "high"}, 422, "min_score"),
        ("/match", {"question": "x", "group_by": "answer", "group_size": 0}, 422, "group_size"),
        ("/match", {"question": "x", "group_by": "answer", "group_size": 11}, 422, "group_size"),
        ("/match", {"question": "x", "group_by": "answer", "group_size": "2"}, 422, "group_size"),
        ("/match", {"question": "x", "group_by": 5}, 422, "group_by"),
        ("/match", {"question": "x", "mode": "sparse"}, 422, "mode"),
        ("/match", {"question": "x", "mode": 1}, 422, "mode"),
        ("/match", {"question": limits.long_text, "truncate": False}, 422, "question"),
    ]


def check_refusal(error: dict[str, Any], status: int, param: str, body: Any, max_seq_length: int) -> None:
    """What every refusal of the table must say: its code, type and field, the field in the message,
    and for an over-long text the token count against the limit."""
    assert error["code"] == status and error["param"] == param, error
    assert error["type"] == "invalid_request_error", error
    assert param.split("[")[0] in error["message"], error
    if isinstance(body, dict) and body.get("truncate") is False:
        assert error["token_count"] > error["max_tokens"] == max_seq_length, error
        assert str(error["token_count"]) in error["message"], error


# Every API route with a body it accepts: what the auth tests send without a key, with a wrong one,
# and with a key the route is not allowed for (the same table for the in-process app and Serve).
API_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/embeddings", {"input": "where is my order?", "model": "any"}),
    ("POST", "/embed", {"inputs": "where is my order?"}),
    ("POST", "/tokenize", {"inputs": "where is my order?"}),
    ("POST", "/match", {"question": "where is my order?", "top_k": 1}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/collections", None),
    ("GET", "/info", None),
]
TEI_ROUTES = ("/embed", "/tokenize")


def check_auth_refusal(path: str, status: int, response: Any) -> None:
    """A 401 / 403 in the route's style: OpenAI's body with its type and `param`, or TEI's error_type."""
    assert response.status_code == status, (path, response.status_code, response.text)
    body = response.json()
    if path in TEI_ROUTES:
        assert body["error_type"] == {401: "Unauthorized", 403: "Forbidden"}[status], body
        return
    error = body["error"]
    kinds = {401: "authentication_error", 403: "permission_error"}
    assert error["code"] == status and error["type"] == kinds[status], error
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer" and error["param"] == "authorization"
