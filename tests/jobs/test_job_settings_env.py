"""Job settings from the environment: QM_INDEX_* for build_index, QM_JOB_* for embed_corpus (no Ray started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from index.errors import IndexInvalid
from index.faiss_index import IndexConfig
from jobs.build_index import cli as build_index
from jobs.embed_corpus.cli import parse_args
from jobs.embed_corpus.config import JobConfig


def test_build_index_takes_index_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[IndexConfig | None] = []

    def fake_build(*args: Any, **_: Any) -> Any:
        seen.append(args[5])
        raise IndexInvalid("stop here")

    monkeypatch.setattr(build_index, "build", fake_build)
    monkeypatch.setenv("QM_INDEX_NPROBE", "16")
    monkeypatch.setenv("QM_INDEX_TARGET_RECALL", "0.99")
    assert build_index.main(["--embeddings", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert seen == [IndexConfig(nprobe=16, target_recall=0.99)]


def test_build_index_reports_a_bad_environment_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("QM_INDEX_NPROBE", "many")
    assert build_index.main(["--embeddings", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "QM_INDEX_NPROBE='many'" in capsys.readouterr().err


REQUIRED = ["--artifact", "a", "--input", "i", "--output", "o"]


def test_job_config_flags_win_over_environment_which_wins_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_args(REQUIRED) == JobConfig("a", "i", "o")
    monkeypatch.setenv("QM_JOB_MAX_ACTORS", "4")
    monkeypatch.setenv("QM_JOB_KEEP_COLUMNS", "answer,category")
    monkeypatch.setenv("QM_JOB_PROGRESS", "off")
    monkeypatch.setenv("QM_JOB_ID_COLUMN", "none")
    cfg = parse_args(REQUIRED)
    assert (cfg.max_actors, cfg.keep_columns, cfg.progress, cfg.id_column) == (
        4,
        ("answer", "category"),
        False,
        None,
    )
    cfg = parse_args([*REQUIRED, "--max-actors", "3", "--keep-columns", "answer", "--id-column", "qid"])
    assert (cfg.max_actors, cfg.keep_columns, cfg.id_column) == (3, ("answer",), "qid")
    monkeypatch.setenv("QM_JOB_ARTIFACT", "from-env")
    assert parse_args(REQUIRED).artifact == "a"


def test_job_config_bad_values_exit_with_the_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QM_JOB_MIN_ACTORS", "x")
    with pytest.raises(SystemExit) as exit_:
        parse_args(REQUIRED)
    assert exit_.value.code == 2
    assert "environment variable QM_JOB_MIN_ACTORS='x': expected an integer" in capsys.readouterr().err
    monkeypatch.delenv("QM_JOB_MIN_ACTORS")
    with pytest.raises(SystemExit):
        parse_args([*REQUIRED, "--min-actors", "3"])
    assert "JobConfig.max_actors=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*REQUIRED, "--min-actors", "0"])
    assert "--min-actors 0: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "required", "env", "flag", "field"),
    [
        ("find_duplicates", ["--embeddings", "e", "--output", "o"], "QM_DEDUP_THRESHOLD", "--threshold", "threshold"),
        ("threshold", ["--pairs", "p.parquet"], "QM_THRESHOLD_TARGET_PRECISION", "--target-precision", "target_precision"),
    ],
)  # fmt: skip
def test_every_job_reads_its_settings_the_same_way(
    module: str,
    required: list[str],
    env: str,
    flag: str,
    field: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Flags win over the job's environment variables, which win over defaults; bad values name their source."""
    import importlib

    parse = importlib.import_module(f"jobs.{module}.cli").parse_args
    default = getattr(parse(required), field)
    monkeypatch.setenv(env, "0.5")
    assert getattr(parse(required), field) == 0.5 != default
    assert getattr(parse([*required, flag, "0.75"]), field) == 0.75
    monkeypatch.setenv(env, "7")
    with pytest.raises(SystemExit) as exit_:
        parse(required)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"environment variable {env}='7'" in err and "must be in (0, 1]" in err
    assert len(err.strip().splitlines()) == 1
