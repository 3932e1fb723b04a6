"""Fit the hybrid weight and its threshold: `python -m jobs.fit_hybrid --index R --artifact A --labels L`.

    python -m jobs.fit_hybrid --index indexes/faq --artifact artifacts/minilm-fp32 \\
        --labels labels.parquet [--target-precision 0.95] [--index-version V] [--dry-run] \\
        [--output report.json]

L as for jobs.evaluate (`query` + `relevant_id` or `answer`). Chooses alpha in {0, 0.1, ..., 1}
maximising MRR@10 of hybrid /match (ties: the larger alpha; alpha 1 is dense), then the lowest
hybrid min_score at that alpha whose returned matches reach the target precision, and stores both
with mode "hybrid" as the version's default in `<root>/<version>/hybrid.json` (index/hybrid.py),
which the service picks up within a poll, no restart. Prints the grid and one line per mode
(dense, lexical, hybrid@alpha: top1, MRR@10, recall@10, and the threshold's min_score, precision,
recall; dense's calibrated on the same answers for comparison, not stored). No Ray. Exit 0 (also
when no threshold reaches the target: alpha is stored without one), or 2 on wrong input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from index.evaluation import format_table
from jobs.common.cli import JobArgumentParser, run_job
from jobs.fit_hybrid.run import FitHybridConfig, run


def parse_args(argv: Sequence[str] | None = None) -> FitHybridConfig:
    """Command line (flags win over QM_FIT_HYBRID_<FIELD> environment variables) -> FitHybridConfig."""
    p = JobArgumentParser("fit_hybrid", __doc__, "QM_FIT_HYBRID_")
    p.add_argument("--index", required=True, help="index root")
    p.add_argument("--artifact", help="the model artifact the index was built with")
    p.add_argument("--labels", help="labelled queries: parquet, or JSON lines (*.jsonl)")
    p.add_argument("--index-version", help="default: CURRENT")
    p.add_argument("--dry-run", dest="store", action="store_false", help="report only")
    p.add_argument("--output", help="write the report as JSON here (path or URI)")
    p.add_argument("--threads", type=int, help="encoder threads (default 0: one per core)")
    p.add_argument(
        "--target-precision",
        type=float,
        help="precision the hybrid threshold reaches on the labels' answers (default: 0.95)",
    )
    return p.config(FitHybridConfig, argv)


def printed(rep: dict[str, Any]) -> str:
    """The grid, the modes at the fitted alpha and where it was stored."""
    grid = " ".join(f"{p['alpha']:g}:{p['mrr@10']:.4f}" for p in rep["grid"])
    text = f"mrr@10 by alpha: {grid}\n" + format_table(rep["modes"], rep["alpha"], rep["thresholds"])
    hybrid = rep["thresholds"]["hybrid"]
    if hybrid["threshold"] is None:
        text += f"\nno hybrid min_score reaches precision {hybrid['target_precision']} on these labels"
    if "stored" in rep:
        stored = rep["stored"]["min_score"]
        also = "no min_score" if stored is None else f"min_score={stored:.6f}"
        text += f"\nstored alpha={rep['alpha']:g}, {also} as version {rep['index_version']}'s hybrid default"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 fitted (and stored), 2 wrong input."""
    cfg = parse_args(argv)
    return run_job("fit_hybrid", lambda: run(cfg), printed)
