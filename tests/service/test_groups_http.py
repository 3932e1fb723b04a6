"""Grouped /match over real HTTP: the sample corpus (data/sample_qa.parquet, 3,000 questions, 320
answers) embedded with all-MiniLM-L6-v2 into a Flat and an IVF index, served in process.

The goal of issue 27 is a test here: for rephrased questions (new draws from the corpus's own
paraphrase templates, labelled with their answer) the grouped top-5 holds 5 distinct answers
whenever the searched rows hold 5, where the plain top-5 repeats answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from embedder.encoder import Encoder
from engine.inprocess import InProcessBackend
from index.collections import collections_config
from index.prompt import DocumentPrompt
from service.config import ServingConfig
from service.core import EmbedService
from service.http import create_app
from testkit.faq_corpus import generate
from testkit.serve_index import publish_table

pytestmark = pytest.mark.slow  # embeds 3,000 questions with MiniLM

REPO = Path(__file__).resolve().parents[2]
ASKED = 60  # rephrased questions per check


@pytest.fixture(scope="module")
def setup(shipped_minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    corpus = pq.read_table(REPO / "data" / "sample_qa.parquet")
    encoder = Encoder.load(shipped_minilm)
    prompt = DocumentPrompt.chosen(encoder.prompts)
    vectors = encoder.encode(corpus.column("question").to_pylist(), prompt_name=prompt.name)
    base = tmp_path_factory.mktemp("groups")
    roots = {}
    for name, factory in (("flat", "Flat"), ("ivf", "IVF32,Flat")):
        roots[name] = base / name
        roots[name].mkdir()
        publish_table(
            roots[name],
            vectors,
            corpus,
            encoder.fingerprint,
            prompt,
            factory,
            filter_columns=("category", "group"),
        )
    config = {
        "default": str(roots["flat"]),
        "ivf": str(roots["ivf"]),
        "faq": {"index": str(roots["flat"]), "group_by": "answer"},  # grouped unless a request says otherwise
    }
    backend = InProcessBackend(str(shipped_minilm), collections=collections_config({"collections": config}))
    rephrased = generate(ASKED, seed=2027)  # the corpus's templates, new prefixes / suffixes / draws
    yield {
        "client": TestClient(create_app(EmbedService(backend, ServingConfig()))),
        "backend": backend,
        "corpus": corpus,
        "questions": rephrased.column("question").to_pylist(),
    }
    backend.collections.close()


def match(setup: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = setup["client"].post("/match", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def distinct_answers(corpus: pa.Table, mask: np.ndarray | None = None) -> Counter[str]:
    """Rows per answer among the stored rows (within a mask), counted from the parquet itself."""
    answers = corpus.column("answer").to_pylist()
    return Counter(a for i, a in enumerate(answers) if mask is None or mask[i])


@pytest.mark.parametrize("collection", ["default", "ivf"])
def test_grouped_top5_has_5_distinct_answers_whenever_the_corpus_has_them(
    setup: dict[str, Any], collection: str
) -> None:
    corpus, questions = setup["corpus"], setup["questions"]
    want = min(5, len(distinct_answers(corpus)))  # 320 answers stored: always 5
    got = match(setup, questions=questions, top_k=5, group_by="answer", collection=collection)
    plain = match(setup, questions=questions, top_k=5, collection=collection)
    for grouped, ungrouped in zip(got["results"], plain["results"], strict=True):
        answers = [m["answer"] for m in grouped["matches"]]
        assert len(set(answers)) == len(answers) == want, answers
        assert [m["group_value"] for m in grouped["matches"]] == answers
        assert grouped["grouping"] == {
            **grouped["grouping"],
            "by": "answer",
            "groups": want,
            "stopped": "filled",
        }
        # The best group's question is the plain search's best question, with the same exact score
        # (the corpus stores 139 texts twice: a tie may be broken by the other row of the same text).
        best, plain_best = grouped["matches"][0], ungrouped["matches"][0]
        assert (best["question"], best["answer"]) == (plain_best["question"], plain_best["answer"])
        assert best["score"] == pytest.approx(plain_best["score"], abs=1e-6)
        assert "grouping" not in ungrouped and "group_value" not in ungrouped["matches"][0]
    # What grouping is for: without it the top-5 repeats an answer for (nearly) every question.
    repeats = sum(len({m["answer"] for m in r["matches"]}) < 5 for r in plain["results"])
    assert repeats >= 0.8 * len(questions), repeats


def test_a_filter_with_fewer_groups_than_asked_returns_them_all_exhausted(setup: dict[str, Any]) -> None:
    corpus = setup["corpus"]
    labels = np.asarray(corpus.column("group").to_numpy())
    chosen = [int(g) for g in np.unique(labels)[:3]]
    in_filter = np.isin(labels, chosen)
    rows_per_answer = distinct_answers(corpus, in_filter)  # brute force over the stored rows
    for collection in ("default", "ivf"):
        got = match(
            setup,
            question=setup["questions"][0],
            top_k=5,
            group_by="answer",
            collection=collection,
            filter={"group": {"in": chosen}},
        )
        assert got["filter_selected"] == int(in_filter.sum())
        assert got["grouping"]["groups"] == len(rows_per_answer) == 3
        assert got["grouping"]["stopped"] == "exhausted" and got["grouping"]["candidates"] == in_filter.sum()
        # Every selected row was examined, so group_hits is each answer's number of rows in the filter.
        assert {m["answer"]: m["group_hits"] for m in got["matches"]} == dict(rows_per_answer)


def test_group_size_returns_each_groups_best_questions_together(setup: dict[str, Any]) -> None:
    question = setup["questions"][1]
    got = match(setup, question=question, top_k=4, group_by="answer", group_size=3)
    # Reference: the exact ungrouped ranking of the same Flat index, deep enough to hold them.
    ranked = match(setup, question=question, top_k=100)["matches"]
    runs: list[list[dict[str, Any]]] = []
    for m in got["matches"]:
        if runs and runs[-1][0]["answer"] == m["answer"]:
            runs[-1].append(m)
        else:
            runs.append([m])
    assert len(runs) == 4 and len({r[0]["answer"] for r in runs}) == 4  # a group's questions are together
    for run in runs:
        best = [m["question"] for m in ranked if m["answer"] == run[0]["answer"]][:3]
        assert [m["question"] for m in run] == best  # by text: a stored text twice may tie either way
        assert all(m["group_hits"] >= len(run) for m in run)
    assert got["grouping"]["group_size"] == 3


def test_min_score_bounds_every_returned_question(setup: dict[str, Any]) -> None:
    question = setup["questions"][2]
    top = match(setup, question=question, top_k=1)["matches"][0]["score"]
    floor = top - 0.15
    got = match(setup, question=question, top_k=50, group_by="answer", min_score=floor)
    assert got["matches"] and all(m["score"] >= floor for m in got["matches"])
    assert got["grouping"]["stopped"] == "exhausted" and got["grouping"]["groups"] < 50


def test_a_collections_default_group_by_and_the_ways_to_override_it(setup: dict[str, Any]) -> None:
    question = setup["questions"][3]
    default = match(setup, question=question, top_k=5, collection="faq")
    assert default["grouping"]["by"] == "answer" and len({m["answer"] for m in default["matches"]}) == 5
    ungrouped = match(setup, question=question, top_k=5, collection="faq", group_by=None)
    plain = match(setup, question=question, top_k=5)  # the same index, never grouped
    assert "grouping" not in ungrouped and [m["id"] for m in ungrouped["matches"]] == [
        m["id"] for m in plain["matches"]
    ]
    by_category = match(setup, question=question, top_k=3, collection="faq", group_by="category")
    categories = [m["category"] for m in by_category["matches"]]
    assert by_category["grouping"]["by"] == "category" and len(set(categories)) == 3
    sized = match(setup, question=question, top_k=2, collection="faq", group_size=2)  # size for the default
    shown = setup["client"].get("/info").json()["collections"]["collections"]
    assert shown["faq"]["group_by"] == "answer" and shown["default"]["group_by"] is None
    listed = {c["name"]: c for c in setup["client"].get("/v1/collections").json()["data"]}
    assert listed["faq"]["group_by"] == "answer" and listed["default"]["group_by"] is None
    assert sized["grouping"] == {**sized["grouping"], "by": "answer", "group_size": 2}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"group_by": "nope"},
            "group_by",
            "'nope' is not a column of this collection (columns: id, question",
        ),
        ({"group_by": "nope", "collection": "ivf"}, "group_by", "'nope' is not a column"),
        ({"group_by": "answer", "group_size": 11}, "group_size", "between 1 and 10"),
        ({"group_by": "answer", "group_size": 0}, "group_size", "between 1 and 10"),
        ({"group_size": 2}, "group_size", "group_size needs group_by"),
        ({"group_by": ""}, "group_by", "must name a column"),
    ],
)
def test_bad_grouping_is_a_422_naming_the_field_before_any_model_work(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], param: str, says: str
) -> None:
    async def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the model ran for a request that was going to be refused")

    monkeypatch.setattr(setup["backend"], "encode", never)
    r = setup["client"].post("/match", json={"question": "where is my parcel?", **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param and says in r.json()["error"]["message"]
