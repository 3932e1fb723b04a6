"""The one exception -> HTTP status map and the one error body shape.

Body (OpenAI-compatible, so OpenAI clients surface the message):
    {"error": {"message": str, "type": str, "param": str | null, "code": int}}
A client's mistake maps to 4xx; only an unexpected failure of ours is a 500.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pydantic
from fastapi.responses import JSONResponse
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from embedder.errors import (
    ArtifactError,
    EmptyInput,
    IndexInvalid,
    InputTooLong,
    InvalidInput,
    ModelMismatch,
    TooManyInputs,
)

log = logging.getLogger("ray.serve")


class ApiError(Exception):
    """An HTTP-level refusal raised by the ingress itself."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.retry_after = retry_after


class MalformedBody(ApiError):
    """The body is not JSON (or not a JSON object)."""


class BodyTooLarge(ApiError):
    """The body is bigger than the configured limit."""

    status = 413


class Unauthorized(ApiError):
    """Missing or wrong Bearer key."""

    status = 401
    kind = "authentication_error"


class Overloaded(ApiError):
    """This ingress replica already works on its maximum number of requests."""

    status = 429
    kind = "rate_limit_error"


class RequestTimeout(ApiError):
    """The request did not finish within its deadline."""

    status = 408
    kind = "timeout_error"


class NotReady(ApiError):
    """The service cannot answer this yet (no index loaded, probe not passed)."""

    status = 503
    kind = "service_unavailable"


def status_for(exc: BaseException) -> tuple[int, str, str | None, dict[str, str]]:
    """(status, error type, offending field, extra headers) for any exception."""
    if isinstance(exc, ApiError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        return exc.status, exc.kind, exc.param, headers
    if isinstance(exc, EmptyInput):
        return 400, "invalid_request_error", exc.field, {}
    if isinstance(exc, InputTooLong | TooManyInputs | InvalidInput):
        return 422, "invalid_request_error", exc.field, {}
    if isinstance(exc, BackPressureError):
        return 503, "overloaded_error", None, {"Retry-After": str(int(exc.retry_after_s or 1))}
    if isinstance(exc, DeploymentUnavailableError | ModelMismatch | IndexInvalid | ArtifactError):
        return 503, "service_unavailable", None, {"Retry-After": "1"}
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return 408, "timeout_error", None, {}
    return 500, "server_error", None, {}


def error_body(status: int, kind: str, message: str, param: str | None) -> dict[str, Any]:
    """The error body every route returns."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(exc: BaseException) -> JSONResponse:
    """Map an exception to its JSON response (logging only our own failures)."""
    status, kind, param, headers = status_for(exc)
    message = str(exc) or type(exc).__name__
    if status == 500:
        log.exception("unexpected error while serving a request", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); the request was not processed"
    extra: dict[str, Any] = {}
    if isinstance(exc, InputTooLong):
        extra = {"token_count": exc.token_count, "max_tokens": exc.max_tokens}
    body = error_body(status, kind, message, param)
    body["error"].update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error(exc: pydantic.ValidationError) -> InvalidInput:
    """Turn a pydantic error into InvalidInput naming the first bad field (e.g. 'input[2]')."""
    first = exc.errors()[0]
    parts: list[str] = []
    for item in first["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not parts:
            parts.append(str(item))
        # later string parts are union branch names ('str', 'list[str]'): not part of the field path
    field = "".join(parts) or "body"
    return InvalidInput(f"{field}: {first['msg']}", field=field)
