"""bench.fairness on hand-made phases (starts nothing): the goal items, and flood bodies of the asked size."""

from __future__ import annotations

from typing import Any

from bench.fairness import flood_body, goals


def phases(alone_p99: float, flood_p99: float, **flood: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    counts = {"statuses": {200: 10, 429: 5}, "timeouts": 0, "429_without_retry_after": 0, **flood}
    quiet = {"statuses": {200: 100}, "p99_ms": flood_p99}
    return {"quiet": {"statuses": {200: 100}, "p99_ms": alone_p99}}, {"quiet": quiet, "flood": counts}


def test_the_goal_is_met_only_when_every_item_holds() -> None:
    assert goals(*phases(10.0, 29.0))["met"]
    slow = goals(*phases(10.0, 31.0))
    assert slow["quiet_p99_ratio"] == 3.1 and not slow["quiet_p99_within_3x"] and not slow["met"]
    assert not goals(*phases(10.0, 20.0, timeouts=1))["met"]
    assert not goals(*phases(10.0, 20.0, **{"429_without_retry_after": 1}))["met"]
    assert not goals(*phases(10.0, 20.0, statuses={200: 10}))[
        "met"
    ]  # a flood never refused: no fair share seen


def test_a_flood_body_carries_the_asked_tokens_in_full_length_texts() -> None:
    body = flood_body(2048, 256)
    assert len(body["input"]) == 8 and len(body["input"][0].split()) > 256  # each text is cut at 256 tokens
    assert len(flood_body(2048, 24)["input"]) == 86
