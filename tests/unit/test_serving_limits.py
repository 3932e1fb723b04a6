"""The serving limits hold the promise their comments make: on the smallest supported node, the
largest request they admit, and a full queue of admitted work, finish inside the request timeout."""

from __future__ import annotations

from service.config import SMALLEST_NODE_TOKENS_PER_S, ServingConfig


def test_the_largest_admitted_request_and_a_full_queue_finish_inside_the_timeout() -> None:
    cfg = ServingConfig()
    assert cfg.max_request_tokens / SMALLEST_NODE_TOKENS_PER_S < cfg.request_timeout_s
    # Round-robin scheduling: the last admitted request waits for at most the whole queue.
    assert cfg.max_queued_tokens / SMALLEST_NODE_TOKENS_PER_S < cfg.request_timeout_s
    # A request larger than the queue could never be admitted.
    assert cfg.max_request_tokens <= cfg.max_queued_tokens
