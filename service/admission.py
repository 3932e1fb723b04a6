"""Admission control: a count of requests in flight and a budget of queued model tokens, shared by key.

Both refuse at once (429 with Retry-After) instead of queueing without bound: a client that
retries another replica later does better than one that waits behind a queue it cannot see.

Fair share by key: each request holds its slot and tokens under its key's name. A key that already
holds some may take more only up to its share of the replica's capacity, `capacity * weight / W`,
where W sums the weights of the keys holding some now (itself included), plus one weight-1 share
kept free while some configured key holds nothing, so a newcomer's first request always finds
room. One key's flood therefore gets the 429s, and a key holding nothing is admitted whenever the
replica is not full. With one key (or none) nothing changes: its share is the whole capacity.
A key's first slot and first tokens are never refused by its share (only by the replica's total),
so the largest allowed request of any key can always run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from service.errors import Overloaded


class Admission:
    """In-flight request slots plus a real-token budget for work queued at the model, shared by key."""

    def __init__(self, max_in_flight: int, max_queued_tokens: int, retry_after_s: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued_tokens = max_queued_tokens
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.queued_tokens = 0
        # The configured keys' weights (set with the key table); a name not in it weighs 1.
        self.weights: dict[str, int] = {}
        self.slots_held: dict[str, int] = {}
        self.tokens_held: dict[str, int] = {}

    def share(self, key: str, capacity: int, held: Mapping[str, int]) -> float:
        """`key`'s fair share of `capacity` against the keys holding some of it now (see module doc)."""
        active = {k for k, n in held.items() if n > 0} | {key}
        total = sum(self.weights.get(k, 1) for k in active)
        if any(k not in active for k in self.weights):
            total += 1  # room kept for a configured key that holds nothing yet
        return capacity * self.weights.get(key, 1) / total

    def _refuse(self, what: str) -> Overloaded:
        return Overloaded(what, retry_after=self.retry_after_s)

    @contextmanager
    def request(self, key: str = "") -> Iterator[None]:
        """Hold one in-flight slot for `key` for the body of the with-block (taken after the body was read)."""
        if self.in_flight >= self.max_in_flight:
            raise self._refuse(
                f"this replica is serving {self.in_flight} requests (limit {self.max_in_flight})"
            )
        mine = self.slots_held.get(key, 0)
        if mine and mine + 1 > max(1.0, self.share(key, self.max_in_flight, self.slots_held)):
            raise self._refuse(
                f"this key already has {mine} requests in flight on this replica, its fair share "
                "while other keys are served"
            )
        self.in_flight += 1
        self.slots_held[key] = mine + 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._release(self.slots_held, key, 1)

    @contextmanager
    def tokens(self, count: int, key: str = "") -> Iterator[None]:
        """Hold `count` tokens of the model-queue budget for `key` while the request's texts are encoded."""
        if self.queued_tokens and self.queued_tokens + count > self.max_queued_tokens:
            raise self._refuse(
                f"the model queue holds {self.queued_tokens} tokens; {count} more exceed the "
                f"budget of {self.max_queued_tokens}"
            )
        mine = self.tokens_held.get(key, 0)
        if mine and mine + count > self.share(key, self.max_queued_tokens, self.tokens_held):
            raise self._refuse(
                f"this key already has {mine} tokens queued at the model on this replica; {count} more "
                "exceed its fair share while other keys are served"
            )
        self.queued_tokens += count
        self.tokens_held[key] = mine + count
        try:
            yield
        finally:
            self.queued_tokens -= count
            self._release(self.tokens_held, key, count)

    @staticmethod
    def _release(held: dict[str, int], key: str, amount: int) -> None:
        left = held.get(key, 0) - amount
        if left > 0:
            held[key] = left
        else:
            held.pop(key, None)  # keys holding nothing are not "active"
