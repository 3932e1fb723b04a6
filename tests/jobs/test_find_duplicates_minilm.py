"""find_duplicates with the real model on real FAQ text: pairs it reports are paraphrases.

data/sample_qa.parquet groups questions into paraphrase groups (`group`: the same intent worded
differently). Embedded with all-MiniLM-L6-v2, the near-duplicate pairs the job reports at its
default threshold must be pairs of the same group (precision against the labels), and the index
search must find the pairs an exact all-pairs comparison finds (recall against brute force).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.run import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROWS = 800


LOCAL_RAY = {"log_to_driver": False}  # the conftest fixture's settings


def test_reported_near_duplicates_are_paraphrases_and_match_brute_force(
    local_ray: None, shipped_minilm: Path, tmp_path: Path
) -> None:
    table = pq.read_table(REPO / "data" / "sample_qa.parquet").slice(0, ROWS)
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(table, corpus)
    ids = table.column("id").to_pylist()
    questions = table.column("question").to_pylist()
    vectors = Encoder.load(shipped_minilm, threads=2).encode(questions)
    emb = tmp_path / "emb"
    write_embeddings_parquet(emb / "part-00000.parquet", ids, vectors, fingerprint="sha256:minilm-test")

    out = tmp_path / "dups"
    summary = run(
        DedupConfig(str(emb), str(out), corpus=str(corpus), workers=1, check_sample=ROWS, progress=False)
    )
    assert summary["check"]["recall"] >= 0.95, summary["check"]

    group = dict(zip(ids, table.column("group").to_pylist(), strict=True))
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    near = [p for p in pairs if p["kind"] == "near"]
    assert len(near) >= 50, f"only {len(near)} near pairs: the test says nothing"
    same_group = sum(group[p["id_a"]] == group[p["id_b"]] for p in near) / len(near)
    assert same_group >= 0.9, f"only {same_group:.3f} of near pairs are labelled paraphrases"
