"""A model with prompts through the embed job and the index build, on a local Ray (two runs in all).

The tiny model carries e5-style prompts ("query: ", "document": "passage: ", no default): the job
gives documents the document prompt unless --prompt-name names another, records it, refuses an
unknown name and a --previous made with another prompt before any work, and an index built from
the output serves only a model that gives documents the same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder import Encoder
from embedder.errors import ModelMismatch
from engine.inprocess import InProcessBackend
from index import store as index_store
from index.faiss_index import IndexConfig
from index.prompt import DocumentPrompt
from index.searcher import IndexSearcher
from jobs.build_index.build import build
from jobs.build_index.update import update
from jobs.common.embeddings_io import PROMPT_KEY, PROMPT_NAME_KEY, inspect_embeddings
from jobs.embed_corpus.cli import main
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_qa.parquet"
ROWS = 120
# The recall gate is not what these tests are about (the random tiny model ties many scores).
ANY_RECALL = IndexConfig(target_recall=0.0)


def read_vectors(out: Path) -> dict[int, np.ndarray]:
    t = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    return dict(
        zip(t.column("id").to_pylist(), t.column("embedding").to_numpy(zero_copy_only=False), strict=True)
    )


@pytest.fixture(scope="module")
def runs(
    local_ray: str, prompted_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("prompt-runs")
    (base / "in").mkdir()
    table = pq.read_table(SAMPLE).slice(0, ROWS).select(["id", "question", "answer"])
    pq.write_table(table, base / "in" / "a.parquet")
    common = ["--artifact", str(prompted_artifact), "--input", str(base / "in"), "--shard-rows", "40"]
    # The default: the model's document prompt (through the library call).
    run(
        JobConfig(str(prompted_artifact), str(base / "in"), str(base / "docs"), shard_rows=40, progress=False)
    )
    # --prompt-name on the command line (the same flag-or-environment setting as every other).
    assert main([*common, "--output", str(base / "queries"), "--prompt-name", "query", "--no-progress"]) == 0
    yield {"base": base, "common": common, "texts": dict(zip(table.column("id").to_pylist(), table.column("question").to_pylist(), strict=True))}  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_documents_get_the_document_prompt_and_prompt_name_overrides_it(
    runs: dict[str, Any], prompted_artifact: Path
) -> None:
    base, texts = runs["base"], runs["texts"]
    ids = sorted(texts)
    batch = [texts[i] for i in ids]
    enc = Encoder.load(prompted_artifact, threads=1)
    docs, queries = read_vectors(base / "docs"), read_vectors(base / "queries")
    assert sorted(docs) == sorted(queries) == ids
    got_docs = np.stack([docs[i] for i in ids])
    got_queries = np.stack([queries[i] for i in ids])
    assert np.abs(got_docs - enc.encode_document(batch)).max() < 1e-5
    assert np.abs(got_queries - enc.encode(batch, prompt_name="query")).max() < 1e-5
    # Both differ from the unprompted vectors and from each other: the prompt really reached the model.
    plain = enc.encode(batch)
    assert np.abs(got_docs - plain).max() > 1e-3 and np.abs(got_queries - got_docs).max() > 1e-3

    for out, name, text in ((base / "docs", "document", "passage: "), (base / "queries", "query", "query: ")):
        summary = json.loads((out / "_SUMMARY.json").read_text())
        assert (summary["prompt_name"], summary["prompt"]) == (name, text)
        for part in out.glob("part-*.parquet"):
            meta = pq.read_schema(part).metadata
            assert (meta[PROMPT_NAME_KEY], meta[PROMPT_KEY]) == (name.encode(), text.encode())
        assert inspect_embeddings(out).prompt == DocumentPrompt(name, text)
    # Prompt tokens are tokens the model saw (the prompt counts toward truncation too).
    tokens = enc.encode_detailed(batch, prompt_name="document").token_counts
    on_disk = json.loads((base / "docs" / "_SUMMARY.json").read_text())
    assert on_disk["tokens"] == int(np.minimum(tokens, enc.max_seq_length).sum())


@pytest.mark.ray
@pytest.mark.slow
def test_unknown_names_and_other_prompts_are_refused_before_any_work(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, common = runs["base"], runs["common"]
    capsys.readouterr()

    def refused(*extra: str) -> str:
        out = base / "never"
        code = main([*common, "--output", str(out), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert not out.exists()  # nothing written: not even the run state or a lease
        return err

    err = refused("--prompt-name", "passage")
    assert "--prompt-name 'passage'" in err and "its prompt names: document, query" in err
    monkeypatch.setenv("QM_JOB_PROMPT_NAME", "Query")
    assert "--prompt-name 'Query'" in refused()
    monkeypatch.delenv("QM_JOB_PROMPT_NAME")
    # An incremental run never reuses vectors made with another prompt.
    err = refused("--previous", str(base / "docs"), "--prompt-name", "query")
    assert "prompt 'document' ('passage: ')" in err and "prompt 'query' ('query: ')" in err
    assert "never reused" in err
    # Resuming an output with another prompt is refused like any other change of the run.
    code = main([*common, "--output", str(base / "docs"), "--prompt-name", "query", "--no-progress"])
    assert code == 2 and "different prompt" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_the_index_records_the_prompt_and_a_server_with_another_document_prompt_refuses_it(
    runs: dict[str, Any], prompted_artifact: Path
) -> None:
    base = runs["base"]
    for run_name, name, text in (("docs", "document", "passage: "), ("queries", "query", "query: ")):
        built = build(base / run_name, base / "indexes" / run_name, cfg=ANY_RECALL)
        assert built.manifest.prompt == DocumentPrompt(name, text)
        on_disk = index_store.verify_version(Path(built.path))
        assert (on_disk.document_prompt_name, on_disk.document_prompt) == (name, text)

    # The server's model gives documents "passage: ": the queries-prompted index is refused, by
    # the same check that refuses another model's index, and the reason names both prompts.
    good = InProcessBackend(str(prompted_artifact), index_root=str(base / "indexes" / "docs"))
    bad = InProcessBackend(str(prompted_artifact), index_root=str(base / "indexes" / "queries"))
    try:
        assert good.collections.default_status()["version"] is not None  # type: ignore[index]
        status = bad.collections.default_status()
        assert status is not None and status["version"] is None
        reason = status["refused"]["reason"]
        assert "prompt 'query' ('query: ')" in reason and "prompt 'document' ('passage: ')" in reason
    finally:
        good.collections.close()
        bad.collections.close()
    expected = DocumentPrompt.chosen(Encoder.load(prompted_artifact).prompts)
    with pytest.raises(ModelMismatch, match="another prompt"):
        IndexSearcher.open(base / "indexes" / "queries", expected_prompt=expected)

    # --update onto a version of another prompt rebuilds instead of mixing the two.
    updated = update(base / "queries", base / "indexes" / "docs", cfg=ANY_RECALL)
    assert updated.mode == "rebuild" and "prompt 'query'" in updated.reason
    assert updated.built.manifest.prompt == DocumentPrompt("query", "query: ")
