"""Peak resident memory of every process of a run, sampled in a background thread."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """RSS summed over every visible process, and the largest process whose command line holds `actor_marker`.

    Inside ../shared/bin/loopback-only (its own PID namespace) "every visible process" is the run:
    driver, raylets and actors. The object store's shared pages count in each process that maps
    them, so the total overstates.
    """

    def __init__(self, actor_marker: str, interval: float = 0.2) -> None:
        self.actor_marker, self.interval = actor_marker, interval
        self.peak_total = self.peak_actor = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = actor = 0
            for p in psutil.process_iter(["memory_info", "cmdline"]):
                rss = p.info["memory_info"].rss if p.info["memory_info"] else 0
                total += rss
                if self.actor_marker in " ".join(p.info["cmdline"] or []):
                    actor = max(actor, rss)
            self.peak_total, self.peak_actor = max(self.peak_total, total), max(self.peak_actor, actor)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
