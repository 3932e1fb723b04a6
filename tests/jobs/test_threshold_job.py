"""python -m jobs.threshold: labelled text pairs scored with the real Encoder, the report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from index.thresholds import THRESHOLDS_FILE, lowest_threshold
from jobs.build_index.build import build
from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.threshold import cli as job
from testkit.vectors import clustered_vectors

PAIRS = [
    ("How do I reset my password?", "I forgot my password", 1),
    ("Where is my order?", "Track my parcel", 1),
    ("Can I return an item?", "How do returns work?", 1),
    ("How do I reset my password?", "What are your opening hours?", 0),
    ("Where is my order?", "Do you ship to Canada?", 0),
    ("Can I return an item?", "Change my email address", 0),
    ("Cancel my subscription", "Stop my plan", 1),
    ("Cancel my subscription", "Is there a student discount?", 0),
]


def write_pairs(path: Path) -> None:
    a, b, y = zip(*PAIRS, strict=True)
    pq.write_table(pa.table({"text_a": list(a), "text_b": list(b), "label": list(y)}), path)


def test_text_pairs_are_scored_with_the_encoder_and_the_threshold_reaches_the_target(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pairs(tmp_path / "pairs.parquet")
    report = tmp_path / "out" / "report.json"
    pairs = str(tmp_path / "pairs.parquet")
    argv = ["--pairs", pairs, "--artifact", str(tiny_artifact), "--target-precision", "0.5", "--threads", "1"]
    code = job.main([*argv, "--output", str(report)])
    enc = Encoder.load(tiny_artifact, threads=1)
    a, b, y = zip(*PAIRS, strict=True)
    va, vb = enc.encode(list(a)), enc.encode(list(b))
    expected = np.einsum("ij,ij->i", va, vb) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    chosen = lowest_threshold(expected, y, 0.5)
    assert chosen is not None and code == 0
    got = json.loads(report.read_text())
    assert got["pairs"] == 8 and got["positives"] == 4 and got["fingerprint"] == enc.fingerprint
    assert got["chosen"]["threshold"] == pytest.approx(chosen.threshold, abs=1e-6)
    assert got["chosen"]["precision"] >= 0.5
    assert f"{chosen.threshold:.6f}" in capsys.readouterr().out
    assert [p["threshold"] for p in got["table"]][:3] == [0.05, 0.1, 0.15]


def test_a_target_no_threshold_reaches_exits_1_and_stores_nothing(tmp_path: Path, capsys) -> None:
    emb, root = tmp_path / "emb", tmp_path / "idx"
    vectors = clustered_vectors(50, 8, seed=2)
    write_embeddings_parquet(emb / "part-0.parquet", list(range(50)), vectors, fingerprint="sha256:x")
    version = build(emb, root).version
    (tmp_path / "p.csv").write_text("id_a,id_b,label\n0,0,0\n1,2,1\n")  # the top pair (itself) is a non-match
    code = job.main(["--pairs", str(tmp_path / "p.csv"), "--embeddings", str(emb), "--index", str(root)])
    assert code == 1 and "no threshold reaches precision 0.95" in capsys.readouterr().out
    assert not (root / version / THRESHOLDS_FILE).exists()


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        ("id_a,id_b\n0,1\n", [], "need a 'label' column"),
        ("a,b,label\n0,1,1\n", [], "need text_a, text_b, label"),
        ("id_a,id_b,label\n0,1,2\n", [], "label must be 1"),
        ("id_a,id_b,label\n0,999,1\n", [], "ids not in the embeddings"),
        (
            "id_a,id_b,label\n0,1,1\n",
            ["--target-precision", "0"],
            "--target-precision 0.0: must be in (0, 1]",
        ),
        ("id_a,id_b,label\n0,1,1\n", ["--index", "OTHER"], "does not carry across models"),
        ("id_a,id_b,label\n0,1,1\n", ["--pairs", "missing.parquet"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str, extra: list[str], message: str
) -> None:
    emb = tmp_path / "emb"
    write_embeddings_parquet(
        emb / "part-0.parquet", list(range(50)), clustered_vectors(50, 8), fingerprint="sha256:a"
    )
    if "OTHER" in extra:  # an index built from another model's vectors
        write_embeddings_parquet(
            tmp_path / "emb2" / "part-0.parquet",
            list(range(50)),
            clustered_vectors(50, 8),
            fingerprint="sha256:b",
        )
        build(tmp_path / "emb2", tmp_path / "idx")
        extra = ["--index", str(tmp_path / "idx")]
    if "missing.parquet" in extra:
        extra = ["--pairs", str(tmp_path / "missing.parquet")]
    (tmp_path / "p.csv").write_text(csv)
    code = exit_code(["--pairs", str(tmp_path / "p.csv"), "--embeddings", str(emb), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with."""
    try:
        return job.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
