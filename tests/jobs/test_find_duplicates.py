"""python -m jobs.find_duplicates end to end: real parquet, real FAISS, real local Ray, checked by brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from jobs.build_index.build import build
from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.common.layout import GROUPS_FILE, PAIRS_FILE, SUMMARY_FILE
from jobs.find_duplicates import cli as job
from testkit.vectors import clustered_vectors

FP = "sha256:dddddddddddddddd"
THRESHOLD = 0.9
N, DIM = 2400, 32


class Corpus:
    """Clusters of paraphrases (cosines around the threshold) plus planted exact text duplicates."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centres = clustered_vectors(700, DIM, seed=seed)
        label = rng.integers(0, len(centres), N)
        spread = rng.uniform(0.25, 0.45, (N, 1))  # within-cluster cosines ~0.8-0.97
        noise = rng.standard_normal((N, DIM)) / np.sqrt(DIM)
        v = centres[label] + spread * noise
        self.vectors = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        self.ids = (rng.permutation(N) * 3 + 7).tolist()  # int ids, not in row order
        self.texts = [f"Question number {i} about topic {label[r]}" for r, i in enumerate(self.ids)]
        # 30 planted pairs: far apart as vectors, the same question up to case and punctuation.
        self.planted: set[tuple[int, int]] = set()
        rows = rng.permutation(N)[:60].reshape(30, 2)
        for a, b in rows.tolist():
            self.texts[a] = f"How do I reset password {a}?"
            self.texts[b] = f"  how do I RESET password {a}  "
            self.planted.add((min(self.ids[a], self.ids[b]), max(self.ids[a], self.ids[b])))

    def brute_force_pairs(self) -> set[tuple[int, int]]:
        """Every pair with cosine >= THRESHOLD, by all-pairs matmul."""
        sims = self.vectors @ self.vectors.T
        i, j = np.nonzero(np.triu(sims >= THRESHOLD - 1e-6, k=1))
        return {
            (min(self.ids[a], self.ids[b]), max(self.ids[a], self.ids[b])) for a, b in zip(i, j, strict=True)
        }

    def write(self, directory: Path, files: int, order_seed: int, fingerprint: str = FP) -> Path:
        """Embeddings parquet (with the question passthrough) split into `files` in a shuffled order."""
        order = np.random.default_rng(order_seed).permutation(N)
        for f, part in enumerate(np.array_split(order, files)):
            write_embeddings_parquet(
                directory / f"part-{f:05d}.parquet",
                [self.ids[r] for r in part],
                self.vectors[part],
                {"question": [self.texts[r] for r in part]},
                fingerprint=fingerprint,
                row_group_rows=300,
            )
        return directory

    def write_corpus(self, path: Path) -> Path:
        pq.write_table(pa.table({"id": self.ids, "question": self.texts, "answer": ["a"] * N}), path)
        return path


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def run(argv: list[str]) -> int:
    try:
        return job.main([*argv, "--no-progress"])
    except SystemExit as exc:  # argparse refusals
        return int(exc.code or 0)


def pairs_of(out: Path, kind: str | None = None) -> set[tuple[int, int]]:
    rows = pq.read_table(out / PAIRS_FILE).to_pylist()
    return {(r["id_a"], r["id_b"]) for r in rows if kind is None or r["kind"] == kind}


