"""Long commands say what they are doing on stderr, and `--no-progress` silences them (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.__main__ import main as export_main
from jobs.build_index import cli as build_index
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.vectors import clustered_vectors


def test_build_index_shows_each_step_and_is_silent_with_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = tmp_path / "emb"
    write_embeddings_parquet(
        emb / "part-0.parquet", list(range(3000)), clustered_vectors(3000, 16), fingerprint="x"
    )
    assert (
        build_index.main(["--embeddings", str(emb), "--out", str(tmp_path / "a"), "--factory", "IVF16,Flat"])
        == 0
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("build_index [")]
    assert any("recall@10" in line for line in lines) and any("publishing" in line for line in lines), err
    assert any("done in" in line for line in lines)
    argv = [
        "--embeddings",
        str(emb),
        "--out",
        str(tmp_path / "b"),
        "--factory",
        "IVF16,Flat",
        "--no-progress",
    ]
    assert build_index.main(argv) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_export_shows_its_steps_and_is_silent_with_no_progress(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export_main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "a")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("export [")]
    assert any("tracing" in line for line in lines) and any("parity" in line for line in lines), lines
    assert export_main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("export [")]
