"""`--filter` in jobs.find_duplicates and jobs.threshold: the /match filter language on the embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.common.layout import PAIRS_FILE, SUMMARY_FILE
from jobs.find_duplicates import cli as find_duplicates
from jobs.threshold import cli as threshold

FP = "sha256:eeeeeeeeeeeeeeee"
N, DIM = 400, 16


def _corpus(directory: Path) -> tuple[np.ndarray, list[str]]:
    """Pairs of near-identical vectors (rows 2i, 2i+1); categories alternate per pair."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((N // 2, DIM))
    v = np.repeat(base, 2, axis=0) + 0.01 * rng.standard_normal((N, DIM))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    category = ["billing" if (i // 2) % 4 == 0 else "other" for i in range(N)]
    write_embeddings_parquet(
        directory / "part-00000.parquet",
        list(range(N)),
        v,
        {"question": [f"q{i}" for i in range(N)], "category": category},
        fingerprint=FP,
    )
    return v, category


@pytest.mark.ray
def test_find_duplicates_within_a_category_finds_only_that_categorys_pairs(
    tmp_path: Path, local_ray: None
) -> None:
    emb, out = tmp_path / "emb", tmp_path / "out"
    _, category = _corpus(emb)
    argv = ["--embeddings", str(emb), "--output", str(out), "--no-exact", "--no-progress", "--workers", "1"]
    assert find_duplicates.main([*argv, "--filter", '{"category": "billing"}']) == 0
    pairs = pq.read_table(out / PAIRS_FILE).to_pylist()
    want = {(i, i + 1) for i in range(0, N, 2) if category[i] == "billing"}
    got = {(min(p["id_a"], p["id_b"]), max(p["id_a"], p["id_b"])) for p in pairs}
    assert got == want
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (
        summary["filter_selected"] == sum(c == "billing" for c in category)
        and summary["rows_before_filter"] == N
    )
    assert summary["filter"] == {"category": "billing"} and summary["embeddings"].endswith("emb")


def test_find_duplicates_refuses_a_bad_filter_naming_the_column(tmp_path: Path, capsys) -> None:
    emb = tmp_path / "emb"
    _corpus(emb)
    argv = [
        "--embeddings",
        str(emb),
        "--output",
        str(tmp_path / "o"),
        "--no-exact",
        "--filter",
        '{"colour": "x"}',
    ]
    assert find_duplicates.main(argv) == 2
    assert "filter.colour" in capsys.readouterr().err


def test_threshold_scores_only_pairs_inside_the_filter(tmp_path: Path) -> None:
    emb = tmp_path / "emb"
    _, category = _corpus(emb)
    rows = [(i, i + 1, 1) for i in range(0, N, 2)] + [(i, (i + 7) % N, 0) for i in range(0, N, 2)]
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({k: [r[j] for r in rows] for j, k in enumerate(("id_a", "id_b", "label"))}), pairs
    )
    report = tmp_path / "report.json"
    base = ["--pairs", str(pairs), "--embeddings", str(emb), "--output", str(report)]
    assert threshold.main([*base, "--filter", '{"category": "billing"}']) == 0
    rep = json.loads(report.read_text())
    inside = sum(1 for a, b, _ in rows if category[a] == "billing" and category[b] == "billing")
    assert rep["pairs"] == inside < len(rows) and rep["filter"] == {"category": "billing"}
    assert threshold.main([*base, "--filter", '{"category": {"gte": "b"}}']) == 2