@pytest.mark.ray
@pytest.mark.slow
def test_pairs_and_groups_agree_with_brute_force_and_do_not_depend_on_file_order(
    local_ray: None, corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = corpus.write(tmp_path / "emb", files=3, order_seed=1)
    source = corpus.write_corpus(tmp_path / "corpus.parquet")
    args = ["--threshold", str(THRESHOLD), "--factory", "IVF16,Flat", "--shard-rows", "400"]
    args += ["--check-sample", "600", "--corpus", str(source)]
    assert run(["--embeddings", str(emb), "--output", str(tmp_path / "out"), *args]) == 0
    assert "find_duplicates [" not in capsys.readouterr().err  # --no-progress: no step lines

    out = tmp_path / "out"
    summary = json.loads((out / SUMMARY_FILE).read_text())
    truth = corpus.brute_force_pairs()
    assert len(truth) > 500  # enough pairs for the recall to mean something
    recall = len(pairs_of(out) & truth) / len(truth)
    assert recall >= 0.95, f"pair recall {recall:.4f} vs brute force (IVF16, nprobe tuned)"
    assert pairs_of(out, "near") <= truth  # every near pair really is above the threshold
    assert corpus.planted <= pairs_of(out, "exact")  # found from the text alone (vectors are far apart)
    assert summary["check"]["recall"] >= 0.95 and summary["check"]["precision"] == 1.0
    assert summary["index"]["factory"] == "IVF16,Flat" and summary["index"]["source"] == "built"
    assert summary["texts"]["source"] == "corpus" and summary["fingerprint"] == FP
    assert summary["rows"] == N and summary["threshold"] == THRESHOLD and summary["k"] == 20

    table = pq.read_table(out / PAIRS_FILE)
    ids_a, ids_b = table.column("id_a").to_pylist(), table.column("id_b").to_pylist()
    assert all(a < b for a, b in zip(ids_a, ids_b, strict=True))
    assert len(set(zip(ids_a, ids_b, strict=True))) == table.num_rows  # each unordered pair once
    assert summary["exact_pairs"] + summary["near_pairs"] == table.num_rows

    # Groups are the connected components of the pairs; the representative is the smallest id.
    groups = pq.read_table(out / GROUPS_FILE).to_pylist()
    member_of = {m: g["group_id"] for g in groups for m in g["member_ids"]}
    assert all(member_of[a] == member_of[b] for a, b in zip(ids_a, ids_b, strict=True))
    assert sum(g["size"] for g in groups) == len(member_of) == summary["rows_in_groups"]
    assert all(g["representative"] == min(g["member_ids"]) == g["member_ids"][0] for g in groups)

    # Same rows in other files, another order: byte-for-byte the same pairs and groups. This run
    # shows its progress: a line for every long step and a row bar for the search.
    emb2 = corpus.write(tmp_path / "emb2", files=5, order_seed=2)
    assert job.main(["--embeddings", str(emb2), "--output", str(tmp_path / "out2"), *args]) == 0
    err = capsys.readouterr().err
    for step in (
        f"reading {N} rows",
        "exact stage",
        f"building an index of {N}",
        "near search",
        "brute force",
    ):
        assert step in err, err
    assert "done in" in err
    for name in (PAIRS_FILE, GROUPS_FILE):
        assert pq.read_table(tmp_path / "out2" / name).equals(pq.read_table(out / name))


@pytest.mark.ray
@pytest.mark.slow
def test_a_matching_index_version_is_used_and_a_mismatching_one_refused(
    local_ray: None, corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = corpus.write(tmp_path / "emb", files=2, order_seed=3)
    version = build(emb, tmp_path / "idx").version  # Flat (small corpus): exact search, file row order
    out = tmp_path / "out"
    argv = ["--embeddings", str(emb), "--output", str(out), "--index", str(tmp_path / "idx")]
    assert run([*argv, "--shard-rows", "500"]) == 0  # texts from the passthrough column
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["index"]["source"] == "loaded" and summary["index"]["version"] == version
    assert summary["texts"]["source"] == "embeddings"
    truth = corpus.brute_force_pairs()
    assert pairs_of(out, "near") == truth - pairs_of(out, "exact")  # exact index: exactly brute force
    assert corpus.planted <= pairs_of(out, "exact")
    assert summary["check"]["recall"] == 1.0

    other = corpus.write(tmp_path / "emb-other", files=1, order_seed=3, fingerprint="sha256:eeeeeeeeeeeeeeee")
    build(other, tmp_path / "idx-other")
    capsys.readouterr()
    argv = [
        "--embeddings",
        str(emb),
        "--output",
        str(tmp_path / "out3"),
        "--index",
        str(tmp_path / "idx-other"),
    ]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "was built from model sha256:eeeeeeeeeeeeeeee" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out3" / SUMMARY_FILE).exists()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small embeddings dir (no text column) and a corpus, for the input checks."""
    base = tmp_path_factory.mktemp("dedup-inputs")
    vectors = clustered_vectors(40, 8, seed=4)
    write_embeddings_parquet(base / "emb" / "part-0.parquet", list(range(40)), vectors, fingerprint=FP)
    pq.write_table(
        pa.table({"id": list(range(40)), "question": [f"q{i}" for i in range(40)]}), base / "c.parquet"
    )
    pq.write_table(pa.table({"id": [f"s{i}" for i in range(40)], "question": ["q"] * 40}), base / "s.parquet")
    write_embeddings_parquet(base / "emb30" / "part-0.parquet", list(range(30)), vectors[:30], fingerprint=FP)
    build(base / "emb30", base / "idx30")  # same model, other rows
    return base / "emb", base


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "0"], "--threshold 0.0: must be in (0, 1]"),
        (["--threshold", "1.5"], "--threshold 1.5: must be in (0, 1]"),
        (["--threshold", "high"], "argument --threshold: invalid float value"),
        (["--k", "0"], "--k 0: must be >= 1"),
        (["--embeddings", "{base}/nope"], "does not exist"),
        ([], "no texts for the exact stage"),
        (["--corpus", "{base}/c.parquet", "--text-column", "title"], "has no column(s) 'title'"),
        (["--corpus", "{base}/s.parquet"], "id column 'id' is string, the embeddings' ids are int64"),
        (["--corpus", "{base}/c.parquet", "--factory", "IVF9x,Nope"], "bad FAISS factory"),
        (["--no-exact", "--index", "{base}/no-index"], "no CURRENT index version"),
        (["--no-exact", "--index", "{base}/idx30"], "holds 30 x 8 vectors, the embeddings 40 x 8"),
        (["--no-exact", "--group-by", "answer"], "--group-by 'answer': the embeddings have no such column"),
    ],
)
def test_bad_input_fails_before_any_work_with_one_line(
    small: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    emb, base = small
    out = tmp_path / "out"
    code = run(["--embeddings", str(emb), "--output", str(out), *(e.format(base=base) for e in extra)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing was written


@pytest.mark.ray
@pytest.mark.slow
def test_everything_on_s3(local_ray: None, corpus: Corpus, tmp_path: Path) -> None:
    """Embeddings, corpus and output on s3:// (a real S3 server on loopback), same result as on disk."""
    from testkit.s3_server import patched_env, s3_server

    with s3_server() as server, patched_env(server.env):
        server.create_bucket("dedup")
        local = corpus.write(tmp_path / "emb", files=2, order_seed=4)
        for f in sorted(local.glob("part-*.parquet")):
            storage.write_bytes(f"s3://dedup/emb/{f.name}", f.read_bytes())
        storage.write_bytes(
            "s3://dedup/corpus/qa.parquet", corpus.write_corpus(tmp_path / "c.parquet").read_bytes()
        )
        args = ["--factory", "Flat", "--check-sample", "100"]
        remote = [
            "--embeddings",
            "s3://dedup/emb",
            "--corpus",
            "s3://dedup/corpus/",
            "--output",
            "s3://dedup/dups",
        ]
        assert run([*remote, *args]) == 0
        on_disk = [
            "--embeddings",
            str(local),
            "--corpus",
            str(tmp_path / "c.parquet"),
            "--output",
            str(tmp_path / "out"),
        ]
        assert run([*on_disk, *args]) == 0
        summary = storage.read_json("s3://dedup/dups/_SUMMARY.json")
        assert summary["output"] == "s3://dedup/dups" and summary["texts"]["source"] == "corpus"
        for name in (PAIRS_FILE, GROUPS_FILE):
            assert storage.read_parquet(f"s3://dedup/dups/{name}").equals(
                pq.read_table(tmp_path / "out" / name)
            )


@pytest.mark.ray
@pytest.mark.slow
def test_group_by_marks_each_pair_by_its_rows_answers(
    local_ray: None, corpus: Corpus, tmp_path: Path
) -> None:
    answers = {i: f"answer {r % 7}" for r, i in enumerate(corpus.ids)}  # a passthrough column
    order = np.random.default_rng(3).permutation(N)
    for f, part in enumerate(np.array_split(order, 3)):  # shuffled over files: values must follow their rows
        write_embeddings_parquet(
            tmp_path / "emb" / f"part-{f:05d}.parquet",
            [corpus.ids[r] for r in part],
            corpus.vectors[part],
            {"question": [corpus.texts[r] for r in part], "answer": [answers[corpus.ids[r]] for r in part]},
            fingerprint=FP,
        )
    args = ["--threshold", str(THRESHOLD), "--factory", "Flat", "--check-sample", "0", "--group-by", "answer"]
    assert run(["--embeddings", str(tmp_path / "emb"), "--output", str(tmp_path / "out"), *args]) == 0
    rows = pq.read_table(tmp_path / "out" / PAIRS_FILE).to_pylist()
    assert rows and all(r["same_group"] == (answers[r["id_a"]] == answers[r["id_b"]]) for r in rows)
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    same = sum(r["same_group"] for r in rows)
    assert (summary["pairs_same_group"], summary["pairs_across_groups"]) == (same, len(rows) - same)
    assert 0 < same < len(rows)
