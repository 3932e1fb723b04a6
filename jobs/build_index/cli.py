"""Embeddings parquet -> versioned FAISS index directory; flips CURRENT only after verifying.

    python -m jobs.build_index --embeddings runs/emb --out indexes/faq [--factory auto|<faiss factory>]
        [--metric ip|l2] [--shards N] [--filter-columns category,language,updated]
    python -m jobs.build_index --out indexes/faq --rollback
    python -m jobs.build_index --embeddings runs/emb2 --out indexes/faq --update   (jobs/build_index/update.py)

A thin command line over jobs/build_index/build.py (full builds) and jobs/build_index/update.py (--update).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from embedder.progress import Progress
from index import store as index_store
from index.faiss_index import IndexConfig
from jobs.build_index.build import build
from jobs.build_index.update import update
from jobs.common.cli import JobArgumentParser, run_job
from settings.loader import from_mapping


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (the index tunables come from QM_INDEX_*, see IndexConfig)."""
    p = JobArgumentParser("build_index", __doc__)
    p.epilog = (
        "Index tunables (index.faiss_index.IndexConfig) come from QM_INDEX_<FIELD>, e.g. QM_INDEX_NPROBE=16."
    )
    p.set_defaults(
        embeddings=None,
        factory=None,
        metric=None,
        shards=0,
        filter_columns=None,
        progress=True,
        rollback=False,
        update=False,
        lexical=True,
        lexical_column=None,
    )
    p.add_argument("--embeddings", help="embeddings directory (part-*.parquet)")
    p.add_argument("--out", required=True, help="index root, e.g. indexes/<name>")
    p.add_argument(
        "--factory",
        help="'auto' (default) or a FAISS factory string, e.g. IVF1024,Flat; with --update: the live version's",
    )
    p.add_argument("--metric", choices=["ip", "l2"], help="default ip; with --update: the live version's")
    p.add_argument("--shards", type=int, help="add vectors on N Ray actors, then merge")
    p.add_argument(
        "--filter-columns",
        help="comma-separated passthrough columns to filter /match on (strings, integers, timestamps); "
        "with --update: default the live version's",
    )
    p.add_argument(
        "--no-lexical",
        dest="lexical",
        action="store_false",
        help="build no BM25 index (lexical and hybrid /match modes then get a 422 on this version)",
    )
    p.add_argument(
        "--lexical-column",
        help="the text column BM25 indexes (default: question, skipped when the embeddings have none)",
    )
    p.add_argument("--rollback", action="store_true", help="point CURRENT at the previous version")
    p.add_argument(
        "--update",
        action="store_true",
        help="next version from CURRENT: reuse its trained index, add new/changed rows, remove deleted ids",
    )
    args = p.parse_args(argv)
    if not args.rollback and not args.embeddings:
        p.error("--embeddings is required unless --rollback")
    return args


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def run(args: argparse.Namespace) -> dict[str, str]:
    """Roll back, update or build, as the flags say; the one line to print."""
    if args.rollback:
        version = index_store.rollback(args.out)
        return {"line": f"rolled back {args.out}: CURRENT = {version}"}
    cfg = from_mapping(IndexConfig, None, "QM_INDEX_")  # e.g. QM_INDEX_TARGET_RECALL=0.98
    if args.shards > 1:
        from jobs.build_index.shards import ensure_ray

        ensure_ray()
    columns = _split(args.filter_columns)
    if args.update:
        return {
            "line": update(
                args.embeddings,
                args.out,
                args.factory,
                args.metric,
                args.shards,
                cfg,
                columns,
                args.lexical,
                args.lexical_column,
            ).summary()
        }
    factory, metric = args.factory or "auto", args.metric or "ip"
    built = build(
        args.embeddings,
        args.out,
        factory,
        metric,
        args.shards,
        cfg,
        filter_columns=columns or (),
        progress=Progress("build_index", enabled=args.progress),
        lexical=args.lexical,
        lexical_column=args.lexical_column,
    )
    return {"line": built.summary()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 2 wrong input or a refused build)."""
    args = parse_args(argv)
    return run_job("build_index", lambda: run(args), lambda summary: summary["line"])
