"""python -m export --model <st dir> --out <artifact dir or URI> [--precision fp32|fp16|int8] [--pooling-in-graph]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from embedder.errors import EmbedderError
from export.pipeline import PRECISIONS, ExportRequest
from export.remote import export_to


class StepLog:
    """Progress on stderr: each step as it starts, with the time since the export began."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 0 on success, 2 on a refused or failed export."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="sentence-transformers model directory")
    parser.add_argument(
        "--out", required=True, help="artifact directory or URI (s3://bucket/artifacts/minilm) to create"
    )
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument(
        "--pooling-in-graph", action="store_true", help="append pooling+normalisation to the graph"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    parser.add_argument("--no-progress", action="store_true", help="no step lines on stderr")
    args = parser.parse_args(argv)
    request = ExportRequest(args.model, Path(), args.precision, args.pooling_in_graph, args.overwrite)
    try:
        manifest = export_to(request, args.out, log=(lambda _m: None) if args.no_progress else StepLog())
    except EmbedderError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"export: wrote {args.out} fingerprint={manifest.fingerprint} min_cosine={manifest.parity['min_cosine']:.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
