"""Duplicate questions: exact pairs (same normalised text), near pairs (cosine >= threshold), groups.

Ray-free. `jobs/find_duplicates/run.py` reads the inputs through the storage layer and runs the near
search over query shards on Ray actors; everything else lives here and is tested on its own.

Rows are numbered in ascending id order (`sort_by_id`), so a pair of row positions (a < b) is
also the pair of ids (id_a < id_b), and every output is the same whatever order the input
files had.

Normalisation (`normalize_question`), version NORMALIZATION:
  1. Unicode NFKC (full-width forms, ligatures, compatibility characters fold to plain ones),
  2. casefold (then NFKC again, as casefolding can leave un-normalised text),
  3. every run of whitespace becomes one space; leading and trailing whitespace is removed,
  4. trailing characters of Unicode category Po ("other punctuation": . , ! ? ; : … ¿ 。 ？ ！ and
     straight quotes) and whitespace are removed, repeatedly.
Two questions are exact duplicates when their normalised texts are equal (compared by a 128-bit
BLAKE2b hash). A text that normalises to "" (only punctuation or whitespace) takes no part.

Near duplicates: a FAISS k-NN search (k + 1, the row itself is dropped) proposes candidates;
each candidate's cosine is then recomputed exactly from the two vectors, and the pair is kept
when it is >= threshold - SCORE_TOLERANCE (float32 rounding: a vector with itself can give
0.99999994). Scores in the output are these exact cosines, for both kinds.
"""

from __future__ import annotations

import hashlib
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.errors import InvalidInput
from index.faiss_index import IndexConfig, VectorIndex, build_index, sample_rows

NORMALIZATION = "nfkc-casefold-whitespace-trailing-po/1"
SCORE_TOLERANCE = 1e-6
# Exact groups up to this size list every pair (64 members: 2,016 pairs); a bigger group of
# identical questions lists each member once, paired with the group's smallest id (a star), so
# 10,000 copies of "hi" give 9,999 pairs, not 50 million. Its group in groups.parquet is complete.
MAX_EXACT_CLIQUE = 64
# Queries per FAISS call and per exact re-scoring step: (rows * (k+1) * dim) floats gathered at once.
SEARCH_CHUNK_ROWS = 1024


# ---- normalisation and exact duplicates -------------------------------------------------------


def normalize_question(text: str) -> str:
    """The normalised form two exact duplicates share (see the module docstring)."""
    t = unicodedata.normalize("NFKC", text)
    t = unicodedata.normalize("NFKC", t.casefold())
    t = " ".join(t.split())
    end = len(t)
    while end and (t[end - 1].isspace() or unicodedata.category(t[end - 1]) == "Po"):
        end -= 1
    return t[:end]


def question_key(text: str) -> bytes | None:
    """128-bit hash of the normalised text; None when nothing is left after normalisation."""
    norm = normalize_question(text)
    if not norm:
        return None
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def hash_questions(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Keys (n,) of dtype S16 and a mask of rows that have one (text present and not empty)."""
    keys = np.zeros(len(texts), dtype="S16")
    valid = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if isinstance(text, str):
            key = question_key(text)
            if key is not None:
                keys[i], valid[i] = key, True
    return keys, valid


@dataclass(frozen=True)
class ExactPairs:
    """Row pairs (a < b) whose normalised texts are equal."""

    a: np.ndarray
    b: np.ndarray
    groups: int  # sets of rows sharing a normalised text (2+ rows)
    starred: int  # of those, groups bigger than MAX_EXACT_CLIQUE (listed as a star)

    @classmethod
    def empty(cls) -> ExactPairs:
        """No pairs."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0)


def exact_pairs(keys: np.ndarray, valid: np.ndarray, max_clique: int = MAX_EXACT_CLIQUE) -> ExactPairs:
    """Every pair of rows with the same key (a star to the smallest row for very large sets)."""
    rows = np.flatnonzero(valid)
    order = np.argsort(keys[rows], kind="stable")
    rows, sk = rows[order], keys[rows][order]
    if len(rows) < 2:
        return ExactPairs.empty()
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    ends = np.r_[starts[1:], len(sk)]
    a_parts, b_parts, groups, starred = [], [], 0, 0
    for s, e in zip(starts[ends - starts >= 2].tolist(), ends[ends - starts >= 2].tolist(), strict=True):
        members = np.sort(rows[s:e])
        groups += 1
        if len(members) <= max_clique:
            i, j = np.triu_indices(len(members), k=1)
            a_parts.append(members[i])
            b_parts.append(members[j])
        else:
            starred += 1
            a_parts.append(np.full(len(members) - 1, members[0]))
            b_parts.append(members[1:])
    if not a_parts:
        return ExactPairs.empty()
    return ExactPairs(
        np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64), groups, starred
    )


