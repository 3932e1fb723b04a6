"""`python -m bench.index <sub-command> [flags]`: the FAISS benchmarks behind one command.

    latency  factories side by side at one size: build, bytes/vector, recall, query latency
             (was `python -m bench.index`; bench/results/index.json)
    filter   filtered search at selectivities 50% to 0.01% (was `bench.index_filter`; index_filter.json)
    scale    the real build job at 1M / 3M / 10M, --table prints the docs' table
             (was `bench.index_scale`; index_scale.json)

`python -m bench.index <sub-command> --help` lists each one's flags.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench.index import filtered, latency, scale

COMMANDS: dict[str, Callable[[Sequence[str] | None], None]] = {
    "latency": latency.main,
    "filter": filtered.main,
    "scale": scale.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sub-command named first; without one (or with --help) print what there is."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__)
        return 0 if args[:1] in ([], ["-h"], ["--help"]) else 2
    COMMANDS[args[0]](args[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
