"""What each loaded model takes in resident memory, and a per-replica budget that refuses a load.

A replica that holds several models (the inline Ingress, a multiplexed model replica) measures
each model's load as the growth of the process's RSS across it (session, weights, tokenizer,
scheduler), and with a budget refuses a load that would take the process past it, with the
numbers in the message, instead of letting the kernel's OOM killer end every model at once.
Before a model's first load its cost is estimated from its artifact's files (ESTIMATE_FACTOR x
their bytes: onnxruntime keeps the weights plus its optimised copy); after it, the measured value
is used, also for reloads after an eviction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from engine.errors import ModelMemoryRefused

# RSS growth per byte of artifact files, before a model was ever loaded here. Measured on MiniLM
# fp32 (91 MB of files, onnxruntime, one thread): the first load in a process grew RSS by 222 MB
# (2.4x, with the runtime's one-time setup), the next two by 175 and 147 MB (1.9x, 1.6x).
ESTIMATE_FACTOR = 2.0


def rss_bytes() -> int:
    """This process's resident set size now."""
    return int(psutil.Process().memory_info().rss)


def artifact_bytes(artifact_dir: str) -> int:
    """Bytes of an artifact's files (local artifacts; 0 where the directory cannot be listed)."""
    root = Path(artifact_dir)
    if not root.is_dir():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class ModelMemory:
    """Per-model resident bytes of one replica and its budget (0 = no budget)."""

    def __init__(self, budget_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self.measured: dict[str, int] = {}  # last measured load cost per model (kept after eviction)
        self.resident: set[str] = set()
        self._lock = threading.Lock()  # loads may run on worker threads

    def estimate(self, name: str, artifact_dir: str) -> int:
        """What loading `name` is expected to add: its last measured cost, else from its files."""
        known = self.measured.get(name)
        return known if known is not None else int(ESTIMATE_FACTOR * artifact_bytes(artifact_dir))

    def admit(self, name: str, artifact_dir: str) -> None:
        """Refuse (ModelMemoryRefused) a load that would take RSS past the budget."""
        if not self.budget_bytes:
            return
        now, need = rss_bytes(), self.estimate(name, artifact_dir)
        if now + need > self.budget_bytes:
            held = ", ".join(f"{n} {self.measured.get(n, 0) / 1e6:.0f} MB" for n in sorted(self.resident))
            raise ModelMemoryRefused(
                f"model {name!r} needs about {need / 1e6:.0f} MB; this replica holds {now / 1e6:.0f} MB "
                f"of its {self.budget_bytes / 1e6:.0f} MB budget (model_memory_bytes; resident: "
                f"{held or 'none'}): hold fewer models per replica or raise the budget"
            )

    @contextmanager
    def loading(self, name: str, artifact_dir: str) -> Iterator[None]:
        """Around one model's load: admitted against the budget first, its RSS growth recorded."""
        with self._lock:  # one load at a time, so each growth is one model's
            self.admit(name, artifact_dir)
            before = rss_bytes()
            yield
            # The largest growth seen: a reload into pages an evicted model freed grows RSS
            # less than the model takes.
            self.measured[name] = max(self.measured.get(name, 0), rss_bytes() - before)
            self.resident.add(name)

    def forget(self, name: str) -> None:
        """The model was evicted or removed (its measured cost is kept for the next load)."""
        with self._lock:
            self.resident.discard(name)

    def status(self) -> dict[str, Any]:
        """RSS now, the budget, and each resident model's measured bytes (for /info)."""
        with self._lock:
            models = {n: self.measured.get(n, 0) for n in sorted(self.resident)}
        return {"rss_bytes": rss_bytes(), "memory_budget_bytes": self.budget_bytes, "model_bytes": models}
