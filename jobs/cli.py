"""What every job's command line does at the end: run, one summary line on stdout, or one error line.

Exit codes: 0 done (or nothing to do), 2 wrong input or a clear failure (the message says what and
where; rerunning the same command resumes where a job supports it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from embedder.errors import EmbedderError


def run_job(name: str, run: Callable[[], dict[str, Any]], one_line: Callable[[dict[str, Any]], str]) -> int:
    """Run a job; print its one-line summary, or `<name>: error: <reason>` on stderr and return 2."""
    try:
        summary = run()
    except EmbedderError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(one_line(summary))
    return 0
