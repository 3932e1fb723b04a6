"""python -m export --model <st dir> --out <artifact dir or URI> [--precision fp32|fp16|int8] [--pooling-in-graph]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedder.errors import EmbedderError
from embedder.progress import Progress
from export.precisions import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 0 on success, 2 on a refused or failed export."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="sentence-transformers model directory")
    parser.add_argument(
        "--out", required=True, help="artifact directory or URI (s3://bucket/artifacts/minilm) to create"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="precision of the exported graph"
    )
    parser.add_argument(
        "--pooling-in-graph", action="store_true", help="append pooling+normalisation to the graph"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    parser.add_argument("--no-progress", action="store_true", help="no step lines on stderr")
    args = parser.parse_args(argv)
    # Imported after parsing: the pipeline loads torch and transformers, which --help does not need.
    from transformers.utils import logging as transformers_logging

    from export.pipeline import ExportRequest
    from export.remote import export_to

    # The export prints its own step lines; transformers' weight-loading bars (the model, then the
    # sentence-transformers reference) would only interleave with them.
    transformers_logging.disable_progress_bar()

    request = ExportRequest(args.model, Path(), args.precision, args.pooling_in_graph, args.overwrite)
    try:
        manifest = export_to(request, args.out, log=Progress("export", enabled=not args.no_progress).say)
    except EmbedderError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"export: wrote {args.out} fingerprint={manifest.fingerprint} min_cosine={manifest.parity['min_cosine']:.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
