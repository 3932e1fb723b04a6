"""The FastAPI app: routes wired to an EmbedService. Transport only; behaviour lives in core.py.

Every API route goes through `serve`: auth (the request's key and whether it may use the route),
body read (size cap and deadline, before any slot is taken), strict JSON, request-model validation,
the in-flight slot (shared fairly by key), the request deadline and the one error map in the
route's style; each 401 / 403 / 429 is one log line and a count of its key. Bodies are read by
hand (not by FastAPI) so slow or malformed bodies are refused cheaply; the request models are
still declared on each route so /openapi.json and /docs describe the real API.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pydantic
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedder.errors import InvalidInput
from engine import timings as request_timings
from engine.backend import EmbedOptions
from service import contract as c
from service.auth import OPEN, UNKNOWN, Caller
from service.body import parse_json_object, read_body
from service.core import EmbedService
from service.errors import (
    Forbidden,
    MalformedBody,
    NotReady,
    RequestTimeout,
    Style,
    Unauthorized,
    error_payload,
    openai_body,
)
from service.http_common import JSON, body_doc, errors_doc
from service.http_status import add_status_routes
from service.metrics import Meter
from service.status import models_status

log = logging.getLogger("qmatch.auth")
M = TypeVar("M", bound=pydantic.BaseModel)


def _to_field(exc: pydantic.ValidationError) -> InvalidInput:
    """A pydantic error as InvalidInput naming the first bad field (e.g. 'input[2]')."""
    first = exc.errors()[0]
    parts: list[str] = []
    for item in first["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not parts:
            parts.append(str(item))
        # later string parts are union branch names ('str', 'list[str]'): not part of the path
    field = "".join(parts) or "body"
    return InvalidInput(f"{field}: {first['msg']}", field=field)


def create_app(service: EmbedService, meter: Meter | None = None) -> FastAPI:
    """The HTTP app for one EmbedService (used as-is in single-box mode and inside Serve).

    `meter` records each API request (service/metrics.py); None records nothing.
    """
    meter = meter or Meter()
    app = FastAPI(
        title="qmatch",
        version="1",
        summary="Question matching and embeddings: OpenAI- and TEI-compatible routes plus /match.",
    )
    request_models = (c.EmbeddingsRequest, c.EmbedRequest, c.TokenizeRequest, c.MatchRequest)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in request_models:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def _routing_error(_request: Request, exc: StarletteHTTPException) -> Response:
        # 404 / 405 from routing get the same body shape as everything else.
        return JSON(
            openai_body(exc.status_code, "invalid_request_error", str(exc.detail), None), exc.status_code
        )

    def check_key(request: Request) -> Caller:
        """The request's key; 401 without a valid one."""
        caller = service.keys.identify(request.headers.get("authorization", ""))
        if caller is None:
            raise Unauthorized(
                "missing or wrong API key (send 'Authorization: Bearer <key>')", param="authorization"
            )
        request.state.caller = caller  # the routes' work reads it (caller_of)
        return caller

    def deadline(request: Request) -> float:
        asked = request.headers.get("x-timeout-seconds")
        if asked is None:
            return service.config.request_timeout_s
        try:
            value = float(asked)
        except ValueError:
            raise MalformedBody("X-Timeout-Seconds must be a number", param="X-Timeout-Seconds") from None
        if not math.isfinite(value) or value <= 0:
            raise MalformedBody("X-Timeout-Seconds must be positive", param="X-Timeout-Seconds")
        return min(value, service.config.request_timeout_s)

    async def serve(
        request: Request,
        style: Style,
        model: type[M] | None,
        work: Callable[[Any], Awaitable[Any]],
    ) -> Response:
        service.start_probe()
        timings = request_timings.start()  # what the backend reports back, e.g. a model's load
        # Metrics by route template (not the path: no per-prefix or per-typo series).
        route = getattr(request.scope.get("route"), "path", request.url.path)
        name = UNKNOWN
        metered = meter.begin(route, key="")
        try:
            caller = check_key(request)
            name = caller.name
            if not caller.may_route(route):
                raise Forbidden(f"this key may not use {route}", param="authorization")
            parsed: Any = None
            if model is not None:
                cfg = service.config
                raw = await read_body(
                    request.stream(),
                    request.headers.get("content-length"),
                    cfg.max_body_bytes,
                    cfg.body_timeout_s,
                )
                try:
                    parsed = model.model_validate(parse_json_object(raw))
                except pydantic.ValidationError as exc:
                    raise _to_field(exc) from None
            timeout = deadline(request)
            with service.admission.request(name):
                try:
                    result = await asyncio.wait_for(work(parsed), timeout)
                except asyncio.TimeoutError:
                    if service.unavailable:  # waited for a stage that lost its replicas: retry later
                        raise NotReady(
                            service.unavailable, retry_after=service.config.retry_after_s
                        ) from None
                    raise RequestTimeout(f"request did not finish within {timeout:g}s") from None
            # Contract models were validated when the handler built them; vectors stay numpy.
            # exclude_unset: fields a handler leaves out stay out (e.g. filter_selected without a filter).
            payload = (
                result.model_dump(exclude_unset=True) if isinstance(result, pydantic.BaseModel) else result
            )
            response: Response = JSON(payload)
            if timings:
                response.headers["Server-Timing"] = request_timings.server_timing(timings)
        except Exception as exc:
            status, body, headers = error_payload(exc, style)
            response = JSON(body, status, headers=headers)
            if status in (401, 403, 429):  # one line per refusal: never the key or its hash
                log.warning("refused %s %s for key %s", status, route, name)
                service.usage.refused(name, status)
        service.usage.request(name)
        metered.key = name  # the key's configured name (UNKNOWN for a missing or wrong one)
        metered.end(response.status_code)
        return response

    def caller_of(request: Request) -> Caller:
        """The key `serve` identified for this request."""
        return getattr(request.state, "caller", OPEN)

    @app.post(
        "/v1/embeddings",
        response_model=c.EmbeddingsResponse,
        responses=errors_doc("openai"),
        openapi_extra=body_doc(c.EmbeddingsRequest),
        tags=["OpenAI"],
    )
    async def embeddings(request: Request) -> Response:
        """OpenAI-compatible embeddings (the `openai` client and LangChain work unchanged)."""

        async def work(req: c.EmbeddingsRequest) -> dict[str, Any]:
            options = EmbedOptions(dimensions=req.dimensions, prompt_name=req.prompt_name)
            out = await service.embed(req.input, "input", True, options, req.model, caller_of(request))
            b64 = req.encoding_format == "base64"
            data = [
                {"object": "embedding", "index": i, "embedding": _b64(v) if b64 else v}
                for i, v in enumerate(out.vectors)
            ]
            usage = {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens}
            return {"object": "list", "data": data, "model": out.model, "usage": usage}

        return await serve(request, "openai", c.EmbeddingsRequest, work)

    @app.get("/v1/models", response_model=c.ModelList, responses=errors_doc("openai"), tags=["OpenAI"])
    async def models(request: Request) -> Response:
        """Every model this service serves, the default first (OpenAI shape, with dimension and prompts)."""

        async def work(_: None) -> c.ModelList:
            cards = [
                c.ModelCard(
                    id=name,
                    object="model",
                    created=0,
                    owned_by="qmatch",
                    prompts=m["prompts"],
                    default_prompt_name=m["default_prompt_name"],
                    dimension=m["dimension"],
                    max_seq_length=m["max_seq_length"],
                    runtime=m["runtime"],
                    default=m["default"],
                    ready=m["ready"],
                )
                for name, m in (await models_status(service)).items()
            ]
            return c.ModelList(object="list", data=cards)

        return await serve(request, "openai", None, work)

    @app.post(
        "/embed",
        response_model=list[list[float]],
        responses=errors_doc("tei"),
        openapi_extra=body_doc(c.EmbedRequest),
        tags=["TEI"],
    )
    async def embed(request: Request) -> Response:
        """text-embeddings-inference-style embeddings: a list of vectors."""

        async def work(req: c.EmbedRequest) -> np.ndarray:
            options = EmbedOptions(
                normalize=req.normalize, dimensions=req.dimensions, prompt_name=req.prompt_name
            )
            embedded = await service.embed(
                req.inputs, "inputs", req.truncate, options, req.model, caller_of(request)
            )
            return embedded.vectors

        return await serve(request, "tei", c.EmbedRequest, work)

    @app.post(
        "/tokenize",
        response_model=list[list[c.SimpleToken]],
        responses=errors_doc("tei"),
        openapi_extra=body_doc(c.TokenizeRequest),
        tags=["TEI"],
    )
    async def tokenize(request: Request) -> Response:
        """How the model's tokenizer cuts each text (TEI shape; ids usable as /v1/embeddings input)."""

        async def work(req: c.TokenizeRequest) -> list[list[dict[str, Any]]]:
            spans = await service.tokenize(req.inputs, req.add_special_tokens, req.model)
            return [[vars(s) for s in row] for row in spans]

        return await serve(request, "tei", c.TokenizeRequest, work)

    @app.post(
        "/match",
        response_model=c.MatchResponse | c.MatchBatchResponse,
        responses=errors_doc("openai"),
        openapi_extra=body_doc(c.MatchRequest),
        tags=["Matching"],
    )
    async def match(request: Request) -> Response:
        """Stored questions closest to `question` (or to each of `questions`), with their answers."""

        async def work(req: c.MatchRequest) -> c.MatchResponse | c.MatchBatchResponse:
            if (req.question is None) == (req.questions is None):
                raise InvalidInput("send exactly one of 'question' or 'questions'", field="question")
            single = req.question is not None
            asked: str | list[str] = req.question if req.question is not None else list(req.questions or [])
            texts = [asked] if isinstance(asked, str) else asked
            field = "question" if single else "questions"
            found = await service.match(
                asked,
                req.top_k,
                req.min_score,
                field,
                req.truncate,
                req.collection,
                req.filter,
                req.group(),
                caller=caller_of(request),
                mode=req.mode,
            )
            meta: dict[str, Any] = {
                "index_version": found.index_version,
                "model_fingerprint": found.model_fingerprint,
                "collection": found.collection,
                "model": found.model,
                **({"filter_selected": found.selected} if found.selected is not None else {}),
                "mode": found.mode,
                "alpha": found.alpha,
            }
            rows = [[c.MatchItem(**m.as_dict()) for m in row] for row in found.matches]
            # Only grouped answers carry `grouping` (per question); ungrouped ones stay as they were.
            grouped: list[dict[str, Any]] = [
                {"grouping": c.Grouping.of(g)} for g in found.grouping or []
            ] or [{} for _ in rows]
            if single:
                return c.MatchResponse(matches=rows[0], **meta, **grouped[0])
            results = [
                c.MatchResult(question=q, matches=m, **g)
                for q, m, g in zip(texts, rows, grouped, strict=True)
            ]
            return c.MatchBatchResponse(results=results, **meta)

        return await serve(request, "openai", c.MatchRequest, work)

    add_status_routes(app, service, serve, caller_of)
    return app


def _b64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
