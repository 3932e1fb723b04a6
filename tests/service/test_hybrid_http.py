"""Hybrid /match over real HTTP with all-MiniLM-L6-v2 on the two shipped labelled sets (issue 27).

The goals as tests: alpha fitted by `jobs.fit_hybrid` on one draw of labelled queries, stored in
the version's hybrid.json and then used by /match, scores at least dense on a held-out draw of
every set, and above it on the rare-token set (queries that hinge on an error code, SKU or
version number), with the threshold fitted beside alpha applied as hybrid /match's default
min_score. Also: the evaluation command, mode / collection 422s, lexical mode's BM25.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from embedder.encoder import Encoder
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from index.prompt import DocumentPrompt
from jobs.evaluate import cli as evaluate_cli
from jobs.fit_hybrid import cli as fit_cli
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.labelled_sets import rare_token_corpus, rare_token_queries, rephrased_queries
from testkit.serve_index import publish_table
from testkit.waiting import wait_until

pytestmark = pytest.mark.slow  # embeds 3,240 questions with MiniLM

REPO = Path(__file__).resolve().parents[2]
ASKED = 120


@pytest.fixture(scope="module")
def setup(shipped_minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    encoder = Encoder.load(shipped_minilm)
    prompt = DocumentPrompt.chosen(encoder.prompts)
    base = tmp_path_factory.mktemp("hybrid")
    sets = {
        "rare": (rare_token_corpus(), rare_token_queries),
        "sample": (pq.read_table(REPO / "data" / "sample_qa.parquet"), rephrased_queries),
    }
    roots, labels = {}, {}
    for name, (corpus, draw) in sets.items():
        roots[name] = base / name
        roots[name].mkdir()
        vectors = encoder.encode_document(corpus.column("question").to_pylist())
        publish_table(roots[name], vectors, corpus, encoder.fingerprint, prompt)
        for split, seed in (("fit", 1), ("held", 2)):
            labels[name, split] = base / f"{name}-{split}.parquet"
            pq.write_table(draw(ASKED, seed), labels[name, split])
    roots["old"] = base / "old"
    roots["old"].mkdir()
    small = rare_token_corpus().slice(0, 20)
    publish_table(
        roots["old"],
        encoder.encode_document(small.column("question").to_pylist()),
        small,
        encoder.fingerprint,
        prompt,
        lexical_column=None,  # a version built before lexical indexes (or --no-lexical)
    )
    config = {"collections": {k: str(v) for k, v in roots.items()}, "poll_seconds": 0.1}
    backend = InProcessBackend(str(shipped_minilm), collections=collections_config(config))
    yield {
        "client": TestClient(create_app(EmbedService(backend, ServingConfig()))),
        "roots": roots,
        "labels": labels,
        "artifact": str(shipped_minilm),
        "backend": backend,
    }
    backend.collections.close()


def post(setup: dict[str, Any], status: int = 200, **body: Any) -> dict[str, Any]:
    r = setup["client"].post("/match", json=body)
    assert r.status_code == status, r.text
    return dict(r.json())


def mrr_over_http(setup: dict[str, Any], name: str, mode: str) -> float:
    """MRR@10 of /match itself on the held-out labels, computed here from the answers returned."""
    table = pq.read_table(setup["labels"][name, "held"])
    # Ranking quality, as jobs.evaluate measures it: no stored threshold cutting the list.
    asked = table.column("query").to_pylist()
    got = post(setup, questions=asked, top_k=10, collection=name, mode=mode, min_score=-10.0)
    total = 0.0
    for result, answer in zip(got["results"], table.column("answer").to_pylist(), strict=True):
        ranks = [i for i, m in enumerate(result["matches"]) if m["answer"] == answer]
        total += 1.0 / (ranks[0] + 1) if ranks else 0.0
    return total / len(table)


def test_fitted_hybrid_is_stored_used_by_match_and_beats_dense_on_rare_tokens(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("rare", "sample"):
        root = setup["roots"][name]
        code = fit_cli.main(
            [
                "--index",
                str(root),
                "--artifact",
                setup["artifact"],
                "--labels",
                str(setup["labels"][name, "fit"]),
            ]
        )
        assert code == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        version = (root / "CURRENT").read_text().strip()
        stored = json.loads((root / version / "hybrid.json").read_text())
        assert 0.0 <= stored["alpha"] <= 1.0 and f"hybrid@{stored['alpha']:g}" in out
        wait_until(
            lambda n=name, a=stored["alpha"]: post(setup, question="x", collection=n)["alpha"] == a,
            10,
            f"{name}: the fitted alpha served",
        )
        answer = post(setup, question="E-1042 on my router", collection=name)  # no mode: the fitted default
        assert answer["mode"] == "hybrid" and answer["alpha"] == stored["alpha"]
        dense, hybrid = mrr_over_http(setup, name, "dense"), mrr_over_http(setup, name, "hybrid")
        assert hybrid >= dense, (name, hybrid, dense)
        if name == "rare":
            assert stored["alpha"] < 1.0 and hybrid > dense, (hybrid, dense)
        # The threshold fitted with alpha is hybrid /match's default min_score.
        threshold = stored["min_score"]
        assert threshold is not None and stored["threshold"]["precision"] >= 0.95
        assert "min_score" in out and f"{threshold:.4f}" in out
        held = pq.read_table(setup["labels"][name, "held"]).column("query").to_pylist()
        ask = {"questions": held, "top_k": 10, "collection": name, "mode": "hybrid"}
        default = [m["score"] for r in post(setup, **ask)["results"] for m in r["matches"]]
        everything = [
            m["score"] for r in post(setup, **ask, min_score=-10.0)["results"] for m in r["matches"]
        ]
        assert default and min(default) >= threshold
        assert len(default) == sum(s >= threshold for s in everything) < len(everything)


def test_lexical_mode_ranks_the_named_code_first(setup: dict[str, Any]) -> None:
    got = post(setup, question="what is E-1021 about", collection="rare", mode="lexical", top_k=3)
    assert got["mode"] == "lexical" and got["alpha"] is None
    assert "E-1021" in got["matches"][0]["question"]
    assert got["matches"][0]["score"] > got["matches"][-1]["score"] > 0  # raw BM25


def test_bad_mode_and_a_collection_without_lexical_index_are_422(setup: dict[str, Any]) -> None:
    bad = post(setup, 422, question="x", collection="rare", mode="sparse")
    assert "mode" in json.dumps(bad)
    old = post(setup, 422, question="x", collection="old", mode="hybrid")
    assert "'old'" in json.dumps(old) and "lexical" in json.dumps(old)
    assert post(setup, question="x", collection="old", mode="dense")["mode"] == "dense"
    # The BM25 postings count in the collection's memory (what a memory budget admits by).
    live = setup["backend"].collections.followers["rare"].live
    status = setup["backend"].collections.followers["rare"].status()
    assert status["lexical"]["column"] == "question"
    assert status["memory_bytes"] >= live.lexical.nbytes + (live.loaded.path / "index.faiss").stat().st_size


def test_the_evaluation_command_reports_every_mode(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = pq.read_table(setup["labels"]["rare", "held"]).slice(0, 30).to_pylist()
    labels.write_text("\n".join(json.dumps(r) for r in rows))
    report = tmp_path / "report.json"
    args = ["--index", str(setup["roots"]["rare"]), "--artifact", setup["artifact"], "--labels", str(labels)]
    assert evaluate_cli.main([*args, "--alpha", "0.5", "--output", str(report)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rep = json.loads(report.read_text())
    assert set(rep["modes"]) == {"dense", "lexical", "hybrid"} and rep["alpha"] == 0.5
    assert [line.split()[0] for line in lines[-3:]] == ["dense", "lexical", "hybrid@0.5"]
    # Lexical top1 recomputed here from /match's own lexical answers.
    got = post(setup, questions=[r["query"] for r in rows], collection="rare", mode="lexical", top_k=1)
    top1 = sum(
        r["matches"][0]["answer"] == row["answer"] for r, row in zip(got["results"], rows, strict=True)
    )
    assert rep["modes"]["lexical"]["top1"] == pytest.approx(top1 / len(rows))
