"""Several models in one replica share its passes: a gate bounds how many run at once across them."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from embedder.batches import HiddenStates, TokenBatch
from embedder.config import BatchConfig
from embedder.handoff import TokenPack
from engine.scheduler import Lanes, ModelScheduler, SchedulerConfig


class Overlap:
    """A forward that takes a few ms and records the most calls that ran at the same time."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, batch: TokenBatch) -> HiddenStates:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.005)
        with self.lock:
            self.running -= 1
        h = np.repeat(batch.input_ids[..., None].astype(np.float32), 2, axis=2)
        return HiddenStates(h, batch.attention_mask, batch.positions)


def pack(value: int, length: int = 8) -> TokenPack:
    lengths = np.array([length], np.int32)
    return TokenPack(np.full(length, value, np.int32), None, lengths, lengths.astype(np.int64))


def most_overlapping_passes(gate: int | None) -> tuple[int, list[np.ndarray]]:
    forward = Overlap()
    config = SchedulerConfig(8, BatchConfig(8, 1))  # one text per pass: many passes
    models = [ModelScheduler(forward, 0, pooled=False, config=config) for _ in range(2)]

    async def main() -> list[np.ndarray]:
        if gate is not None:
            shared = Lanes(gate)
            for m in models:
                m.gate = shared
        return await asyncio.gather(*(models[i % 2].submit(pack(i)) for i in range(24)))

    outs = asyncio.run(main())
    return forward.most, outs


def test_a_shared_gate_keeps_two_models_passes_from_overlapping_and_loses_no_request() -> None:
    most, outs = most_overlapping_passes(gate=1)
    assert most == 1
    assert [int(o[0, 0]) for o in outs] == list(range(24))  # each request got its own texts back
    ungated, _ = most_overlapping_passes(gate=None)
    assert ungated == 2  # without it, each model's scheduler runs its own pass at the same time
