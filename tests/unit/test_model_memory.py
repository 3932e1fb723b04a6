"""A replica's per-model memory: measured load costs, and a budget that refuses a load with the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelMemoryRefused
from engine.model_memory import ModelMemory, artifact_bytes, rss_bytes
from service.errors import error_payload


def test_a_load_is_measured_and_a_load_past_the_budget_is_refused_naming_the_numbers(tiny_artifact: Path) -> None:
    memory = ModelMemory()
    with memory.loading("big", str(tiny_artifact)):
        held = np.ones(40_000_000 // 8)  # 40 MB really touched: the RSS growth a load would show
    assert memory.measured["big"] >= 35_000_000
    assert memory.status()["model_bytes"] == {"big": memory.measured["big"]}
    # A budget just above what the process holds now: "big" (its measured cost) no longer fits.
    tight = ModelMemory(budget_bytes=rss_bytes() + 10_000_000)
    tight.measured["big"] = memory.measured["big"]
    with pytest.raises(ModelMemoryRefused, match=r"model 'big' needs about \d+ MB.*budget \(model_memory_bytes"):
        with tight.loading("big", str(tiny_artifact)):
            pass
    assert "big" not in tight.resident
    status, body, headers = error_payload(ModelMemoryRefused("model 'big' needs about 40 MB"), "openai")
    assert status == 503 and "needs about 40 MB" in body["error"]["message"] and headers["Retry-After"]
    del held


def test_a_model_never_loaded_is_estimated_from_its_files_and_forgetting_keeps_its_cost(tiny_artifact: Path) -> None:
    memory = ModelMemory()
    assert memory.estimate("tiny", str(tiny_artifact)) >= artifact_bytes(str(tiny_artifact)) > 0
    with memory.loading("tiny", str(tiny_artifact)):
        held = np.ones(20_000_000 // 8)
    memory.forget("tiny")  # evicted: no longer resident, but a reload is estimated by what it took
    assert memory.status()["model_bytes"] == {}
    assert memory.estimate("tiny", str(tiny_artifact)) == memory.measured["tiny"] >= 15_000_000
    del held
