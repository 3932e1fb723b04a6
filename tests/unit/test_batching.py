"""The batch planner: every text once, within budget, sorted so padding stays small."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.config import BatchConfig
from embedder.errors import EmptyInput, InvalidInput
from embedder.tokenize import check_texts, plan_batches, text_problem


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_covers_every_text_once_within_budget(seed: int) -> None:
    lengths = np.random.default_rng(seed).integers(1, 300, size=500)
    config = BatchConfig(batch_tokens=2048, max_batch_size=32)
    batches = plan_batches(lengths, config)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for batch in batches:
        width = lengths[batch].max()
        assert len(batch) <= 32
        assert len(batch) == 1 or len(batch) * width <= 2048


def test_plan_sorts_by_tokens_so_padding_is_small() -> None:
    lengths = np.random.default_rng(3).integers(1, 200, size=400)
    batches = plan_batches(lengths, BatchConfig(batch_tokens=4096, max_batch_size=64))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded <= 1.1 * lengths.sum()


def test_text_longer_than_budget_still_gets_its_own_batch() -> None:
    batches = plan_batches(np.array([5000, 3]), BatchConfig(batch_tokens=1000, max_batch_size=8))
    assert [b.tolist() for b in batches] == [[0], [1]]


def test_text_problems_name_the_element() -> None:
    assert text_problem("ok") is None
    assert text_problem(None) == "null text"
    assert "not a string" in str(text_problem(3))
    assert "empty" in str(text_problem(" \t\n"))
    with pytest.raises(EmptyInput, match=r"input\[1\]"):
        check_texts(["fine", "   "])
    with pytest.raises(InvalidInput, match=r"input\[0\].*not a string"):
        check_texts([42])  # type: ignore[list-item]


def test_plan_splits_a_mixed_pass_where_padding_costs_more_than_a_call() -> None:
    # A serving pass: 8 short and 8 long texts. Padding them all to the longest would waste
    # half the compute; two calls cost one call's overhead.
    lengths = np.array([12] * 8 + [60] * 8)
    batches = plan_batches(lengths, BatchConfig(batch_tokens=4096, max_batch_size=16, call_overhead_tokens=8))
    assert sorted(len(b) for b in batches) == [8, 8]
    assert all(len(set(lengths[b].tolist())) == 1 for b in batches)
    # With a call as expensive as the padding, one call is the cheaper plan.
    one = plan_batches(lengths, BatchConfig(batch_tokens=4096, max_batch_size=16, call_overhead_tokens=1000))
    assert len(one) == 1


def test_plan_cost_is_never_worse_than_greedy_filling() -> None:
    rng = np.random.default_rng(7)
    cfg = BatchConfig(batch_tokens=1024, max_batch_size=16, call_overhead_tokens=8)
    for _ in range(50):
        lengths = rng.integers(5, 130, size=int(rng.integers(1, 40)))
        planned = plan_batches(lengths, cfg)
        cost = sum(len(b) * lengths[b].max() + 8 for b in planned)
        order = np.argsort(-lengths, kind="stable")
        greedy, start = 0, 0
        while start < len(order):
            width = lengths[order[start]]
            fit = max(1, min(16, 1024 // width))
            greedy += min(fit, len(order) - start) * width + 8
            start += fit
        assert cost <= greedy
