"""python -m embedder encode <artifact_dir> --input lines.txt --output vectors.npy"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from embedder.cli_flags import add_runtime_flags, session_from_flags
from embedder.config import EncoderConfig
from embedder.encoder import Encoder
from embedder.errors import EmbedderError
from settings.loader import ConfigError


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: one vector per input line, saved as a float32 .npy (n, dim)."""
    parser = argparse.ArgumentParser(prog="python -m embedder")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="embed one text per line")
    enc.add_argument("artifact", type=Path, help="exported model directory")
    enc.add_argument("--input", required=True, type=Path, help="UTF-8 text file, one text per line")
    enc.add_argument("--output", required=True, type=Path, help=".npy file to write")
    enc.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads (default: QM_SESSION_THREADS or one per core)",
    )
    add_runtime_flags(enc)
    enc.add_argument("--no-truncate", action="store_true", help="fail on texts longer than the max length")
    args = parser.parse_args(argv)
    try:
        lines = args.input.read_text(encoding="utf-8").splitlines()
        # A flag given beats its QM_SESSION_* variable, which beats the default (one order everywhere).
        encoder = Encoder.load(args.artifact, config=EncoderConfig(session=session_from_flags(args)))
        started = time.perf_counter()
        result = encoder.encode_detailed(lines, truncate=not args.no_truncate)
    except ConfigError as exc:
        print(f"encode failed: {exc}", file=sys.stderr)
        return 2
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
