"""The one exception -> HTTP status map, in the two body shapes clients expect.

OpenAI shape (/v1/*, /match, /info):
    {"error": {"message": str, "type": str, "param": str | null, "code": int}}
TEI shape (/embed, /tokenize), as text-embeddings-inference answers:
    {"error": str, "error_type": "Validation" | "Empty" | "Overloaded" | "Backend" | "Unhealthy" | ...}
A client's mistake is always a 4xx; only an unexpected failure of ours is a 5xx (500 on
OpenAI routes, 424 "Backend" on TEI routes, as TEI does).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from embedder.errors import ArtifactError, EmptyInput, InputTooLong, InvalidInput, ModelMismatch
from engine.errors import BackendUnavailable, ModelMemoryRefused, UnknownModel
from index.errors import IndexInvalid, IndexUnavailable, UnknownCollection

log = logging.getLogger("qmatch.service")
Style = Literal["openai", "tei"]


class TooManyInputs(InvalidInput):
    """More inputs in one request than the configured maximum (a service limit, not a model one)."""


class TooManyTokens(InvalidInput):
    """One request carries more tokens than the configured per-request maximum."""


class ApiError(Exception):
    """An HTTP-level refusal raised by the service itself."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.retry_after = retry_after


class MalformedBody(ApiError):
    """The body is not valid JSON, not an object, too deeply nested, or not valid Unicode."""


class BodyTooLarge(ApiError):
    """The body is bigger than the configured limit."""

    status = 413


class Unauthorized(ApiError):
    """Missing or wrong Bearer key."""

    status = 401
    kind = "authentication_error"


class Forbidden(ApiError):
    """A valid key asking for a collection or a route it may not use (the message names only what it asked)."""

    status = 403
    kind = "permission_error"


class Overloaded(ApiError):
    """This replica already holds its maximum of requests or queued tokens."""

    status = 429
    kind = "rate_limit_error"


class RequestTimeout(ApiError):
    """The request (or its body) did not arrive or finish within its deadline."""

    status = 408
    kind = "timeout_error"


class NotReady(ApiError):
    """The service cannot answer this yet (probe not passed, no index)."""

    status = 503
    kind = "service_unavailable"


@dataclass(frozen=True)
class Mapped:
    """Where an exception lands: status, OpenAI type, TEI type, offending field, extra headers."""

    status: int
    kind: str
    tei_type: str
    param: str | None
    headers: dict[str, str]


def classify(exc: BaseException) -> Mapped:
    """The one map from an exception to its HTTP outcome."""
    if isinstance(exc, ApiError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        tei = {
            429: "Overloaded",
            503: "Unhealthy",
            401: "Unauthorized",
            403: "Forbidden",
            408: "Timeout",
            413: "Validation",
        }
        return Mapped(exc.status, exc.kind, tei.get(exc.status, "Validation"), exc.param, headers)
    if isinstance(exc, UnknownCollection):
        return Mapped(404, "invalid_request_error", "NotFound", exc.field, {})
    if isinstance(exc, UnknownModel):
        # OpenAI answers an unknown model with this type's name as its code; `code` here stays
        # the HTTP status, as in every other error body of this service.
        return Mapped(404, "model_not_found", "NotFound", exc.field, {})
    if isinstance(exc, EmptyInput):
        return Mapped(400, "invalid_request_error", "Empty", exc.field, {})
    if isinstance(exc, InputTooLong | TooManyInputs | TooManyTokens):
        # 422 for OpenAI clients; TEI answers these with 413 (Validation).
        return Mapped(422, "invalid_request_error", "Validation", exc.field, {})
    if isinstance(exc, InvalidInput):
        return Mapped(422, "invalid_request_error", "Validation", exc.field, {})
    if isinstance(exc, IndexUnavailable | ModelMismatch | IndexInvalid | ArtifactError):
        return Mapped(503, "service_unavailable", "Unhealthy", None, {"Retry-After": "1"})
    if isinstance(exc, BackendUnavailable):  # deployments/ turns Ray's overload and dead replicas into it
        return Mapped(503, "overloaded_error", "Overloaded", None, {"Retry-After": "1"})
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Mapped(408, "timeout_error", "Timeout", None, {})
    return Mapped(500, "server_error", "Backend", None, {})


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.+@-]+){2,}/?")


def public_message(exc: BaseException, status: int) -> str:
    """The message a client sees: never a server path, never our internals."""
    shown = ApiError | IndexUnavailable | ModelMismatch | IndexInvalid | ModelMemoryRefused
    if status >= 500 and not isinstance(exc, shown):
        return f"internal error ({type(exc).__name__}); the request was not processed"
    return _PATH.sub("<path>", str(exc) or type(exc).__name__)


def error_payload(exc: BaseException, style: Style) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for an exception in the route's style."""
    m = classify(exc)
    if m.status >= 500 and m.kind == "server_error":
        log.error("unexpected error while serving a request", exc_info=exc)
    message = public_message(exc, m.status)
    if style == "tei":
        status = m.status
        if m.tei_type == "Validation" and isinstance(exc, InputTooLong | TooManyInputs | TooManyTokens):
            status = 413
        if m.status == 500:
            status = 424
        return status, {"error": message, "error_type": m.tei_type}, m.headers
    body = openai_body(m.status, m.kind, message, m.param)
    if isinstance(exc, InputTooLong):
        body["error"].update(token_count=exc.token_count, max_tokens=exc.max_tokens)
    return m.status, body, m.headers


def openai_body(status: int, kind: str, message: str, param: str | None) -> dict[str, Any]:
    """The OpenAI-shaped error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}
