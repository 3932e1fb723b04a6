"""Waiting for a condition with a deadline (tests of clusters, jobs and servers that change over time)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `condition` every `interval` seconds until it holds; return the seconds it took.
    Raises AssertionError (a test failure) naming `what` when it does not hold within `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started
