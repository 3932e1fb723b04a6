"""The live index version, followed from CURRENT and hot-swapped in place (Ray-free).

A background thread looks at `indexes/<name>/CURRENT` (or a pinned version). A new version is
opened beside the live one and swapped in with one reference assignment, so searches in flight
finish on the version they started with and none fails. A version built with another model
(fingerprint mismatch), from documents embedded with another prompt, or a broken one is refused: the old one keeps serving and `status()` says why.
Used by the collections (index/collections.py) of the in-process backend and of the Searcher deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from embedder.errors import InvalidInput, ModelMismatch
from index import store as index_store
from index.errors import IndexInvalid, IndexUnavailable
from index.filters import parse_filter
from index.groups import GroupBy
from index.hybrid import NO_HYBRID, HybridDefault, TextQuery, default_hybrid
from index.hybrid import sidecar as hybrid_sidecar
from index.matches import Match, SearchResult
from index.prompt import NO_PROMPT, DocumentPrompt
from index.searcher import IndexSearcher
from index.thresholds import NO_DEFAULT, DefaultMinScore, default_min_score
from storage import StorageError
from storage import is_file as storage_is_file

log = logging.getLogger("qmatch.index")
# Asked before a freshly opened version goes live: a reason to refuse it (e.g. over the memory
# budget, index/collections.py), or None to admit it.
Admit = Callable[[IndexSearcher], str | None]


# How often a follower re-reads CURRENT. A flip is seen within this; each check is one small read
# (cheap on object storage too).
DEFAULT_POLL_SECONDS = 2.0


class IndexFollower:
    """Holds the live IndexSearcher of one index root and follows its CURRENT pointer."""

    def __init__(
        self,
        root: str,
        fingerprint: str,
        poll_s: float = DEFAULT_POLL_SECONDS,
        pinned: str | None = None,
        admit: Admit | None = None,
        name: str | None = None,
        prompt: DocumentPrompt = NO_PROMPT,
        group_by: str | None = None,
    ) -> None:
        self.root = root
        # The collection's default group_by column (CollectionSpec.group_by), or None.
        self.group_by = group_by
        self.name = name or Path(root).name
        self.admit = admit
        self.fingerprint = fingerprint
        # The prompt this server's model gives documents: a version embedded with another is refused.
        self.prompt = prompt
        # Seconds between looks at CURRENT: a stat and a small read, cheap enough to do often.
        self.poll_s = poll_s
        self.pinned = pinned
        self.live: IndexSearcher | None = None
        self.refused: dict[str, Any] | None = None
        # (version, its default /match min_score from thresholds.json): one tuple, swapped whole.
        self.min_score: tuple[str | None, DefaultMinScore] = (None, NO_DEFAULT)
        # (version, its fitted hybrid weight and default mode from hybrid.json): swapped whole too.
        self.hybrid: tuple[str | None, HybridDefault] = (None, NO_HYBRID)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="index-follower", daemon=True)
        self._thread.start()

    def configure(self, pinned: str | None, poll_s: float | None, group_by: str | None = None) -> None:
        """Pin a version (None follows CURRENT), set the poll interval and the default group_by."""
        self.pinned = pinned or None
        self.group_by = group_by
        if poll_s is not None:
            if poll_s <= 0:
                raise ValueError(f"poll_seconds must be > 0, got {poll_s}")
            self.poll_s = poll_s
        self.refresh()

    def close(self) -> None:
        """Stop following."""
        self._stop.set()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # the follower must survive anything a bad directory throws at it
                log.exception("index follower: refresh failed; keeping the live version")

    def refresh(self) -> None:
        """Load the wanted version if it differs from the live one (and was not refused already)."""
        with self._lock:
            wanted = self.pinned or index_store.current_version(self.root)
            live = self.live.version if self.live is not None else None
            if wanted is not None and wanted == live and self.live is not None:
                self._refresh_min_score(self.live, inherit=False)  # a threshold stored since it went live
                self._refresh_hybrid(self.live, inherit=False)  # an alpha fitted since
            if wanted is None or wanted == live:
                return
            if self.refused is not None and self.refused.get("version") == wanted:
                return
            started = time.perf_counter()
            try:
                fresh = IndexSearcher.open(
                    self.root,
                    version=wanted,
                    expected_fingerprint=self.fingerprint,
                    expected_prompt=self.prompt,
                )
            except (ModelMismatch, IndexInvalid, StorageError, OSError) as exc:
                self.refused = {"version": wanted, "reason": _public(str(exc), self.root), "at": time.time()}
                log.warning("index version %s refused: %s (still serving %s)", wanted, exc, live)
                return
            if self.group_by is not None:  # the default grouping's codes, before it goes live and is budgeted
                try:
                    fresh.group_keys(self.group_by)
                    fresh.prepare_groups()
                except InvalidInput as exc:  # served anyway: grouped requests get this 422
                    log.warning("index version %s: default group_by: %s", wanted, exc)
            reason = self.admit(fresh) if self.admit is not None else None
            if reason is not None:
                del fresh  # dropped here: nothing else is unloaded to make room
                self.refused = {"version": wanted, "reason": reason, "at": time.time()}
                log.warning("index version %s refused: %s (still serving %s)", wanted, reason, live)
                return
            self._refresh_min_score(fresh, inherit=True)  # before the swap: never a version without it
            self._refresh_hybrid(fresh, inherit=True)
            self.live = fresh  # one assignment: in-flight searches keep the object they hold
            self.refused = None
            log.info("index version %s live (%.2fs to load)", wanted, time.perf_counter() - started)

    def check(self, filter_spec: Any, group: GroupBy | None = None, query: TextQuery | None = None) -> None:
        """Validate a request's filter, group_by and mode against the live version (InvalidInput: 422)."""
        live = self.live
        if live is None:
            raise IndexUnavailable(self._unavailable())
        if filter_spec is not None:
            parse_filter(filter_spec, live.filter_schema)
        _grouped_column(group or GroupBy(), self.group_by, live)
        self._mode(live, query)

    def _mode(self, live: IndexSearcher, query: TextQuery | None) -> tuple[str, HybridDefault]:
        """The request's mode and the version's fitted hybrid record; 422 for lexical modes without BM25."""
        version, fitted = self.hybrid
        if version != live.version:
            fitted = NO_HYBRID
        query = query or TextQuery()
        mode = query.resolve(fitted.mode)
        if mode != "dense" and live.lexical is None:
            if query.mode is None:
                return "dense", NO_HYBRID  # an inherited default mode on a version built --no-lexical
            raise InvalidInput(
                f"collection {self.name!r} (version {live.version}) has no lexical index: mode "
                f"{mode!r} needs one (build the index without --no-lexical); mode 'dense' works",
                field="mode",
            )
        return mode, fitted

    def search(
        self,
        vectors: np.ndarray,
        top_k: int,
        filter_spec: Any = None,
        group: GroupBy | None = None,
        query: TextQuery | None = None,
    ) -> SearchResult:
        """Top-k matches per vector from the live version (within the filter's rows, if given).

        Grouped (the request's group_by, else the collection's default): the top_k groups instead.
        """
        live = self.live
        if live is None:
            raise IndexUnavailable(self._unavailable())
        flt = None if filter_spec is None else parse_filter(filter_spec, live.filter_schema)
        version, default = self.min_score
        default_min = default.value if version == live.version else None
        group = group or GroupBy()
        column = _grouped_column(group, self.group_by, live)
        mode, fitted = self._mode(live, query)
        alpha = fitted.alpha
        grouping = None
        if mode != "dense":
            # thresholds.json's is a cosine threshold: it bounds dense scores only. Hybrid scores get
            # the threshold fitted with alpha (hybrid.json); lexical none (BM25 has no fixed scale).
            default_min = fitted.min_score if mode == "hybrid" else None
            if column is not None and group.min_score is None and default_min is not None:
                group = replace(group, min_score=default_min)  # bounds the grouped candidates too
            assert query is not None
            rows, infos, selected = live.search_text(
                vectors, query.texts, top_k, mode, alpha, flt, column, group
            )
            grouping = infos
        elif column is None:
            rows, selected = live.search_within(vectors, top_k, flt)
        else:
            # min_score must bound the candidates themselves (what group_hits counts, when to stop).
            if group.min_score is None and default_min is not None:
                group = replace(group, min_score=default_min)
            rows, found, selected = live.search_groups(vectors, top_k, column, group, flt)
            grouping = [g.info for g in found]
        matches = [[Match(m.pop("id"), m.pop("score"), m) for m in row] for row in rows]
        return SearchResult(
            matches,
            live.version,
            live.fingerprint,
            default_min,
            selected,
            self.name,
            grouping,
            mode,
            alpha if mode == "hybrid" else None,
        )

    @property
    def memory_bytes(self) -> int:
        """Resident bytes of the live version (0 without one)."""
        live = self.live
        return 0 if live is None else live.memory_bytes

    def _refresh_min_score(self, searcher: IndexSearcher, inherit: bool) -> None:
        """The version's default /match min_score (index/thresholds.py); a bad file means none."""
        version, current = self.min_score
        args = (self.root, searcher.version, searcher.fingerprint, searcher.manifest.metric)
        try:
            if inherit or version != searcher.version:
                found = default_min_score(*args)  # its own thresholds.json, else an older version's
            else:
                found = default_min_score(*args, inherit=False)  # polled: own file new or changed?
                if found.from_version is None:
                    if current.from_version != searcher.version:
                        return  # still no own file: the inherited value (or none) stands
                    found = default_min_score(*args)  # its own file went away: inherit again
        except (StorageError, OSError) as exc:
            log.warning("thresholds of index version %s unreadable: %s", searcher.version, exc)
            found = NO_DEFAULT
        self.min_score = (searcher.version, found)

    def _refresh_hybrid(self, searcher: IndexSearcher, inherit: bool) -> None:
        """The version's fitted alpha and default mode (index/hybrid.py); a bad file means none."""
        version, current = self.hybrid
        try:
            if not inherit and version == searcher.version:
                own = storage_is_file(hybrid_sidecar(self.root, searcher.version))
                if not own and current.from_version != searcher.version:
                    return  # still no own file: the inherited weight (or none) stands
            found = default_hybrid(self.root, searcher.version, searcher.fingerprint)
        except (StorageError, OSError, ValueError) as exc:
            log.warning("hybrid.json of index version %s unreadable: %s", searcher.version, exc)
            found = NO_HYBRID
        self.hybrid = (searcher.version, found)

    def status(self) -> dict[str, Any]:
        """Live version, size, factory and the last refusal (no server paths)."""
        live = self.live
        out: dict[str, Any] = {
            "name": self.name,
            "pinned": self.pinned,
            "refused": self.refused,
            "group_by": self.group_by,  # the default /match grouping (None: ungrouped)
        }
        if live is None:
            out.update(version=None, error=self._unavailable())
            return out
        out.update(
            version=live.version,
            size=live.size,
            dimension=live.dimension,
            fingerprint=live.fingerprint,
            factory=live.manifest.factory,
            filter_columns=live.manifest.filters,
            memory_bytes=live.memory_bytes,
            lexical=live.manifest.lexical,  # None: dense only (lexical and hybrid modes get a 422)
        )
        hybrid_version, fitted = self.hybrid
        if hybrid_version == live.version:
            out.update(
                default_mode=fitted.mode if live.lexical is not None else "dense",
                hybrid_alpha=fitted.alpha,
                hybrid_from=fitted.from_version,
                hybrid_min_score=fitted.min_score,  # hybrid /match's default min_score (None: none)
            )
        version, default = self.min_score
        if version == live.version:
            out.update(default_min_score=default.value, default_min_score_from=default.from_version)
        return out

    def _unavailable(self) -> str:
        if self.refused is not None:
            return f"no index loaded: version {self.refused['version']} refused: {self.refused['reason']}"
        return f"no index loaded for '{self.name}' (no CURRENT version yet)"


def _grouped_column(group: GroupBy, default: str | None, live: IndexSearcher) -> str | None:
    """The column a request groups by in this collection (None: ungrouped); InvalidInput (422) if it cannot."""
    column = group.resolve(default)
    if column is None:
        if group.size != 1:
            raise InvalidInput(
                "group_size needs group_by (this collection has no default group_by)", field="group_size"
            )
        return None
    live.group_keys(column)  # built once per column and version; an unknown column names the columns
    return column


def _public(message: str, root: str) -> str:
    """A refusal reason without the server's directory layout."""
    return message.replace(str(Path(root).resolve()), f"<{Path(root).name}>").replace(
        root, f"<{Path(root).name}>"
    )
