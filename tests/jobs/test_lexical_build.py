"""jobs.build_index writes the version's lexical index from the question column (real parquet, FAISS,
npz), --no-lexical skips it, a named column that is missing is refused, --update rebuilds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import store as index_store
from index.lexical import LEXICAL_FILE, tokenize
from index.searcher import IndexSearcher
from jobs.build_index import cli as build_index
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.vectors import clustered_vectors

FP = "sha256:bbbbbbbbbbbbbbbb"


def write(directory: Path, n: int, offset: int = 0) -> list[str]:
    questions = [f"How do I fix error E-{1000 + i}?" for i in range(offset, offset + n)]
    write_embeddings_parquet(
        directory / "part-00000.parquet",
        list(range(offset, offset + n)),
        clustered_vectors(n, 32, seed=offset),
        {"question": questions, "answer": [f"answer {i}" for i in range(n)]},
        fingerprint=FP,
    )
    return questions


def test_build_writes_a_lexical_index_and_no_lexical_skips_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb, out = tmp_path / "emb", tmp_path / "idx"
    questions = write(emb, 300)
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--no-progress"]) == 0
    assert "lexical:" in capsys.readouterr().out
    version = index_store.current_version(out)
    assert (out / str(version) / LEXICAL_FILE).is_file()
    searcher = IndexSearcher.open(out)
    assert searcher.lexical is not None and searcher.manifest.lexical["column"] == "question"
    assert LEXICAL_FILE in searcher.manifest.files  # size and sha256 verified like every file
    # The row whose question names the code scores highest (row i = question i).
    scores = searcher.lexical.scores("what is E-1234")
    assert int(np.argmax(scores)) == questions.index("How do I fix error E-1234?")
    assert set(tokenize(questions[234])) >= {"e-1234", "1234"}

    assert (
        build_index.main(["--embeddings", str(emb), "--out", str(out), "--no-lexical", "--no-progress"]) == 0
    )
    assert "no lexical index" in capsys.readouterr().out
    bare = IndexSearcher.open(out)
    assert bare.lexical is None and bare.manifest.lexical is None
    assert not (out / bare.version / LEXICAL_FILE).exists()

    code = build_index.main(["--embeddings", str(emb), "--out", str(out), "--lexical-column", "body"])
    assert code == 2 and "--lexical-column 'body'" in capsys.readouterr().err


def test_update_rebuilds_the_lexical_index_over_every_row(tmp_path: Path) -> None:
    emb, more, out = tmp_path / "emb", tmp_path / "more", tmp_path / "idx"
    write(emb, 300)
    assert build_index.main(["--embeddings", str(emb), "--out", str(out), "--no-progress"]) == 0
    write(more, 350)  # 50 new rows
    assert build_index.main(["--embeddings", str(more), "--out", str(out), "--update", "--no-progress"]) == 0
    searcher = IndexSearcher.open(out)
    assert searcher.lexical is not None and searcher.lexical.count == searcher.size == 350
    assert searcher.lexical.scores("E-1340").max() > 0