# ---- near duplicates --------------------------------------------------------------------------


@dataclass(frozen=True)
class NearPairs:
    """Row pairs (a < b, unique) with exact cosine >= threshold, from one or more query shards."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray  # float32 exact cosine
    # Query rows whose k nearest other rows all reached the threshold: they may have more near
    # duplicates than k, which only a larger k would list (their groups are still joined).
    saturated: int = 0

    @classmethod
    def empty(cls) -> NearPairs:
        """No pairs."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0)

    @classmethod
    def concat(cls, parts: Sequence[NearPairs], n: int) -> NearPairs:
        """Several shards' pairs, each pair once (a pair is found from both of its ends)."""
        if not parts:
            return cls.empty()
        a = np.concatenate([p.a for p in parts])
        b = np.concatenate([p.b for p in parts])
        score = np.concatenate([p.score for p in parts])
        keep = unique_pair_positions(a, b, n)
        return cls(a[keep], b[keep], score[keep], sum(p.saturated for p in parts))


def unique_pair_positions(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first occurrence of each (a, b), in ascending (a, b) order."""
    _, first = np.unique(a.astype(np.int64) * n + b.astype(np.int64), return_index=True)
    return first


def pair_cosines(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Row-wise dot products vectors[a] . vectors[b] (cosine for unit vectors), float32."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", vectors[a[s : s + chunk]], vectors[b[s : s + chunk]])
    return out


def near_pairs(
    index: VectorIndex,
    vectors: np.ndarray,
    start: int,
    stop: int,
    k: int,
    threshold: float,
    index_rows: np.ndarray | None = None,
) -> NearPairs:
    """Near duplicates of query rows [start, stop) among all rows, via k-NN on `index`.

    `vectors` are all rows' unit vectors (row order); the index answers with its own row numbers,
    which `index_rows` maps to ours when the index was built elsewhere (None: the same numbering).
    """
    a_parts, b_parts, s_parts, saturated = [], [], [], 0
    cut = threshold - SCORE_TOLERANCE
    for lo in range(start, stop, SEARCH_CHUNK_ROWS):
        hi = min(stop, lo + SEARCH_CHUNK_ROWS)
        _, cand = index.search(vectors[lo:hi], k + 1)
        if index_rows is not None:
            cand = np.where(cand >= 0, index_rows[np.maximum(cand, 0)], -1)
        query = np.repeat(np.arange(lo, hi, dtype=np.int64), k + 1).reshape(hi - lo, k + 1)
        usable = (cand >= 0) & (cand != query)
        # Exact cosine for every candidate: approximate (IVF, PQ) scores never decide a pair.
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        scores[usable] = pair_cosines(vectors, query[usable], cand[usable])
        kept = usable & (scores >= cut)
        saturated += int((kept.sum(axis=1) >= k).sum())
        q, c = query[kept], cand[kept]
        a_parts.append(np.minimum(q, c))
        b_parts.append(np.maximum(q, c))
        s_parts.append(scores[kept])
    if not a_parts:
        return NearPairs.empty()
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    keep = unique_pair_positions(a, b, len(vectors))
    return NearPairs(a[keep], b[keep], s[keep], saturated)


def build_search_index(
    vectors: np.ndarray, factory: str = "auto", cfg: IndexConfig | None = None
) -> tuple[VectorIndex, float]:
    """An inner-product index over all rows (index.faiss_index's factory choice), tuned to recall@10."""
    cfg = cfg or IndexConfig()
    index, report = build_index(vectors, factory, "ip", cfg)
    return index, report.recall_at_10


# ---- pairs and groups -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """All pairs, each once, ascending (a, b): kind exact wins when both stages found a pair."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    exact: np.ndarray  # bool

    @property
    def exact_count(self) -> int:
        """Pairs of kind exact."""
        return int(self.exact.sum())

    @property
    def near_count(self) -> int:
        """Pairs of kind near."""
        return int(len(self.a) - self.exact.sum())


def merge_pairs(vectors: np.ndarray, exact: ExactPairs, near: NearPairs) -> Pairs:
    """One list: exact pairs (scored by their cosine) and near pairs not already exact."""
    n = len(vectors)
    a = np.concatenate([exact.a, near.a]).astype(np.int64)
    b = np.concatenate([exact.b, near.b]).astype(np.int64)
    score = np.concatenate([pair_cosines(vectors, exact.a, exact.b), near.score]).astype(np.float32)
    keep = unique_pair_positions(a, b, n)  # exact ones come first, so they win
    return Pairs(a[keep], b[keep], score[keep], keep < len(exact.a))


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over n rows and edges (a[i], b[i]): each row's label is the smallest row of its component.

    Vectorised hook-and-compress: every round hooks each root that has an edge to a smaller
    root onto the smallest such root (roots only ever point to smaller rows, so there are no
    cycles), then compresses every path by pointer jumping. Each round with an unsatisfied edge
    removes at least one root, so it terminates; duplicate graphs (small components) take a few.
    """
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            break
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def group_id(members: Sequence[Any]) -> str:
    """Deterministic id of a group: a hash of its sorted member ids (same members, same id)."""
    canon = "\x1f".join(f"{type(m).__name__}:{m}" for m in members)
    return "g-" + hashlib.blake2b(canon.encode("utf-8"), digest_size=8).hexdigest()


def groups_table(ids: pa.Array, labels: np.ndarray) -> pa.Table:
    """Groups (components of 2+ rows): group_id, member_ids (ascending), representative, size.

    The representative is the member with the smallest id (stable as a group grows from day to
    day unless a smaller id joins); rows are in ascending representative order.
    """
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)
    in_group = np.flatnonzero(sizes[labels] >= 2)
    order = in_group[np.argsort(labels[in_group], kind="stable")]  # by label, then by row (= id)
    reps = np.flatnonzero(sizes >= 2)  # a label is its component's smallest row
    counts = sizes[reps]
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    members = ids.take(pa.array(order, pa.int64()))
    member_lists = members.to_pylist()
    group_ids = [group_id(member_lists[offsets[i] : offsets[i + 1]]) for i in range(len(reps))]
    return pa.table(
        {
            "group_id": pa.array(group_ids, pa.string()),
            "member_ids": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), members),
            "representative": ids.take(pa.array(reps, pa.int64())),
            "size": pa.array(counts, pa.int64()),
        }
    )


def pairs_table(ids: pa.Array, pairs: Pairs) -> pa.Table:
    """pairs.parquet: id_a < id_b, score (cosine), kind (exact | near)."""
    kinds = np.where(pairs.exact, "exact", "near")
    return pa.table(
        {
            "id_a": ids.take(pa.array(pairs.a, pa.int64())),
            "id_b": ids.take(pa.array(pairs.b, pa.int64())),
            "score": pa.array(pairs.score, pa.float32()),
            "kind": pa.array(kinds.tolist(), pa.string()),
        }
    )


# ---- row order --------------------------------------------------------------------------------


def id_order(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Positions that sort ids ascending; InvalidInput when an id is null or repeated."""
    if ids.null_count:
        raise InvalidInput(f"{ids.null_count} null id(s) in the embeddings", field="id")
    order = pc.sort_indices(ids).to_numpy()
    ranked = ids.take(pa.array(order))
    if len(ranked) > 1:
        same = pc.equal(ranked.slice(1), ranked.slice(0, len(ranked) - 1))
        repeats = pc.sum(same).as_py() or 0
        if repeats:
            first = ranked.filter(pa.concat_arrays([pa.array([False]), _flat(same)]))[0].as_py()
            raise InvalidInput(f"{repeats} repeated id(s) in the embeddings, e.g. {first!r}", field="id")
    return order


def _flat(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    return x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x


def sort_by_id(
    ids: pa.Array | pa.ChunkedArray, vectors: np.ndarray, texts: Sequence[str | None] | None = None
) -> tuple[pa.Array, np.ndarray, list[str | None] | None]:
    """Rows in ascending id order (what `find_duplicates` expects)."""
    order = id_order(ids)
    sorted_texts = None if texts is None else [texts[i] for i in order.tolist()]
    return _flat(ids.take(pa.array(order))), np.ascontiguousarray(vectors[order]), sorted_texts


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place (zero rows stay zero); returns the same array."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, np.maximum(norms, 1e-12), out=vectors)
    return vectors


# ---- agreement with exact all-pairs search ----------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Near pairs found vs exact search, for the pairs that touch a sample of query rows."""

    sample: int
    true_pairs: int  # (query, other row) with exact cosine >= threshold
    found_pairs: int  # the same, among the pairs found
    matched: int

    @property
    def recall(self) -> float | None:
        """Share of the true pairs that were found (None: no true pair in the sample)."""
        return self.matched / self.true_pairs if self.true_pairs else None

    @property
    def precision(self) -> float | None:
        """Share of the found pairs that are true (None: nothing found)."""
        return self.matched / self.found_pairs if self.found_pairs else None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the summary."""
        return {
            "sample_rows": self.sample,
            "true_pairs": self.true_pairs,
            "found_pairs": self.found_pairs,
            "recall": None if self.recall is None else round(self.recall, 6),
            "precision": None if self.precision is None else round(self.precision, 6),
        }


def exact_neighbours(
    vectors: np.ndarray, queries: np.ndarray, threshold: float, block: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, other row) with cosine >= threshold, by brute-force matmul against every row."""
    q = np.ascontiguousarray(vectors[queries])
    cut = threshold - SCORE_TOLERANCE
    qs, others = [], []
    for lo in range(0, len(vectors), block):
        sims = q @ vectors[lo : lo + block].T
        qi, j = np.nonzero(sims >= cut)
        qs.append(queries[qi])
        others.append(j.astype(np.int64) + lo)
    qa, ob = np.concatenate(qs), np.concatenate(others)
    mask = qa != ob
    return qa[mask], ob[mask]


def check_agreement(
    vectors: np.ndarray, near: NearPairs, threshold: float, sample: int, seed: int = 0
) -> Agreement:
    """Pair recall and precision of `near` against exact search, for `sample` random query rows.

    Exact search here is the brute-force matmul of each sampled row against all rows, so every
    near duplicate of a sampled question counts, wherever it is in the corpus.
    """
    n = len(vectors)
    queries = sample_rows(n, min(sample, n), seed)
    tq, to = exact_neighbours(vectors, queries, threshold)
    in_sample = np.zeros(n, dtype=bool)
    in_sample[queries] = True
    fa = np.concatenate([near.a[in_sample[near.a]], near.b[in_sample[near.b]]])
    fb = np.concatenate([near.b[in_sample[near.a]], near.a[in_sample[near.b]]])
    truth = np.unique(tq * n + to)
    found = np.unique(fa * n + fb)
    matched = int(np.isin(found, truth, assume_unique=True).sum())
    return Agreement(len(queries), len(truth), len(found), matched)


# ---- the whole thing, in process ---------------------------------------------------------------


def local_search(vectors: np.ndarray, k: int, threshold: float, factory: str = "auto") -> NearPairs:
    """The near stage in this process: build an index over `vectors`, search every row."""
    if len(vectors) < 2:
        return NearPairs.empty()
    index, _ = build_search_index(vectors, factory)
    return near_pairs(index, vectors, 0, len(vectors), k, threshold)


@dataclass
class Dedup:
    """Result of one run: the two output tables and what was counted on the way."""

    pairs: pa.Table
    groups: pa.Table
    near: NearPairs
    stats: dict[str, Any] = field(default_factory=dict)


def find_duplicates(
    ids: pa.Array,
    vectors: np.ndarray,
    keys: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
    k: int,
    search: Callable[[], NearPairs] | None = None,
) -> Dedup:
    """Exact and near pairs, then groups, for rows in ascending id order with unit vectors.

    `keys` are `hash_questions` of the rows' texts (None: no exact stage). `search` runs the
    near stage (the job's runs it on Ray actors); by default it runs here (`local_search`).
    """
    check_threshold(threshold)
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}", field="k")
    n = len(vectors)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    exact = exact_pairs(*keys) if keys is not None else ExactPairs.empty()
    seconds["exact"] = time.perf_counter() - started
    started = time.perf_counter()
    near = search() if search is not None else local_search(vectors, k, threshold)
    seconds["near_stage"] = time.perf_counter() - started  # index + search
    started = time.perf_counter()
    pairs = merge_pairs(vectors, exact, near)
    labels = connected_components(n, pairs.a, pairs.b)
    groups = groups_table(ids, labels)
    table = pairs_table(ids, pairs)
    seconds["pairs_and_groups"] = time.perf_counter() - started
    stats = {
        "rows": n,
        "exact_pairs": pairs.exact_count,
        "near_pairs": pairs.near_count,
        "pairs": len(pairs.a),
        "near_pairs_found": len(near.a),  # incl. pairs that are also exact
        "groups": groups.num_rows,
        "rows_in_groups": int(pc.sum(groups.column("size")).as_py() or 0),
        "largest_group": int(pc.max(groups.column("size")).as_py() or 0),
        "exact_text_groups": exact.groups,
        "exact_groups_listed_as_star": exact.starred,
        "rows_saturated": near.saturated,
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    return Dedup(table, groups, near, stats)


def check_threshold(threshold: float) -> None:
    """Cosine thresholds live in (0, 1]."""
    if not (isinstance(threshold, int | float) and 0.0 < float(threshold) <= 1.0):
        raise InvalidInput(f"threshold must be in (0, 1], got {threshold!r}", field="threshold")
