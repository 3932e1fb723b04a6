"""Per-key counters of one replica: requests, prompt tokens and refusals (401 / 403 / 429), for billing
and alerting.

/info shows a key its own row (an admin key every row). `KeyUsage.snapshot()` is the one read of
them, for /info and for a metrics exporter (e.g. Prometheus counters labelled by key name): plain
dicts, taken in one step, so a reader never sees a request counted without its tokens' row existing.
The counters live in the replica that answered (like /info's per-model counts), since it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REFUSALS = (401, 403, 429)


@dataclass
class KeyCounts:
    """One key's counts."""

    requests: int = 0
    tokens: int = 0  # prompt tokens the model ran for this key (usage.prompt_tokens summed)
    refusals: dict[int, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))

    def as_dict(self) -> dict[str, Any]:
        """The row /info shows (refusal statuses as string keys, as JSON has them)."""
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "refusals": {str(s): n for s, n in self.refusals.items()},
        }


class KeyUsage:
    """Counters by key name (event-loop only: no lock needed, nothing awaits between read and write)."""

    def __init__(self) -> None:
        self.by_key: dict[str, KeyCounts] = {}

    def _row(self, name: str) -> KeyCounts:
        row = self.by_key.get(name)
        if row is None:
            row = self.by_key[name] = KeyCounts()
        return row

    def request(self, name: str) -> None:
        """One API request answered for `name` (whatever its status)."""
        self._row(name).requests += 1

    def tokens(self, name: str, count: int) -> None:
        """Prompt tokens the model ran for `name`."""
        self._row(name).tokens += count

    def refused(self, name: str, status: int) -> None:
        """One refusal (401 / 403 / 429) of `name`'s request."""
        if status in REFUSALS:
            row = self._row(name)
            row.refusals[status] += 1

    def snapshot(self, only: str | None = None) -> dict[str, dict[str, Any]]:
        """Every key's row (or only `only`'s), as plain dicts: what /info and a metrics exporter read."""
        names = [only] if only is not None else sorted(self.by_key)
        return {name: self._row(name).as_dict() for name in names}
