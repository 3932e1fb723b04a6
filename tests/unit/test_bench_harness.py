"""bench.harness's command line and partial envelope (one 1-second load snapshot, no Ray)."""

from __future__ import annotations

import sys

import pytest

from bench.harness import Envelope, command_line


def test_command_line_uses_the_given_args_or_the_process_args(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command_line("bench.dedup", ["--sizes", "1000"]) == "python -m bench.dedup --sizes 1000"
    assert command_line("bench.dedup", []) == "python -m bench.dedup"
    monkeypatch.setattr(sys, "argv", ["bench/dedup.py", "--busy"])
    assert command_line("bench.dedup") == "python -m bench.dedup --busy"


def test_so_far_holds_the_start_and_finish_adds_the_end() -> None:
    envelope = Envelope("python -m bench.example")
    partial = envelope.so_far()
    assert partial["command"] == "python -m bench.example"
    assert isinstance(partial["machine"]["cpu_flags"], list)
    assert list(partial["load"]) == ["start"] and "busy" in partial["load"]["start"]
    done = envelope.finish(own_load=1.0)
    assert done["load"]["start"] == partial["load"]["start"]
    assert done["load"]["end"]["own_load_allowed"] == 1.0
