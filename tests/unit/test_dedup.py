"""Duplicate detection core (jobs/find_duplicates: exact, near, groups, dedup) on hand-made vectors: known pairs and groups, exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embedder.errors import InvalidInput
from jobs.find_duplicates import dedup, exact, groups, near


def unit(*rows: list[float]) -> np.ndarray:
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def at_angle(cos: float) -> list[float]:
    """A 2-d unit vector at cosine `cos` from (1, 0)."""
    return [cos, float(np.sqrt(1 - cos * cos))]


# Five questions, ids 10..50. 10/20 are the same question up to case and punctuation; 30/40 are
# near duplicates by vector (cosine 0.95); 50 is alone.
IDS = [10, 20, 30, 40, 50]
TEXTS = [
    "How do I reset my password?",
    "how do i  RESET my password",
    "Track my order",
    "Where is my parcel",
    "Hi",
]
VECTORS = np.array(
    [[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0.95, float(np.sqrt(1 - 0.95**2))], [0, 0, 0, 1]],
    dtype=np.float32,
)


def run(
    ids: list, vectors: np.ndarray, texts: list | None, threshold: float = 0.9, k: int = 3
) -> dedup.Dedup:
    sorted_ids, v, t = groups.sort_by_id(pa.array(ids), vectors.copy(), texts)
    keys = exact.hash_questions(t) if t is not None else None
    return dedup.dedup_rows(sorted_ids, v, keys, threshold, k)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "how do i reset my password"),
        ("  HOW   do I\treset my password?!  ", "how do i reset my password"),
        ("Ｒｅｓｅｔ　password？", "reset password"),  # full-width letters, ideographic space and ?
        ("Straße…", "strasse"),  # casefold ß -> ss; NFKC … -> ..., then stripped
        ("ﬁle it.", "file it"),  # ligature
        ("Wie geht's?", "wie geht's"),
    ],
)
def test_normalisation_folds_case_width_whitespace_and_trailing_punctuation(a: str, b: str) -> None:
    assert exact.normalize_question(a) == b
    assert exact.question_key(a) == exact.question_key(b)


def test_normalisation_keeps_what_changes_the_meaning() -> None:
    assert exact.normalize_question("¿Dónde está?") == "¿dónde está"  # leading punctuation stays
    assert exact.question_key("reset password") != exact.question_key("reset passwords")
    assert exact.question_key("what is f(x)") != exact.question_key("what is f(x")  # ')' is not Po
    assert exact.question_key("?!...") is None  # nothing left: takes no part
    keys, valid = exact.hash_questions(["a?", None, "  ", "A"])
    assert valid.tolist() == [True, False, False, True] and keys[0] == keys[3]


def test_known_pairs_and_groups() -> None:
    out = run(IDS, VECTORS, TEXTS)
    pairs = out.pairs.to_pylist()
    assert [(p["id_a"], p["id_b"], p["kind"]) for p in pairs] == [(10, 20, "exact"), (30, 40, "near")]
    assert pairs[0]["score"] == pytest.approx(0.6, abs=1e-6)  # exact pairs carry their cosine too
    assert pairs[1]["score"] == pytest.approx(0.95, abs=1e-6)
    groups = out.groups.to_pylist()
    assert [(g["member_ids"], g["representative"], g["size"]) for g in groups] == [
        ([10, 20], 10, 2),
        ([30, 40], 30, 2),
    ]
    assert out.stats["exact_pairs"] == 1 and out.stats["near_pairs"] == 1 and out.stats["groups"] == 2


def test_a_pair_found_by_both_stages_is_listed_once_as_exact() -> None:
    vectors = VECTORS.copy()
    vectors[1] = vectors[0]  # 10 and 20 now also have cosine 1.0
    out = run(IDS, vectors, TEXTS)
    assert [(p["id_a"], p["id_b"], p["kind"]) for p in out.pairs.to_pylist()] == [
        (10, 20, "exact"),
        (30, 40, "near"),
    ]
    assert out.stats["near_pairs_found"] == 2  # the search found 10-20 too


def test_threshold_boundary_is_inclusive() -> None:
    vectors = unit([1, 0], at_angle(0.9), [0, 1])
    ids = [1, 2, 3]
    cos = float(vectors[0] @ vectors[1])
    assert len(run(ids, vectors, None, threshold=cos).pairs) == 1  # exactly at the threshold: a pair
    assert len(run(ids, vectors, None, threshold=0.9).pairs) == 1
    assert len(run(ids, vectors, None, threshold=0.901).pairs) == 0  # just above it: none
    same = unit([1, 0], [1, 0])
    assert len(run([1, 2], same, None, threshold=1.0).pairs) == 1  # identical vectors at 1.0 (float32)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.01, float("nan")])
def test_threshold_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(InvalidInput, match=r"\(0, 1\]"):
        run(IDS, VECTORS, None, threshold=bad)


def test_outputs_are_identical_across_runs_and_input_orders() -> None:
    rng = np.random.default_rng(3)
    centres = unit(*rng.standard_normal((30, 16)).tolist())
    label = rng.integers(0, 30, 300)
    vectors = centres[label] + 0.05 * rng.standard_normal((300, 16)).astype(np.float32)
    vectors = groups.unit_rows(vectors.astype(np.float32))
    ids = [f"q{i:04d}" for i in rng.permutation(300)]
    texts = [f"question {x}" for x in label]
    first, second = run(ids, vectors, texts, k=20), run(ids, vectors, texts, k=20)
    perm = rng.permutation(300)
    shuffled = run([ids[i] for i in perm], vectors[perm], [texts[i] for i in perm], k=20)
    assert first.groups.num_rows > 5
    for other in (second, shuffled):
        assert other.pairs.equals(first.pairs)
        assert other.groups.equals(first.groups)
    # Every group is one topic here (noise is small), and its id names exactly its members.
    for g in first.groups.to_pylist():
        topics = {label[ids.index(m)] for m in g["member_ids"]}
        assert len(topics) == 1
        assert g["group_id"] == groups.group_id(sorted(g["member_ids"]))
        assert g["representative"] == min(g["member_ids"])


def naive_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_union_find_matches_a_plain_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    m = int(rng.integers(0, 2 * n))
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    labels = groups.connected_components(n, a, b)
    expected = naive_components(n, list(zip(a.tolist(), b.tolist(), strict=True)))
    # Same partition, and each label is the component's smallest row.
    assert labels.tolist() == [min(i for i in range(n) if expected[i] == expected[x]) for x in range(n)]


def test_union_find_on_long_chains_in_any_order() -> None:
    n = 2000
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    a, b = perm[:-1], perm[1:]  # one path through every row, visited in random order
    assert (groups.connected_components(n, a, b) == 0).all()
    evens = np.arange(0, n - 2, 2)
    labels = groups.connected_components(n, evens[::-1], evens[::-1] + 2)  # two chains, reversed
    assert (labels[0::2] == 0).all() and (labels[1::2] == np.arange(1, n, 2)).all()


def test_huge_exact_group_is_listed_as_a_star_but_grouped_whole() -> None:
    n = exact.MAX_EXACT_CLIQUE + 6
    keys, valid = exact.hash_questions(["Hi!"] * n + ["bye", "Bye."])
    got = exact.exact_pairs(keys, valid)
    pairs = set(zip(got.a.tolist(), got.b.tolist(), strict=True))
    assert pairs == {(0, j) for j in range(1, n)} | {(n, n + 1)}
    assert got.groups == 2 and got.starred == 1
    labels = groups.connected_components(n + 2, got.a, got.b)
    assert (labels[:n] == 0).all() and labels[n + 1] == n


def test_k_caps_pairs_per_question_and_is_reported() -> None:
    vectors = unit(*([[1.0, 0.0]] * 8))  # eight identical questions
    out = run(list(range(8)), vectors, None, threshold=0.99, k=3)
    assert out.stats["rows_saturated"] == 8  # each had k neighbours, all above the threshold
    assert out.groups.to_pylist()[0]["size"] == 8  # the group is still whole


def test_agreement_with_exact_search_counts_missed_pairs() -> None:
    vectors = unit([1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0.99, 0.14], [0, 0, 1])
    found = near.local_search(vectors, k=4, threshold=0.9)
    full = near.check_agreement(vectors, found, 0.9, sample=5)
    assert (full.true_pairs, full.found_pairs, full.recall, full.precision) == (4, 4, 1.0, 1.0)
    dropped = near.NearPairs(found.a[:1], found.b[:1], found.score[:1])
    half = near.check_agreement(vectors, dropped, 0.9, sample=5)
    assert half.recall == 0.5 and half.precision == 1.0


def test_repeated_or_null_ids_are_refused() -> None:
    with pytest.raises(InvalidInput, match="repeated id"):
        groups.sort_by_id(pa.array([1, 2, 2]), np.zeros((3, 2), np.float32))
    with pytest.raises(InvalidInput, match="null id"):
        groups.sort_by_id(pa.array(["a", None]), np.zeros((2, 2), np.float32))


def test_group_by_marks_pairs_within_one_value_and_counts_those_across() -> None:
    # 10/20 (exact) share an answer; 30/40 (near) were stored with different answers: a conflict.
    answers = pa.array(["reset", "reset", "tracking", "shipping", None])
    sorted_ids, v, t = groups.sort_by_id(pa.array(IDS), VECTORS.copy(), TEXTS)
    keys = exact.hash_questions(t)
    got = dedup.dedup_rows(sorted_ids, v, keys, 0.9, 3, group_values=answers)
    rows = {(r["id_a"], r["id_b"]): r["same_group"] for r in got.pairs.to_pylist()}
    want = {(a, b): answers[IDS.index(a)].as_py() == answers[IDS.index(b)].as_py() for a, b in rows}
    assert rows == want == {(10, 20): True, (30, 40): False}
    assert got.stats["pairs_same_group"] == 1 and got.stats["pairs_across_groups"] == 1
    plain = dedup.dedup_rows(sorted_ids, v, keys, 0.9, 3)
    assert "same_group" not in plain.pairs.column_names and "pairs_across_groups" not in plain.stats
