"""Choose a match threshold from labelled pairs: `python -m jobs.threshold --pairs P (--artifact A | --embeddings E)`.

    python -m jobs.threshold --pairs labelled.parquet --artifact artifacts/minilm-fp32 \\
        [--target-precision 0.95] [--index indexes/faq [--index-version V]] [--output report.json]

P is parquet or CSV (a name ending in .csv) with `text_a, text_b, label` (scored with the
Encoder of --artifact) or `id_a, id_b, label` (scored from the stored vectors of --embeddings);
label is 1 for a true match, 0 otherwise. Prints precision and recall over thresholds and the
lowest threshold whose precision reaches the target; --output writes the same as JSON. With
--index the threshold becomes that index version's default /match min_score
(`<root>/<version>/thresholds.json`, see index/thresholds.py), refused when the index was
built with another model. No Ray. Exit 0: a threshold reaches the target; 1: none does (nothing
stored); 2: wrong input (one line on stderr).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.common.cli import JobArgumentParser, run_job
from jobs.threshold.run import ThresholdConfig, format_table, run


def parse_args(argv: Sequence[str] | None = None) -> ThresholdConfig:
    """Command line (flags win over QM_THRESHOLD_<FIELD> environment variables) -> ThresholdConfig."""
    d = ThresholdConfig("")
    p = JobArgumentParser("threshold", __doc__, "QM_THRESHOLD_")
    p.add_argument("--pairs", required=True, help="labelled pairs: parquet, or CSV (*.csv)")
    p.add_argument("--artifact", help="score text_a/text_b with this model artifact")
    p.add_argument("--embeddings", help="score id_a/id_b from this embeddings directory")
    p.add_argument("--target-precision", type=float, help=f"default: {d.target_precision}")
    p.add_argument("--step", type=float, help=f"table thresholds every STEP (default: {d.step})")
    p.add_argument("--index", help="index root: store the threshold as its version's default min_score")
    p.add_argument("--index-version", help="default: CURRENT")
    p.add_argument("--output", help="write the report as JSON here (path or URI)")
    p.add_argument("--threads", type=int, help="encoder threads (default 0: one per core)")
    p.add_argument(
        "--filter",
        help='with --embeddings: only pairs whose two rows this /match filter selects, e.g. \'{"category": "billing"}\'',
    )
    return p.config(ThresholdConfig, argv)


def printed(cfg: ThresholdConfig, rep: dict[str, Any]) -> str:
    """What the command prints: the table, the chosen threshold and where it was stored."""
    text = format_table(rep)
    if "stored" in rep:
        text += f"\nstored as the default min_score of {cfg.index} version {rep['stored']['version']}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 threshold found (and stored with --index), 1 none reaches the target, 2 bad input."""
    cfg = parse_args(argv)
    return run_job(
        "threshold",
        lambda: run(cfg),
        lambda rep: printed(cfg, rep),
        lambda rep: 0 if rep["chosen"] is not None else 1,
    )
