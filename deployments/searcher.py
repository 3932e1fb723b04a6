"""Searcher deployment: vectors -> top-k matches from the live index version, hot-swapped in place.

A background thread follows `indexes/<name>/CURRENT` (and user_config may pin a version). A new
version is loaded beside the live one and swapped in with one reference assignment, so requests
in flight finish on the version they started with and none fails. A version built with another
model (fingerprint mismatch) or a broken one is refused: the old one keeps serving and `info()`
says why.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import faiss
import numpy as np
from ray import serve

from embedder import index_store
from embedder.errors import IndexInvalid, InvalidInput, ModelMismatch
from embedder.search import Searcher as CoreSearcher

log = logging.getLogger("ray.serve")


@serve.deployment
class Searcher:
    """FAISS index plus metadata of one version at a time."""

    def __init__(self, index_root: str, fingerprint: str, threads: int = 1) -> None:
        # One OpenMP thread by default: a request searches a handful of queries, where extra
        # threads only add wake-up cost and spin on cores the model replica needs.
        faiss.omp_set_num_threads(threads)
        self.root = index_root
        self.fingerprint = fingerprint
        self.live: CoreSearcher | None = None
        self.refused: dict[str, Any] | None = None
        self.pinned: str | None = None
        # Seconds between looks at CURRENT; a stat + small read, cheap enough to do often.
        self.poll_s = 2.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        threading.Thread(target=self._follow, name="index-follower", daemon=True).start()

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: {"index_version": pin or null to follow CURRENT, "poll_seconds": float}."""
        config = config or {}
        self.pinned = config.get("index_version") or None
        self.poll_s = float(config.get("poll_seconds", self.poll_s))
        self.refresh()

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
            if wanted is None or wanted == live:
                return
            if self.refused is not None and self.refused.get("version") == wanted:
                return
            started = time.perf_counter()
            try:
                fresh = CoreSearcher.open(self.root, version=wanted, expected_fingerprint=self.fingerprint)
            except (ModelMismatch, IndexInvalid, OSError) as exc:
                self.refused = {"version": wanted, "reason": str(exc), "at": time.time()}
                log.warning("index version %s refused: %s (still serving %s)", wanted, exc, live)
                return
            self.live = fresh  # one assignment: in-flight searches keep the object they hold
            self.refused = None
            log.info("index version %s live (%.2fs to load)", wanted, time.perf_counter() - started)

    def search(self, vectors: np.ndarray, top_k: int, min_score: float | None) -> dict[str, Any]:
        """{"index_version", "fingerprint", "matches": per query list} or {"error": reason}."""
        live = self.live
        if live is None:
            return {"error": self._unavailable()}
        try:
            matches = live.search(vectors, top_k=top_k, min_score=min_score)
        except InvalidInput as exc:  # a vector the index cannot take (e.g. cut dimensions)
            return {"error": str(exc), "field": exc.field}
        return {"index_version": live.version, "fingerprint": live.fingerprint, "matches": matches}

    def info(self) -> dict[str, Any]:
        """Live version, size and the last refusal (if any)."""
        live = self.live
        out: dict[str, Any] = {"root": self.root, "pinned": self.pinned, "refused": self.refused}
        if live is None:
            out.update(version=None, error=self._unavailable())
            return out
        out.update(
            version=live.version, size=live.size, dimension=live.dimension, fingerprint=live.fingerprint
        )
        out["factory"] = live.manifest.factory
        return out

    def _unavailable(self) -> str:
        if self.refused is not None:
            return f"no index loaded: version {self.refused['version']} refused: {self.refused['reason']}"
        return f"no index loaded from {self.root} (no CURRENT version)"

    def __del__(self) -> None:
        self._stop.set()
