"""Fair share of the scheduler's lanes: a flooding key cannot make another key's request wait.

The model is a forward that holds the flood's passes inside the call until the test lets them
go, so "the quiet request finished while the flood's pass was still running" is an ordering the
test controls, not a timing it hopes for.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from embedder.batches import HiddenStates, TokenBatch
from embedder.config import BatchConfig
from embedder.handoff import TokenPack
from engine.scheduler import Lanes, ModelScheduler, SchedulerConfig

FLOOD = 100  # flood texts' token ids start here; the quiet key's text is id 7
WAIT_S = 10.0  # only a bound for a broken scheduler; passing runs never wait for it


class HeldFlood:
    """A forward that records each call's texts (first token id) and blocks flood calls until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.flood_entered = threading.Event()
        self.release = threading.Event()
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, batch: TokenBatch) -> HiddenStates:
        texts = [int(row[0]) for row in batch.input_ids]
        with self.lock:
            self.calls.append(texts)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if any(t >= FLOOD for t in texts):
                self.flood_entered.set()
                assert self.release.wait(WAIT_S), "the test never released the flood"
        finally:
            with self.lock:
                self.running -= 1
        h = np.repeat(batch.input_ids[..., None].astype(np.float32), 2, axis=2)
        return HiddenStates(h, batch.attention_mask, batch.positions)


def pack(first: list[int], length: int = 10) -> TokenPack:
    ids = np.concatenate([np.full(length, i, np.int32) for i in first])
    lengths = np.full(len(first), length, np.int32)
    return TokenPack(ids, None, lengths, lengths.astype(np.int64))


def flood_packs(n: int = 10) -> list[TokenPack]:
    """`n` requests of four 10-token texts: with a 40-token pass, one pass each."""
    return [pack([FLOOD + 4 * r + i for i in range(4)]) for r in range(n)]


def config(workers: int) -> SchedulerConfig:
    return SchedulerConfig(40, BatchConfig(40, 4), workers=workers)


async def flood_running(model: HeldFlood, sched: ModelScheduler) -> list[asyncio.Task[np.ndarray]]:
    """The flood's requests queued and its first pass inside the model."""
    tasks = [asyncio.create_task(sched.submit(p, "flood")) for p in flood_packs()]
    assert await asyncio.to_thread(model.flood_entered.wait, WAIT_S)
    return tasks


def test_a_quiet_request_runs_beside_the_flood_in_a_pass_of_its_own() -> None:
    model = HeldFlood()
    sched = ModelScheduler(model, 0, pooled=False, config=config(workers=2))

    async def main() -> None:
        floods = await flood_running(model, sched)
        # The flood's pass is held inside the model and nine more of its requests are queued;
        # the quiet key's question still comes back.
        out = await asyncio.wait_for(sched.submit(pack([7]), "quiet"), WAIT_S)
        assert np.array_equal(out[:, 0], np.full(10, 7.0))
        assert not any(t.done() for t in floods)  # all of the flood's work is still to finish
        model.release.set()
        await asyncio.gather(*floods)

    asyncio.run(main())
    assert [7] in model.calls  # its pass held its own text, none of the flood's
    assert sum(7 in call for call in model.calls) == 1
    ran = sorted(t for call in model.calls for t in call)
    assert ran == sorted([7, *range(FLOOD, FLOOD + 40)])  # every text exactly once


def test_one_key_alone_runs_one_full_pass_at_a_time() -> None:
    model = HeldFlood()
    model.release.set()  # nothing held: only how passes are cut and overlapped matters here
    sched = ModelScheduler(model, 0, pooled=False, config=config(workers=2))

    async def main() -> None:
        await asyncio.gather(*(sched.submit(p, "flood") for p in flood_packs()))

    asyncio.run(main())
    # One pass at a time: the second lane stays free for another key, and since the session of a
    # lane has all the cores' threads, a second pass of the same key would only split them.
    assert model.most == 1
    assert sorted(len(call) for call in model.calls) == [4] * 10  # every pass at its full budget


def test_with_one_lane_a_quiet_request_waits_for_the_pass_in_progress_and_shares_the_next() -> None:
    model = HeldFlood()
    sched = ModelScheduler(model, 0, pooled=False, config=config(workers=1))

    async def main() -> None:
        floods = await flood_running(model, sched)
        quiet = asyncio.create_task(sched.submit(pack([7]), "quiet"))
        await asyncio.sleep(0.05)  # a chance to run, if a lane were free; none is
        assert not quiet.done()
        model.release.set()
        await quiet
        await asyncio.gather(*floods)

    asyncio.run(main())
    # No lane can be kept free with one: the question went into the next pass, round-robin with
    # the flood's texts (at most one pass of waiting, however much the flood queued).
    assert 7 in model.calls[1] and len(model.calls[1]) == 4


def test_lanes_shared_by_two_models_keep_a_lane_for_another_key_across_them() -> None:
    model = HeldFlood()
    shared = Lanes(2)
    big, small = (ModelScheduler(model, 0, pooled=False, config=config(workers=2)) for _ in range(2))
    big.gate = small.gate = shared

    async def main() -> None:
        floods = [asyncio.create_task(big.submit(p, "flood")) for p in flood_packs()]
        floods += [asyncio.create_task(small.submit(p, "flood")) for p in flood_packs(2)]
        assert await asyncio.to_thread(model.flood_entered.wait, WAIT_S)
        out = await asyncio.wait_for(small.submit(pack([7]), "quiet"), WAIT_S)
        assert np.array_equal(out[:, 0], np.full(10, 7.0))
        assert model.running == 1  # the flood's one pass, across both models' schedulers
        model.release.set()
        await asyncio.gather(*floods)

    asyncio.run(main())
    assert [7] in model.calls
    assert model.most <= 2  # the replica's two lanes, across its models
