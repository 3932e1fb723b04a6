"""Admission control: a count of requests in flight and a budget of queued model tokens.

Both refuse at once (429 with Retry-After) instead of queueing without bound: a client that
retries another replica later does better than one that waits behind a queue it cannot see.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded


class Admission:
    """In-flight request slots plus a real-token budget for work queued at the model."""

    def __init__(self, max_in_flight: int, max_queued_tokens: int, retry_after_s: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued_tokens = max_queued_tokens
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.queued_tokens = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold one in-flight slot for the body of the with-block (taken after the body was read)."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"this replica is serving {self.in_flight} requests (limit {self.max_in_flight})",
                retry_after=self.retry_after_s,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @contextmanager
    def tokens(self, count: int) -> Iterator[None]:
        """Hold `count` tokens of the model-queue budget while the request's texts are encoded."""
        if self.queued_tokens and self.queued_tokens + count > self.max_queued_tokens:
            raise Overloaded(
                f"the model queue holds {self.queued_tokens} tokens; {count} more exceed the "
                f"budget of {self.max_queued_tokens}",
                retry_after=self.retry_after_s,
            )
        self.queued_tokens += count
        try:
            yield
        finally:
            self.queued_tokens -= count
