"""Filter columns in an index version, the filter language, and filtered search that fills top_k."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from embedder.errors import InvalidInput
from index.filter_columns import FILTERS_FILE
from index.filtered_search import FilterSearchConfig
from index.filters import evaluate, parse_filter
from index.searcher import IndexSearcher
from jobs.build_index import cli as build_index
from jobs.common.embeddings_io import write_embeddings_parquet
from testkit.vectors import clustered_vectors

FP = "sha256:ffffffffffffffff"
N = 6_000
CATEGORIES = ["billing", "shipping", "account", "returns", "rare"]
LANGS = ["de", "en", "fr"]


def _columns(n: int) -> dict[str, list]:
    rng = np.random.default_rng(3)
    # "rare" marks 12 rows: a filter far narrower than any IVF list.
    cat = rng.choice(CATEGORIES[:-1], size=n).astype(object)
    cat[rng.choice(n, 12, replace=False)] = "rare"
    start = dt.datetime(2024, 1, 1)
    return {
        "question": [f"question {i}" for i in range(n)],
        "category": list(cat),
        "language": [LANGS[i % 3] if i % 50 else None for i in range(n)],
        "updated": [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)],
        "views": [int(v) for v in rng.integers(0, 1000, n)],
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexSearcher, np.ndarray, dict[str, list]]:
    tmp = tmp_path_factory.mktemp("filters")
    vectors = clustered_vectors(N, 32, seed=11)
    cols = _columns(N)
    emb = tmp / "emb"
    write_embeddings_parquet(emb / "part-00000.parquet", list(range(N)), vectors, cols, fingerprint=FP)
    out = tmp / "indexes" / "faq"
    code = build_index.main(
        ["--embeddings", str(emb), "--out", str(out), "--factory", "IVF64,Flat",
         "--filter-columns", "category,language,updated,views"]
    )  # fmt: skip
    assert code == 0
    return IndexSearcher.open(out, expected_fingerprint=FP), vectors, cols


def test_filter_columns_are_compact_and_described_in_the_manifest(built) -> None:
    searcher, _, _ = built
    m = searcher.manifest
    assert {n: d["type"] for n, d in m.filters.items()} == {
        "category": "string", "language": "string", "updated": "timestamp", "views": "int",
    }  # fmt: skip
    assert m.filters["category"]["values"] == len(CATEGORIES) and FILTERS_FILE in m.files
    for col in searcher.loaded.filters.columns.values():
        assert col.values.nbytes / N <= 8
    assert searcher.loaded.filters.columns["category"].values.dtype == np.uint16
    assert searcher.filter_schema["updated"] == "timestamp"


def test_build_refuses_a_filter_column_the_embeddings_lack(tmp_path: Path, capsys) -> None:
    emb = tmp_path / "emb"
    write_embeddings_parquet(
        emb / "part-00000.parquet", [1, 2], np.eye(2, 4, dtype=np.float32), {"q": ["a", "b"]}
    )
    code = build_index.main(
        ["--embeddings", str(emb), "--out", str(tmp_path / "i"), "--filter-columns", "category"]
    )
    assert code == 2 and "'category' is not a passthrough column" in capsys.readouterr().err


def test_masks_equal_a_plain_python_evaluation(built) -> None:
    searcher, _, cols = built
    schema = searcher.filter_schema
    table = searcher.loaded.filters
    cases = {
        '{"category": "billing"}': lambda i: cols["category"][i] == "billing",
        '{"language": {"in": ["de", "fr"]}}': lambda i: cols["language"][i] in ("de", "fr"),
        '{"updated": {"gte": "2024-03-01", "lt": "2024-04-01T00:00:00"}}': lambda i: (
            dt.datetime(2024, 3, 1) <= cols["updated"][i] < dt.datetime(2024, 4, 1)
        ),
        '{"views": {"gt": 990}, "category": {"in": ["rare", "account"]}}': lambda i: (
            cols["views"][i] > 990 and cols["category"][i] in ("rare", "account")
        ),
        '{"category": "no such value"}': lambda i: False,
    }
    import json

    for text, expect in cases.items():
        mask = evaluate(parse_filter(json.loads(text), schema), table)
        assert mask.tolist() == [bool(expect(i)) for i in range(N)], text


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"colour": "red"}, "filter.colour", "not a filter column"),
        ({"category": 3}, "filter.category", "expected a string"),
        ({"views": "many"}, "filter.views", "expected an integer"),
        ({"views": True}, "filter.views", "expected an integer"),
        ({"views": {"between": [1, 2]}}, "filter.views", "unknown operator 'between'"),
        ({"category": {"gte": "a"}}, "filter.category", "holds strings"),
        ({"language": {"in": []}}, "filter.language.in", "non-empty list"),
        ({"language": {"in": ["de", 7]}}, "filter.language.in[1]", "expected a string"),
        ({"updated": {"lt": "yesterday"}}, "filter.updated.lt", "not an ISO 8601"),
        ({"category": {"eq": "a", "in": ["b"]}}, "filter.category", "cannot be combined"),
        ([], "filter", "must be an object"),
        ({}, "filter", "empty"),
    ],
)
def test_bad_filters_name_the_field(built, spec, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_filter(spec, built[0].filter_schema)
    assert err.value.field == field and says in str(err.value)


def _exact(vectors: np.ndarray, q: np.ndarray, mask: np.ndarray, k: int) -> list[list[int]]:
    s = q @ vectors.T
    s[:, ~mask] = -np.inf
    order = np.argsort(-s, axis=1)[:, :k]
    return [[int(j) for j in row if mask[j]] for row in order]


@pytest.mark.parametrize("plan", ["exact", "ann"])
@pytest.mark.parametrize("spec", [{"category": "rare"}, {"category": "billing"}, {"views": {"lt": 600}}])
def test_filtered_search_fills_top_k_with_exact_scores(built, spec, plan: str, monkeypatch) -> None:
    searcher, vectors, _ = built
    if plan == "ann":  # force the selector plan for every selection wider than the top_k
        monkeypatch.setattr(
            searcher, "filter_config", FilterSearchConfig(exact_min_rows=20, exact_max_rows=20)
        )
    flt = parse_filter(spec, searcher.filter_schema)
    mask = evaluate(flt, searcher.loaded.filters)
    q = vectors[[5, 77, 4001]] + 0.05
    k = 20
    got, selected = searcher.search_within(q, k, flt)
    assert selected == int(mask.sum())
    truth = _exact(vectors, q.astype(np.float32), mask, k)
    for row, want, qv in zip(got, truth, q, strict=True):
        assert len(row) == min(k, selected)
        assert all(mask[m["id"]] for m in row)
        # ids are the corpus' int ids = row positions here; every score is the exact inner product
        np.testing.assert_allclose([m["score"] for m in row], vectors[[m["id"] for m in row]] @ qv, atol=1e-5)
        assert len(set(m["id"] for m in row) & set(want)) >= 0.95 * len(want)


def test_post_filtering_an_ann_search_comes_up_short_where_the_filter_fills(built) -> None:
    searcher, vectors, _ = built
    flt = parse_filter({"category": "rare"}, searcher.filter_schema)
    q = vectors[[5]]
    unfiltered = searcher.search(q, top_k=10)[0]
    post = [m for m in unfiltered if m["category"] == "rare"]
    within, selected = searcher.search_within(q, 10, flt)
    assert selected == 12 and len(post) < 10 and len(within[0]) == 10
