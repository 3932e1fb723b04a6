"""Embeddings parquet -> versioned FAISS index directory; flips CURRENT only after verifying.

    python -m jobs.build_index --embeddings runs/emb --out indexes/faq [--factory auto|<faiss factory>]
        [--metric ip|l2] [--shards N] [--filter-columns category,language,updated]
    python -m jobs.build_index --out indexes/faq --rollback
    python -m jobs.build_index --embeddings runs/emb2 --out indexes/faq --update   (jobs/index_update.py)

A thin command line over jobs/index_build.py (full builds) and jobs/index_update.py (--update).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from embedder.config import ConfigError, from_mapping
from embedder.errors import EmbedderError
from index import store as index_store
from index.faiss_index import IndexConfig
from jobs.index_build import build
from jobs.index_update import update
from jobs.progress import Progress


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m jobs.build_index",
        description=__doc__.split("\n")[0],
        epilog="Index tunables (index.faiss_index.IndexConfig) come from QM_INDEX_<FIELD>, e.g. QM_INDEX_NPROBE=16.",
    )
    p.add_argument("--embeddings", help="embeddings directory (part-*.parquet)")
    p.add_argument("--out", required=True, help="index root, e.g. indexes/<name>")
    p.add_argument(
        "--factory",
        help="'auto' (default) or a FAISS factory string, e.g. IVF1024,Flat; with --update: the live version's",
    )
    p.add_argument("--metric", choices=["ip", "l2"], help="default ip; with --update: the live version's")
    p.add_argument("--shards", type=int, default=0, help="add vectors on N Ray actors, then merge")
    p.add_argument(
        "--filter-columns",
        default=None,
        help="comma-separated passthrough columns to filter /match on (strings, integers, timestamps); "
        "with --update: default the live version's",
    )
    p.add_argument("--rollback", action="store_true", help="point CURRENT at the previous version")
    p.add_argument(
        "--update",
        action="store_true",
        help="next version from CURRENT: reuse its trained index, add new/changed rows, remove deleted ids",
    )
    p.add_argument("--no-progress", action="store_true", help="no step lines or row bars on stderr")
    return p.parse_args(argv)


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        if args.rollback:
            version = index_store.rollback(args.out)
            print(f"rolled back {args.out}: CURRENT = {version}")
            return 0
        if not args.embeddings:
            print("error: --embeddings is required unless --rollback", file=sys.stderr)
            return 2
        cfg = from_mapping(IndexConfig, None, "QM_INDEX_")  # e.g. QM_INDEX_TARGET_RECALL=0.98
        if args.shards > 1:
            from jobs.index_shards import ensure_ray

            ensure_ray()
        columns = _split(args.filter_columns)
        if args.update:
            line = update(
                args.embeddings, args.out, args.factory, args.metric, args.shards, cfg, columns
            ).summary()
        else:
            factory, metric = args.factory or "auto", args.metric or "ip"
            progress = Progress("build_index", enabled=not args.no_progress)
            line = build(
                args.embeddings,
                args.out,
                factory,
                metric,
                args.shards,
                cfg,
                filter_columns=columns or (),
                progress=progress,
            ).summary()
    except (EmbedderError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
