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
