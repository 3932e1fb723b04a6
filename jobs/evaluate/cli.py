"""Retrieval quality per /match mode: `python -m jobs.evaluate --index R --artifact A --labels L`.

    python -m jobs.evaluate --index indexes/faq --artifact artifacts/minilm-fp32 \\
        --labels labels.parquet [--index-version V] [--alpha 0.6] [--output report.json]

L is parquet or JSON lines (*.jsonl) with `query` and `relevant_id` (the id that answers it) or
`answer` (every stored row with that answer is relevant). Prints the report as JSON, then one table
line per mode (dense, lexical, hybrid@alpha): top1, MRR@10, recall@10 (index/evaluation.py). alpha
is the version's fitted one (jobs.fit_hybrid) unless --alpha says. No Ray. Exit 0, or 2 on wrong
input (one line on stderr).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from index.evaluation import format_table
from jobs.common.cli import JobArgumentParser, run_job
from jobs.evaluate.run import EvaluateConfig, run


def parse_args(argv: Sequence[str] | None = None) -> EvaluateConfig:
    """Command line (flags win over QM_EVALUATE_<FIELD> environment variables) -> EvaluateConfig."""
    p = JobArgumentParser("evaluate", __doc__, "QM_EVALUATE_")
    p.add_argument("--index", required=True, help="index root")
    p.add_argument("--artifact", help="the model artifact the index was built with")
    p.add_argument("--labels", help="labelled queries: parquet, or JSON lines (*.jsonl)")
    p.add_argument("--index-version", help="default: CURRENT")
    p.add_argument("--alpha", type=float, help="hybrid weight (default: the version's fitted one, else 1)")
    p.add_argument("--output", help="write the report as JSON here (path or URI)")
    p.add_argument("--threads", type=int, help="encoder threads (default 0: one per core)")
    return p.config(EvaluateConfig, argv)


def printed(rep: dict[str, Any]) -> str:
    """The JSON report, then one line per mode."""
    return json.dumps(rep, sort_keys=True) + "\n" + format_table(rep["modes"], rep["alpha"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 evaluated, 2 wrong input."""
    cfg = parse_args(argv)
    return run_job("evaluate", lambda: run(cfg), printed)
