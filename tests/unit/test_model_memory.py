"""A replica's per-model memory: measured load costs, and a budget that refuses a load with the numbers."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from engine.errors import ModelMemoryRefused
from engine.model_memory import ModelMemory, artifact_bytes, rss_bytes
from service.errors import error_payload


def touched(size: int) -> mmap.mmap:
    """`size` bytes of fresh anonymous memory, every page written: RSS a model load would add.

    mmap, not numpy: the allocator may hand a numpy array pages an earlier test freed, which are
    resident already and grow nothing.
    """
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_a_load_is_measured_and_a_load_past_the_budget_is_refused_naming_the_numbers(
    tiny_artifact: Path,
) -> None:
    memory = ModelMemory()
    with memory.loading("big", str(tiny_artifact)):
        held = touched(40_000_000)
    assert memory.measured["big"] >= 35_000_000
    assert memory.status()["model_bytes"] == {"big": memory.measured["big"]}
    # A budget just above what the process holds now: "big" (its measured cost) no longer fits.
    tight = ModelMemory(budget_bytes=rss_bytes() + 10_000_000)
    tight.measured["big"] = memory.measured["big"]
    refused = r"model 'big' needs about \d+ MB.*budget \(model_memory_bytes"
    with pytest.raises(ModelMemoryRefused, match=refused), tight.loading("big", str(tiny_artifact)):
        pass
    assert "big" not in tight.resident
    status, body, headers = error_payload(ModelMemoryRefused("model 'big' needs about 40 MB"), "openai")
    assert status == 503 and "needs about 40 MB" in body["error"]["message"] and headers["Retry-After"]
    held.close()


def test_a_model_never_loaded_is_estimated_from_its_files_and_forgetting_keeps_its_cost(
    tiny_artifact: Path,
) -> None:
    memory = ModelMemory()
    assert memory.estimate("tiny", str(tiny_artifact)) >= artifact_bytes(str(tiny_artifact)) > 0
    with memory.loading("tiny", str(tiny_artifact)):
        held = touched(20_000_000)
    memory.forget("tiny")  # evicted: no longer resident, but a reload is estimated by what it took
    assert memory.status()["model_bytes"] == {}
    assert memory.estimate("tiny", str(tiny_artifact)) == memory.measured["tiny"] >= 15_000_000
    held.close()
