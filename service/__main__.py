"""Single-box mode: the whole service in one process, no Ray (`python -m service --artifact ... --index ...`).

The same FastAPI app and HTTP contract as the Serve deployment, with the in-process backend
(engine/inprocess.py). Useful on one machine, in tests of real HTTP clients, and as the speed
reference of bench.serve.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from embedder.cli_flags import add_runtime_flags, session_from_flags
from embedder.config import SessionConfig
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from service.config import ServingConfig, serving_config
from service.core import EmbedService
from service.http import create_app
from settings.loader import ConfigError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="exported model directory")
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
        "--model-name", default="", help="name reported as 'model' (default: artifact directory name)"
    )
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> tuple[SessionConfig, ServingConfig]:
    """The session and the limits of the command line, in the one order of every entry point:
    a flag given beats its environment variable (QM_SESSION_*, QM_SERVE_*), which beats the default."""
    serving = serving_config(None, flags={"api_key": args.api_key} if args.api_key is not None else None)
    return session_from_flags(args), serving


def build(args: argparse.Namespace) -> EmbedService:
    """The service of the command-line options."""
    session, serving = settings(args)
    specs: dict[str, str] = {"default": args.index} if args.index else {}
    for item in args.collection:
        name, sep, root = item.partition("=")
        if not sep or not root:
            raise SystemExit(f"--collection {item!r}: expected NAME=ROOT")
        specs[name] = root
    collections = collections_config(
        {"collections": specs, "memory_budget_bytes": args.collections_memory_bytes}
    )
    backend = InProcessBackend(
        args.artifact, session=session, model_name=args.model_name, collections=collections
    )
    return EmbedService(backend, serving)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted."""
    args = parse_args(argv)
    try:
        service = build(args)
    except ConfigError as exc:  # one line naming the flag or variable, as the jobs answer
        raise SystemExit(f"python -m service: error: {exc}") from None
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
