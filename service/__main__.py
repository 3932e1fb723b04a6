"""Single-box mode: the whole service in one process, no Ray (`python -m service --artifact ... --index ...`).

The same FastAPI app and HTTP contract as the Serve deployment, with the in-process backend
(engine/inprocess.py). Useful on one machine, in tests of real HTTP clients, and as the speed
reference of bench.serve.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI, Response

from embedder.cli_flags import add_runtime_flags, session_from_flags
from embedder.config import SessionConfig
from engine.inprocess import InProcessBackend
from engine.model_set import ModelSet
from index.collections import collections_config
from service.auth import AuthConfig, KeyTable, load_auth_file
from service.config import ServingConfig, serving_config
from service.core import EmbedService
from service.http import create_app
from service.metrics import Meter, PrometheusSink
from settings.loader import ConfigError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--artifact",
        default=None,
        help="exported model directory: the default model (required unless --model is given)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=ARTIFACT",
        help="another model: its name (the requests' `model`) and artifact (repeatable); without "
        "--artifact the first is the default model. Every model stays resident.",
    )
    p.add_argument(
        "--index", default=None, help="index root (indexes/<name>, holding CURRENT); omit for embeddings only"
    )
    p.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="NAME=ROOT",
        help="another collection: its name and index root (repeatable); --index is the collection 'default'",
    )
    p.add_argument(
        "--collection-model",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="the model that matches a collection (repeatable; 'default' is --index's); "
        "unnamed collections use the default model",
    )
    p.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="the metadata column /match groups a collection by when a request gives no group_by "
        "(repeatable; 'default' is --index's); requests may still send group_by or null",
    )
    p.add_argument(
        "--collections-memory-bytes",
        type=int,
        default=0,
        help="resident bytes all collections may take together (0: no budget); a version over it is refused",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads (default: QM_SESSION_THREADS or one per core)",
    )
    add_runtime_flags(p)
    p.add_argument(
        "--api-key", default=None, help="Bearer key for the API routes (default: QM_SERVE_API_KEY)"
    )
    p.add_argument(
        "--auth-file",
        default=None,
        metavar="PATH",
        help="keys scoped to collections and routes (YAML or JSON: {keys: [{name, sha256, collections, "
        "routes, weight}]}, SHA-256 of each key only); with --api-key too, both are valid",
    )
    p.add_argument(
        "--model-name", default="", help="name reported as 'model' (default: artifact directory name)"
    )
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> tuple[SessionConfig, ServingConfig]:
    """The session and the limits of the command line, in the one order of every entry point:
    a flag given beats its environment variable (QM_SESSION_*, QM_SERVE_*), which beats the default."""
    serving = serving_config(None, flags={"api_key": args.api_key} if args.api_key is not None else None)
    return session_from_flags(args), serving


def pairs(flag: str, items: list[str], what: str) -> dict[str, str]:
    """NAME=VALUE items of a repeatable flag; a malformed or repeated one is refused naming it."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{flag} {item!r}: expected NAME={what}")
        if name in out:
            raise SystemExit(f"{flag} {item!r}: {name!r} is given twice")
        out[name] = value
    return out


def keys_of(path: str | None, serving: ServingConfig) -> AuthConfig | None:
    """The --auth-file's keys validated (with the api_key's, the union); a bad entry exits with one line."""
    if path is None:
        return None
    try:
        auth = load_auth_file(path)
        KeyTable(serving.api_key, auth)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"python -m service: error: --auth-file {exc}") from None
    return auth


def build(args: argparse.Namespace, meter: Meter | None = None) -> EmbedService:
    """The service of the command-line options (`meter` records each model's passes)."""
    session, serving = settings(args)
    auth = keys_of(args.auth_file, serving)  # before any model loads: a bad entry fails at once
    artifacts = pairs("--model", args.model, "ARTIFACT")
    if args.artifact is None and not artifacts:
        raise SystemExit("python -m service: error: give --artifact (or at least one --model NAME=ARTIFACT)")
    roots: dict[str, str] = {"default": args.index} if args.index else {}
    roots.update(pairs("--collection", args.collection, "ROOT"))
    specs: dict[str, dict[str, str]] = {name: {"index": root} for name, root in roots.items()}
    for flag, key, metavar, given in (
        ("--collection-model", "model", "MODEL", args.collection_model),
        ("--group-by", "group_by", "COLUMN", args.group_by),
    ):
        for name, value in pairs(flag, given, metavar).items():
            if name not in specs:
                raise SystemExit(f"{flag} {name}={value}: no collection {name!r} (give --collection)")
            specs[name][key] = value
    collections = collections_config(
        {"collections": specs, "memory_budget_bytes": args.collections_memory_bytes}
    )
    backends: dict[str, InProcessBackend] = {}
    if args.artifact is not None:  # the default model, named as it always was
        first = InProcessBackend(args.artifact, session=session, model_name=args.model_name, on_pass=meter)
        backends[first.model.name] = first
    for name, artifact in artifacts.items():
        if name in backends:
            raise SystemExit(f"--model {name}={artifact}: {name!r} is already the --artifact model's name")
        backends[name] = InProcessBackend(artifact, session=session, model_name=name, on_pass=meter)
    models = ModelSet(backends)  # the first is the default: --artifact's, else the first --model
    try:
        models.configure(collections)
    except ValueError as exc:  # a collection naming a model not served: one line naming both
        models.close()
        raise SystemExit(f"python -m service: error: {exc}") from None
    return EmbedService(models, serving, auth=auth)


def single_box_app(service: EmbedService, sink: PrometheusSink) -> FastAPI:
    """The API app metered into `sink`, plus GET /metrics: the sink's series in Prometheus text.

    /metrics is open, like /health and /ready (Prometheus scrapers usually carry no bearer
    token): it shows counts by route, status, model and key name, never a text or a key. It goes
    through no API route's wrapper, so scrapes are not counted as requests.
    """
    meter = Meter(sink)
    app = create_app(service, meter)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = sink.scrape()
        return Response(body, media_type=content_type)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted."""
    args = parse_args(argv)
    sink = PrometheusSink()
    try:
        service = build(args, Meter(sink))
    except ConfigError as exc:  # one line naming the flag or variable, as the jobs answer
        raise SystemExit(f"python -m service: error: {exc}") from None
    uvicorn.run(single_box_app(service, sink), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
