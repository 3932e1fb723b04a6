"""Closed-loop request load from a few threads for the Serve hot-swap tests, every outcome recorded."""

from __future__ import annotations

import threading
from typing import Any, TypeVar

Self = TypeVar("Self", bound="ClosedLoop")


class ClosedLoop:
    """Threads calling `request(thread, n)` back to back until the block ends or `limit` outcomes
    are recorded; `outcomes` holds what each call returned, in completion order."""

    def __init__(self, threads: int, limit: int) -> None:
        self.stop, self.limit = threading.Event(), limit
        self.outcomes: list[Any] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def request(self, thread: int, n: int) -> Any:
        raise NotImplementedError

    def _run(self, thread: int) -> None:
        n = 0
        while not self.stop.is_set() and len(self.outcomes) < self.limit:
            outcome = self.request(thread, n)
            n += 1
            with self.lock:
                self.outcomes.append(outcome)

    def __enter__(self: Self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
