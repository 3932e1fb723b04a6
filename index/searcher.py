"""IndexSearcher: one loaded index version answering top-k queries with corpus ids and metadata.

Ray-free; the Serve IndexSearcher deployment holds one and swaps in a new one (IndexSearcher.open of the new
version) when CURRENT changes.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from embedder.errors import InvalidInput, ModelMismatch
from index import store as index_store
from index.filter_columns import Kind
from index.filtered_search import FilterSearchConfig, ensure_gatherable, search_filtered
from index.filters import Filter, evaluate
from index.groups import (
    GroupBy,
    GroupedRows,
    GroupInfo,
    GroupSearchConfig,
    group_keys,
    search_groups,
)
from index.hybrid import CANDIDATES, fused_order
from index.lexical import LexicalIndex, top_rows
from index.prompt import DocumentPrompt
from index.store import IndexManifest, LoadedIndex
from index.text_groups import Candidates, search_text_groups

# FAISS OpenMP threads of a serving search. 1: a request searches a handful of queries, where
# more threads only add wake-up cost and spin on cores the model needs. Raise it (Serve arg
# search_threads) for large IVF/HNSW indexes answering big `questions` batches.
DEFAULT_SEARCH_THREADS = 1


class IndexSearcher:
    """Top-k search over one index version; matches carry id, score and metadata columns."""

    def __init__(self, loaded: LoadedIndex) -> None:
        # Metadata stays in Arrow: opening a new version (hot swap) costs no per-row Python objects;
        # each search converts only the rows it returns.
        self.loaded = loaded
        # Filtered searches may gather rows (index/filtered_search.py): IVF needs its row map,
        # built here, before the version goes live, never under a search.
        self.gather_bytes = ensure_gatherable(loaded.index) if loaded.filters.columns else 0
        self.filter_config = FilterSearchConfig()
        self.group_config = GroupSearchConfig()
        # column -> per-row group codes, built on a column's first grouped search (one dictionary
        # encode; a racing second build is harmless: both assign the same codes).
        self._group_keys: dict[str, np.ndarray] = {}
        self._gather_lock = threading.Lock()  # one row-map build, never two racing ones

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        version: str | None = None,
        expected_fingerprint: str | None = None,
        expected_prompt: DocumentPrompt | None = None,
    ) -> IndexSearcher:
        """Open CURRENT (or `version`); refuse an index built with a different model or document prompt.

        `expected_prompt`: the prompt the server's model gives documents (DocumentPrompt.chosen);
        None skips that check (tools that only read an index).
        """
        loaded = (
            index_store.open_current(root) if version is None else index_store.open_version(root, version)
        )
        if expected_fingerprint is not None and loaded.manifest.fingerprint != expected_fingerprint:
            raise ModelMismatch(
                f"index {loaded.path} was built with model {loaded.manifest.fingerprint!r}, "
                f"this server's model is {expected_fingerprint!r}"
            )
        if expected_prompt is not None:
            loaded.manifest.prompt.agrees(expected_prompt, f"index {loaded.path}", "this server's model")
        return cls(loaded)

    @property
    def version(self) -> str:
        """Index version name."""
        return self.loaded.version

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model artifact whose vectors the index holds."""
        return self.loaded.manifest.fingerprint

    @property
    def size(self) -> int:
        """Vectors in the index."""
        return self.loaded.index.size

    @property
    def dimension(self) -> int:
        """Vector dimension."""
        return self.loaded.index.dimension

    @property
    def manifest(self) -> IndexManifest:
        """The version's manifest."""
        return self.loaded.manifest

    @property
    def filter_schema(self) -> dict[str, Kind]:
        """Filter column name -> kind ("string" | "int" | "timestamp") of this version."""
        return dict(self.loaded.filters.schema())

    @property
    def memory_bytes(self) -> int:
        """Resident bytes of this version: index file, metadata table, filter columns, row map, group codes."""
        path = self.loaded.path / index_store.INDEX_FILE
        index_bytes = path.stat().st_size if path.is_file() else 0
        keys = sum(k.nbytes for k in self._group_keys.values())  # grouped columns' per-row codes
        lexical = self.loaded.lexical.nbytes if self.loaded.lexical is not None else 0
        return int(
            index_bytes
            + self.loaded.metadata.nbytes
            + self.loaded.filters.nbytes
            + self.gather_bytes
            + keys
            + lexical
        )

    @property
    def lexical(self) -> LexicalIndex | None:
        """The version's BM25 index (index/lexical.py), or None when it was built without one."""
        return self.loaded.lexical

    def search_text(
        self,
        query_vectors: np.ndarray,
        texts: tuple[str, ...],
        top_k: int,
        mode: str,
        alpha: float,
        flt: Filter | None = None,
        column: str | None = None,
        group: GroupBy | None = None,
    ) -> tuple[list[list[dict[str, Any]]], list[GroupInfo] | None, int | None]:
        """Lexical or hybrid matches per query (index/hybrid.py); grouped by `column` if given.

        Lexical scores are raw BM25; hybrid ones alpha * dense + (1 - alpha) * BM25 / the query's max.
        Grouped, the fused candidates widen until top_k groups fill (index/text_groups.py).
        Returns the records, the grouping (None ungrouped) and the rows the filter selected.
        """
        lexical = self.loaded.lexical
        assert lexical is not None, "the follower refuses lexical modes on a version without one"
        q = self._queries(query_vectors, top_k)
        if len(texts) != len(q):
            raise InvalidInput(f"{len(texts)} texts for {len(q)} query vectors")
        mask = None if flt is None else evaluate(flt, self.loaded.filters)
        selected = None if mask is None else int(mask.sum())
        keys = None if column is None else self.group_keys(column)
        if keys is not None:
            mask = (keys >= 0) if mask is None else mask & (keys >= 0)
        available = self.size if mask is None else int(mask.sum())
        group = group or GroupBy()
        if mode == "hybrid":
            self._ensure_gatherable()  # lexical-only candidates are re-scored from the stored vectors
        every = [lexical.scores(text) for text in texts]  # BM25 of every row, once per query

        def candidates(qi: int, depth: int, dense: tuple[np.ndarray, np.ndarray] | None = None) -> Candidates:
            return self._text_candidates(q[qi], every[qi], depth, mode, alpha, mask, available, dense)

        if keys is not None:
            found = search_text_groups(
                candidates, len(q), keys, int(top_k), group, column or "", self.group_config
            )
            records = [self._rows_records(g.rows, g.scores, g) for g in found]
            return records, [g.info for g in found], selected
        n = max(int(top_k), CANDIDATES)
        # Ungrouped: one batched dense search for every query (BLAS over the batch), then fusion.
        dense = self._dense(q, n, mask) if mode == "hybrid" else None
        out = []
        for i in range(len(q)):
            c = candidates(i, n, None if dense is None else (dense[0][i], dense[1][i]))
            rows, scores = c.rows, c.scores
            if group.min_score is not None:
                keep = scores >= group.min_score
                rows, scores = rows[keep], scores[keep]
            out.append(self._rows_records(rows[:top_k], scores[:top_k], None))
        return out, None, selected

    def _dense(self, q: np.ndarray, n: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the dense top-n of each query within `mask` (rows -1 past the selection)."""
        if mask is None:
            return self.loaded.index.search(q, min(n, max(self.size, 1)))
        hits = search_filtered(self.loaded.index, q, n, mask, self.filter_config)
        return hits.scores, hits.rows

    def _text_candidates(
        self,
        q: np.ndarray,
        every: np.ndarray,
        n: int,
        mode: str,
        alpha: float,
        mask: np.ndarray | None,
        available: int,
        dense: tuple[np.ndarray, np.ndarray] | None,
    ) -> Candidates:
        """One query's lexical or hybrid candidates at depth n, best first (index/text_groups.py)."""
        l_rows, l_scores = top_rows(every, n, mask)
        lexical_full = len(l_rows) >= n  # rows with a BM25 > 0 may exist past them
        l_last = float(l_scores[-1]) if lexical_full else 0.0  # a row past them scores at most this
        if mode == "lexical":
            return Candidates(l_rows, l_scores, not lexical_full, l_last if lexical_full else -math.inf)
        if dense is None:
            batch_scores, batch_rows = self._dense(q[None, :], n, mask)
            dense = batch_scores[0], batch_rows[0]
        d_scores, d_rows = dense
        rows, scores = fused_order(d_rows, d_scores, l_rows, every, lambda r: self._exact(q, r), alpha)
        if n >= available:  # the dense side holds every selectable row: nothing lies outside
            return Candidates(rows, scores, True, -math.inf)
        seen = d_scores[d_rows >= 0]
        d_last = float(seen[-1]) if len(seen) else -math.inf
        top = float(l_scores[0]) if len(l_scores) else 0.0  # fuse()'s normaliser: the query's best BM25
        bound = alpha * d_last + (1.0 - alpha) * (l_last / top if top > 0 else 0.0)
        return Candidates(rows, scores, False, bound)

    def _exact(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Dense scores of given rows: the exact inner product (negated squared L2) from the index's vectors."""
        vectors = self.loaded.index.index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
        if self.loaded.index.metric == "ip":
            return (vectors @ q).astype(np.float32)
        return (-((vectors - q[None, :]) ** 2).sum(1)).astype(np.float32)

    def _rows_records(
        self, rows: np.ndarray, scores: np.ndarray, grouped: GroupedRows | None
    ) -> list[dict[str, Any]]:
        records = self.loaded.metadata.take(rows).to_pylist()
        out = [
            {"id": r.pop("id"), "score": float(s), **r} for r, s in zip(records, scores.tolist(), strict=True)
        ]
        if grouped is not None:
            assert grouped.info.by
            values = self.loaded.metadata.column(grouped.info.by).take(rows).to_pylist()
            for rec, v, h in zip(out, values, grouped.group_hits.tolist(), strict=True):
                rec["group_value"], rec["group_hits"] = v, int(h)
        return out

    def search(
        self, query_vectors: np.ndarray, top_k: int = 10, min_score: float | None = None
    ) -> list[list[dict[str, Any]]]:
        """Per query, up to top_k matches best first: {"id", "score", <metadata columns>}."""
        return self.search_within(query_vectors, top_k, None, min_score)[0]

    def search_within(
        self,
        query_vectors: np.ndarray,
        top_k: int = 10,
        flt: Filter | None = None,
        min_score: float | None = None,
    ) -> tuple[list[list[dict[str, Any]]], int | None]:
        """Matches per query among the rows `flt` selects (all rows without one), and how many it selected.

        With a filter every query gets min(top_k, selected) matches (before min_score).
        """
        q = self._queries(query_vectors, top_k)
        selected: int | None = None
        if flt is not None:
            hits = search_filtered(
                self.loaded.index, q, int(top_k), evaluate(flt, self.loaded.filters), self.filter_config
            )
            scores, rows, selected = hits.scores, hits.rows, hits.selected
        elif len(q) == 0:
            return [], None
        else:
            scores, rows = self.loaded.index.search(q, min(int(top_k), max(self.size, 1)))
        return self._records(scores, rows, min_score), selected

    def group_keys(self, column: str) -> np.ndarray:
        """Per-row group codes of a metadata column (InvalidInput naming the columns if it has none)."""
        found = self._group_keys.get(column)
        if found is None:
            found = group_keys(self.loaded.metadata, column)
            self._group_keys = {**self._group_keys, column: found}
        return found

    def search_groups(
        self, query_vectors: np.ndarray, top_k: int, column: str, group: GroupBy, flt: Filter | None = None
    ) -> tuple[list[list[dict[str, Any]]], list[GroupedRows], int | None]:
        """Per query the rows of its top_k groups of `column` (index/groups.py), their grouping, the selection.

        Each record also carries `group_value` (the column's value) and `group_hits`.
        """
        q = self._queries(query_vectors, top_k)
        keys = self.group_keys(column)
        self._ensure_gatherable()
        mask = None if flt is None else evaluate(flt, self.loaded.filters)
        found = search_groups(
            self.loaded.index, q, keys, int(top_k), group, column, mask, self.group_config, self.filter_config
        )
        values = self.loaded.metadata.column(column)
        out = []
        for g in found:
            records = self.loaded.metadata.take(g.rows).to_pylist()
            groups = values.take(g.rows).to_pylist()
            out.append(
                [
                    {"id": r.pop("id"), "score": float(s), **r, "group_value": v, "group_hits": int(h)}
                    for r, s, v, h in zip(
                        records, g.scores.tolist(), groups, g.group_hits.tolist(), strict=True
                    )
                ]
            )
        return out, found, None if mask is None else int(mask.sum())

    def prepare_groups(self) -> None:
        """Build what a grouped search needs before the version goes live (the IVF row map)."""
        self._ensure_gatherable()

    def _ensure_gatherable(self) -> None:
        """Grouped search may take the exact plan on any version: IVF needs its row map (8 bytes a row).

        Versions with filter columns built it at load; others build it on their first grouped search,
        or at load for a collection's default group_by (index/follower.py), and count it in memory_bytes.
        """
        if self.gather_bytes or self.loaded.index.ivf is None:
            return
        with self._gather_lock:
            if not self.gather_bytes:
                self.gather_bytes = ensure_gatherable(self.loaded.index)

    def _queries(self, query_vectors: np.ndarray, top_k: int) -> np.ndarray:
        q = np.asarray(query_vectors)
        if q.ndim != 2 or q.shape[1] != self.dimension:
            raise InvalidInput(f"query vectors must have shape (n, {self.dimension}), got {q.shape}")
        if not isinstance(top_k, int | np.integer) or top_k < 1:
            raise InvalidInput(f"top_k must be a positive integer, got {top_k!r}", field="top_k")
        if not np.isfinite(q).all():
            raise InvalidInput("query vectors contain NaN or infinity")
        return q

    def _records(
        self, scores: np.ndarray, rows: np.ndarray, min_score: float | None
    ) -> list[list[dict[str, Any]]]:
        keep = (rows >= 0) if min_score is None else (rows >= 0) & (scores >= min_score)
        # -1 rows mean fewer than k results exist (tiny index, sparse IVF lists, a narrow filter).
        records = self.loaded.metadata.take(rows[keep]).to_pylist()
        out: list[list[dict[str, Any]]] = []
        taken = 0
        for qi in range(len(rows)):
            matches = []
            for score in scores[qi][keep[qi]].tolist():
                matches.append({"id": records[taken].pop("id"), "score": float(score), **records[taken]})
                taken += 1
            out.append(matches)
        return out
