"""Every setting of one duplicates run (flags / QM_DEDUP_* through jobs.common.cli; recorded in _SUMMARY.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.common.embeddings_filter import parse_filter_setting
from settings.loader import check_field


@dataclass(frozen=True)
class DedupConfig:
    """Every setting of one run (recorded in _SUMMARY.json)."""

    embeddings: str
    output: str
    corpus: str | None = None  # the embed job's input, for the texts; None: a passthrough column
    text_column: str = "question"
    id_column: str = "id"  # "" : the corpus has no id column (the embed job then used row positions)
    exact: bool = True  # False: near stage only (no text needed)
    threshold: float = 0.9
    k: int = 20
    index: str | None = None  # index root whose version to use instead of building one
    index_version: str | None = None  # None: CURRENT
    factory: str = "auto"  # for the index built here: index.faiss_index.choose_factory, or a FAISS string
    workers: int = 2  # search actors (1 CPU each, one index copy each)
    build_cpus: int = 1  # CPUs (and FAISS threads) of the index-build task
    shard_rows: int = 4096  # query rows per actor call (progress and load-balance unit)
    check_sample: int = 1000  # query rows checked against brute force (0: no check)
    seed: int = 0
    ray_address: str | None = None
    progress: bool = True
    # Only rows this /match-style filter selects (jobs/common/embeddings_filter.py), e.g. one category;
    # from the command line or QM_DEDUP_FILTER as JSON text.
    filter: dict[str, Any] | None = None
    # A passthrough column of the embeddings (e.g. answer, as /match's group_by): each pair says
    # whether both questions share its value (pairs.parquet `same_group`), and the summary counts
    # the pairs across values: near-identical questions stored with different answers.
    group_by: str | None = None

    def __post_init__(self) -> None:
        parse_filter_setting(self)
        check_field(self, "threshold", 0.0 < self.threshold <= 1.0, "must be in (0, 1] (a cosine similarity)")
        check_field(self, "k", self.k >= 1, "must be >= 1")
        for name in ("workers", "build_cpus", "shard_rows"):
            check_field(self, name, getattr(self, name) >= 1, "must be >= 1")
        check_field(self, "check_sample", self.check_sample >= 0, "must be >= 0 (0: no check)")
