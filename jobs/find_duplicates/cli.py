"""Duplicate questions in an embeddings run: `python -m jobs.find_duplicates --embeddings E --output O`.

    python -m jobs.find_duplicates --embeddings runs/faq --output runs/faq-dups \\
        [--corpus data/faq.parquet --text-column question --id-column id | --no-exact] \\
        [--threshold 0.9] [--k 20] [--index indexes/faq [--index-version V]] [--check-sample 1000]

E, O, the corpus and the index root are local paths or URIs (s3://, ...). How the run works:
jobs/find_duplicates/run.py; the pair and group logic: jobs/find_duplicates/dedup.py.

Output: pairs.parquet (id_a < id_b, score, kind; with --group-by also same_group), groups.parquet (group_id, member_ids,
representative, size) and, written last, _SUMMARY.json. Wrong input exits 2 with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.common.cli import JobArgumentParser, run_job
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.run import run


def one_line(summary: dict[str, Any]) -> str:
    """The stdout summary line."""
    check = summary.get("check") or {}
    agreement = (
        f", pair recall {check['recall']:.4f} / precision {check['precision']:.4f} on {check['sample_rows']} rows"
        if check.get("recall") is not None and check.get("precision") is not None
        else ""
    )
    return (
        f"{summary['rows']} rows: {summary['exact_pairs']} exact + {summary['near_pairs']} near pairs "
        f"(cosine >= {summary['threshold']}), {summary['groups']} groups covering {summary['rows_in_groups']} rows"
        f"{agreement}, {summary['wall_seconds']:.1f} s -> {summary['output']}"
    )


def parse_args(argv: Sequence[str] | None = None) -> DedupConfig:
    """Command line (flags win over QM_DEDUP_<FIELD> environment variables) -> DedupConfig, checked before any work."""
    d = DedupConfig("", "")
    p = JobArgumentParser("find_duplicates", __doc__, "QM_DEDUP_")
    p.add_argument("--embeddings", required=True, help="embeddings directory (part-*.parquet)")
    p.add_argument("--output", required=True, help="output directory or URI")
    p.add_argument("--corpus", help="the embed job's input (parquet file, directory or glob), for the texts")
    p.add_argument(
        "--text-column", help=f"text column in --corpus, or a passthrough column (default: {d.text_column})"
    )
    p.add_argument("--id-column", help=f"id column in --corpus ('' = row positions; default: {d.id_column})")
    p.add_argument(
        "--no-exact", dest="exact", action="store_false", help="skip the exact stage (no texts needed)"
    )
    p.add_argument("--threshold", type=float, help=f"cosine in (0, 1] (default: {d.threshold})")
    p.add_argument("--k", type=int, help=f"neighbours searched per question (default: {d.k})")
    p.add_argument("--index", help="index root: use its CURRENT (or --index-version) instead of building")
    p.add_argument("--index-version")
    p.add_argument(
        "--factory", help=f"'auto' or a FAISS factory for the index built here (default: {d.factory})"
    )
    p.add_argument("--workers", type=int, help=f"search actors, 1 CPU each (default: {d.workers})")
    p.add_argument("--build-cpus", type=int, help=f"default: {d.build_cpus}")
    p.add_argument("--shard-rows", type=int, help=f"default: {d.shard_rows}")
    p.add_argument(
        "--check-sample", type=int, help=f"rows checked by brute force (0: none; default: {d.check_sample})"
    )
    p.add_argument("--seed", type=int, help=f"default: {d.seed}")
    p.add_argument("--ray-address")
    p.add_argument(
        "--filter",
        help='only rows this /match filter selects, e.g. \'{"category": "billing"}\' (not with --index)',
    )
    p.add_argument(
        "--group-by",
        help="a passthrough column (e.g. answer): mark pairs within one value (same_group) and count those across",
    )
    return p.config(DedupConfig, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 on wrong input (one line on stderr)."""
    cfg = parse_args(argv)
    return run_job("find_duplicates", lambda: run(cfg), one_line)
