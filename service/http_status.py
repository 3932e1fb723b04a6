"""The status routes of the HTTP app: /v1/collections, /health, /ready, /info and the page.

/v1/collections and /info go through the app's `serve` wrapper like every API route (auth, the
key's view of the collections, the error map); /health and /ready stay open for probes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from service import contract as c
from service.auth import Caller
from service.core import EmbedService
from service.errors import NotReady, Style, error_payload
from service.http_common import JSON, errors_doc
from service.status import collections_status, models_status, visible

PAGE = Path(__file__).with_name("page.html")
Serve = Callable[[Request, Style, Any, Callable[[Any], Awaitable[Any]]], Awaitable[Response]]


def add_status_routes(
    app: FastAPI, service: EmbedService, serve: Serve, caller_of: Callable[[Request], Caller]
) -> None:
    """Register the status routes on `app`; `serve` and `caller_of` are the app's own."""

    @app.get(
        "/v1/collections", response_model=c.CollectionList, responses=errors_doc("openai"), tags=["Matching"]
    )
    async def collections(request: Request) -> Response:
        """Each collection: live version, size, dimension, filter columns, threshold, memory; the budget."""

        async def work(_: None) -> c.CollectionList:
            status = visible(await collections_status(service), caller_of(request)) or {}
            data = [
                c.CollectionInfo(
                    **{
                        "name": name,
                        "version": s.get("version"),
                        "model": s.get("model"),
                        "size": s.get("size"),
                        "dimension": s.get("dimension"),
                        "filter_columns": s.get("filter_columns") or {},
                        "default_min_score": s.get("default_min_score"),
                        "group_by": s.get("group_by"),
                        "memory_bytes": s.get("memory_bytes", 0),
                        "refused": s.get("refused"),
                        "lexical": s.get("lexical"),
                        "default_mode": s.get("default_mode", "dense"),
                        "hybrid_alpha": s.get("hybrid_alpha", 1.0),
                        "hybrid_min_score": s.get("hybrid_min_score"),
                        **({"error": s["error"]} if s.get("error") else {}),
                    }
                )
                for name, s in (status.get("collections") or {}).items()
            ]
            return c.CollectionList(
                object="list",
                data=data,
                memory_budget_bytes=status.get("memory_budget_bytes", 0),
                memory_used_bytes=status.get("memory_used_bytes", 0),
            )

        return await serve(request, "openai", None, work)

    @app.get("/health", response_model=c.HealthResponse, tags=["Status"])
    async def health() -> dict[str, str]:
        """The process is up (says nothing about the model)."""
        service.start_probe()
        return {"status": "ok"}

    @app.get(
        "/ready", response_model=c.ReadyResponse, responses={503: {"model": c.OpenAIError}}, tags=["Status"]
    )
    async def ready() -> Response:
        """200 once a probe went through the whole backend and matched the fingerprint, else 503."""
        service.start_probe()
        if service.ready:  # the default model's probe passed; each model's state is in `models`
            models = {name: served.status() for name, served in service.served.items()}
            ready = c.ReadyResponse(ready=True, model_fingerprint=service.model.fingerprint, models=models)
            return JSON(ready.model_dump())
        status, body, headers = error_payload(
            NotReady(f"not ready: {service.not_ready_reason}", retry_after=service.config.retry_after_s),
            "openai",
        )
        return JSON(body, status, headers=headers)

    @app.get("/info", response_model=c.InfoResponse, responses=errors_doc("openai"), tags=["Status"])
    async def info(request: Request) -> Response:
        """Model, topology, index version and size (and why an index was refused), limits."""

        async def work(_: None) -> c.InfoResponse:
            caller = caller_of(request)
            collections = visible(await collections_status(service), caller)
            index = await service.backend.index_status() if caller.may_use("default") else None
            return c.InfoResponse(
                **service.model.describe(),
                topology=service.backend.topology,
                runtime=await service.backend.runtime(),
                ready=service.ready,
                not_ready_reason=None if service.ready else service.not_ready_reason,
                index=index,
                collections=collections,
                limits=service.config.client_limits(),
                default_model=service.models.default,
                models=await models_status(service, collections),
                key=caller.name,
                keys=service.usage.snapshot(None if caller.admin else caller.name),
            )

        return await serve(request, "openai", None, work)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """A small page to type a question and see its matches."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))
