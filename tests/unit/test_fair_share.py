"""Fair share by key: admission's in-flight slots and queued tokens, and the model scheduler's passes."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import numpy as np
import pytest

from embedder.batches import HiddenStates, TokenBatch
from embedder.config import BatchConfig
from embedder.handoff import TokenPack
from engine.scheduler import ModelScheduler, SchedulerConfig
from service.admission import Admission
from service.errors import Overloaded


def admitted(adm: Admission, key: str, n: int, stack: ExitStack) -> int:
    """How many of `n` slot requests by `key` are admitted (held until the stack closes)."""
    got = 0
    for _ in range(n):
        try:
            stack.enter_context(adm.request(key))
            got += 1
        except Overloaded as exc:
            assert exc.retry_after == 3
    return got


def test_one_key_alone_may_use_every_slot() -> None:
    adm = Admission(8, 1000, 3)
    adm.weights = {"a": 1}
    with ExitStack() as stack:
        assert admitted(adm, "a", 10, stack) == 8


def test_a_flooding_key_leaves_room_and_gets_the_429s() -> None:
    adm = Admission(8, 1000, 3)
    adm.weights = {"a": 1, "b": 1, "c": 1}
    with ExitStack() as stack:
        # Alone, a may take its share against one kept-free share: 8 * 1 / (1 + 1).
        assert admitted(adm, "a", 20, stack) == 4
        assert admitted(adm, "b", 1, stack) == 1  # b's first request finds room
        assert adm.in_flight == 5
        # b may grow to its share against a and the room kept for c: 8 / 3.
        assert admitted(adm, "b", 5, stack) == 1
        assert admitted(adm, "a", 1, stack) == 0
    assert adm.in_flight == 0 and not adm.slots_held


def test_weights_set_the_shares() -> None:
    adm = Admission(12, 1000, 3)
    adm.weights = {"big": 3, "small": 1}
    with ExitStack() as stack:
        assert admitted(adm, "small", 1, stack) == 1
        assert admitted(adm, "big", 20, stack) == 9  # 12 * 3 / 4
        assert admitted(adm, "small", 20, stack) == 2  # its share is 3, it held 1


def test_queued_tokens_are_shared_by_key_and_a_first_request_always_fits() -> None:
    adm = Admission(100, 1000, 3)
    adm.weights = {"a": 1, "b": 1}
    with ExitStack() as stack:
        stack.enter_context(adm.tokens(400, "a"))
        with pytest.raises(Overloaded, match="fair share"):
            stack.enter_context(adm.tokens(200, "a"))  # 600 > 1000 / 2
        stack.enter_context(adm.tokens(550, "b"))  # b's first: only the replica's total counts
        with pytest.raises(Overloaded, match="the model queue holds 950 tokens"):
            stack.enter_context(adm.tokens(60, "c"))
    assert adm.queued_tokens == 0 and not adm.tokens_held


class Recording:
    """A model whose hidden state is the token id; remembers each call's first tokens."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, batch: TokenBatch) -> HiddenStates:
        self.calls.append([int(row[0]) for row in batch.input_ids])
        h = np.repeat(batch.input_ids[..., None].astype(np.float32), 2, axis=2)
        return HiddenStates(h, batch.attention_mask, batch.positions)


def pack(first: list[int], length: int) -> TokenPack:
    ids = np.concatenate([np.full(length, i, np.int32) for i in first])
    lengths = np.full(len(first), length, np.int32)
    return TokenPack(ids, None, lengths, lengths.astype(np.int64))


def test_a_keys_one_text_request_joins_the_next_pass_whatever_another_key_queued() -> None:
    model = Recording()
    # One lane (nothing kept free): the round-robin alone bounds b's wait. With two lanes b's pass
    # runs beside a's at once (tests/unit/test_fair_lanes.py).
    config = SchedulerConfig(40, BatchConfig(40, 4), workers=1)
    sched = ModelScheduler(model, 0, pooled=False, config=config)
    # Key a: ten requests of four 10-token texts; a pass holds four texts. Request by request
    # alone (no key dimension), b's text would wait behind every one of them (ten passes).
    floods = [pack([100 + 4 * r + i for i in range(4)], 10) for r in range(10)]

    async def main() -> tuple[int, int]:
        tasks = [asyncio.create_task(sched.submit(p, "a")) for p in floods]
        await asyncio.sleep(0)  # queued, the first pass started
        started = sched.passes
        out = await sched.submit(pack([7], 10), "b")
        waited = sched.passes - started
        assert np.array_equal(out[:, 0], np.full(10, 7.0))
        await asyncio.gather(*tasks)
        return waited, sched.passes

    waited, total = asyncio.run(main())
    assert waited <= 2 and total >= 10
    ran = sorted(t for call in model.calls for t in call)
    assert ran == sorted([7, *range(100, 140)])  # every text exactly once


def test_weights_give_a_key_more_texts_per_turn() -> None:
    model = Recording()
    # One lane: every pass after the first is shared by both keys (with a free lane each would
    # get a pass of its own, see the lane tests below).
    config = SchedulerConfig(40, BatchConfig(40, 4), workers=1)
    sched = ModelScheduler(model, 0, pooled=False, config=config)

    async def main() -> None:
        heavy = asyncio.create_task(sched.submit(pack(list(range(100, 116)), 10), "heavy", 3))
        light = asyncio.create_task(sched.submit(pack(list(range(200, 212)), 10), "light", 1))
        await asyncio.gather(heavy, light)

    asyncio.run(main())
    # The first pass started as heavy's request arrived, alone; then passes of four texts share
    # 3:1 while both keys have texts left.
    first_passes = [sorted(call) for call in model.calls[1:4]]
    for texts in first_passes:
        assert sum(t >= 200 for t in texts) == 1 and len(texts) == 4, model.calls
