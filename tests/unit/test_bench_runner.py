"""bench.runner: the command a result records, its envelope, and ratios taken per round (one
1-second load snapshot each, no Ray)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.runner import Benchmark, command_line, ratios


def test_command_line_uses_the_given_args_or_the_process_args(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command_line("bench.bulk", ["--rows", "1000"]) == "python -m bench.bulk --rows 1000"
    assert command_line("bench.bulk", []) == "python -m bench.bulk"
    monkeypatch.setattr(sys, "argv", ["bench/bulk.py", "--rounds", "2"])
    assert command_line("bench.bulk") == "python -m bench.bulk --rounds 2"


@pytest.mark.slow  # about 2 s: out of the fast tier (docs/development.md)
def test_a_report_starts_with_the_command_machine_and_load_at_both_ends(tmp_path: Path) -> None:
    bench = Benchmark("example", "An example.", command="bench.index latency")
    bench.flags(rounds=3, out=tmp_path / "default.json")
    args = bench.start(["--rounds", "2"])
    assert args.rounds == 2 and args.out == tmp_path / "default.json"
    bench.report({"figure": 1.0}, args.out, own_load=1.0)
    data = json.loads(args.out.read_text(encoding="utf-8"))
    assert list(data)[:6] == ["benchmark", "created_at", "command", "machine", "load", "busy"]
    assert data["benchmark"] == "example" and data["figure"] == 1.0
    assert data["command"] == "python -m bench.index latency --rounds 2"
    assert isinstance(data["machine"]["cpu_flags"], list)
    assert data["load"]["end"]["own_load_allowed"] == 1.0
    assert data["busy"] == (data["load"]["start"]["busy"] or data["load"]["end"]["busy"])


def test_ratios_are_taken_per_round_not_between_medians() -> None:
    # Round 2 ran on a slow machine for both engines: its ratio is 5, not a mix of rounds.
    assert ratios([1.0, 10.0, 4.0], [1.0, 2.0, 4.0], digits=2) == {"median": 1.0, "min": 1.0, "max": 5.0}
