"""python -m embedder encode <artifact_dir> --input lines.txt --output vectors.npy"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from embedder.cli_flags import add_runtime_flags
from embedder.encoder import Encoder
from embedder.errors import EmbedderError


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: one vector per input line, saved as a float32 .npy (n, dim)."""
    parser = argparse.ArgumentParser(prog="python -m embedder")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="embed one text per line")
    enc.add_argument("artifact", type=Path, help="exported model directory")
    enc.add_argument("--input", required=True, type=Path, help="UTF-8 text file, one text per line")
    enc.add_argument("--output", required=True, type=Path, help=".npy file to write")
    enc.add_argument("--threads", type=int, default=0, help="intra-op threads (0: one per physical core)")
    add_runtime_flags(enc)
    enc.add_argument("--no-truncate", action="store_true", help="fail on texts longer than the max length")
    args = parser.parse_args(argv)
    try:
        lines = args.input.read_text(encoding="utf-8").splitlines()
        encoder = Encoder.load(
            args.artifact, threads=args.threads, backend=args.backend, precision=args.precision
        )
        started = time.perf_counter()
        result = encoder.encode_detailed(lines, truncate=not args.no_truncate)
    except (OSError, EmbedderError) as exc:
        hint = " (line numbers are 0-based)" if isinstance(exc, EmbedderError) else ""
        print(f"encode failed: {exc}{hint}", file=sys.stderr)
        return 2
    np.save(args.output, result.vectors)
    seconds = time.perf_counter() - started
    print(
        f"encoded {len(lines)} texts -> {args.output} shape={result.vectors.shape} "
        f"truncated={int(result.truncated.sum())} in {seconds:.2f}s fingerprint={encoder.fingerprint} "
        f"runtime={encoder.runtime.backend}/{encoder.runtime.precision} ({encoder.runtime.reason})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
