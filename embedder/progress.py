"""Progress on stderr for every command's long steps (export, the jobs); `--no-progress` turns it off.

A step line when each step starts and how long it took when it ends, and a tqdm row bar for the
steps that stream rows, so a 10M-row index build is never minutes of silence.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


class Progress:
    """Step lines and row bars for one job run (all no-ops when disabled)."""

    def __init__(self, job: str, enabled: bool = True) -> None:
        self.job, self.enabled = job, enabled
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        """One line with the time since the job started."""
        if self.enabled:
            print(
                f"{self.job} [{time.perf_counter() - self.started:7.1f}s] {message}",
                file=sys.stderr,
                flush=True,
            )

    @contextmanager
    def step(self, label: str, seconds: dict[str, float] | None = None, key: str = "") -> Iterator[None]:
        """Announce a step, then say how long it took (and record it as `seconds[key]` when given)."""
        self.say(f"{label} ...")
        begun = time.perf_counter()
        yield
        took = time.perf_counter() - begun
        if seconds is not None:
            seconds[key or label] = took
        self.say(f"{label}: done in {took:.1f} s")

    def rows(self, total: int, label: str) -> Any:
        """A tqdm bar counting rows (disabled: a bar that prints nothing)."""
        return tqdm(
            total=total, unit="rows", desc=f"{self.job}: {label}", disable=not self.enabled, file=sys.stderr
        )


QUIET = Progress("", enabled=False)
