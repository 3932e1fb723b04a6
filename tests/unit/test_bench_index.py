"""bench.index on the harness: a tiny run (no Ray, a few seconds) writes per-factory median/min/max,
per-round speed-ups against Flat, the machine envelope, and factories alternating in rotating order."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import ratios
from bench.index import main

SPREAD_KEYS = ("single_query_ms", "batch64_query_ms", "single_speedup_vs_flat", "batch64_speedup_vs_flat")


def test_tiny_index_bench_reports_spread_envelope_and_rotating_rounds(tmp_path: Path) -> None:
    out = tmp_path / "index.json"
    main(["--sizes", "2000", "--dim", "16", "--rounds", "2", "--out", str(out)])
    data = json.loads(out.read_text(encoding="utf-8"))

    # The envelope: the command as run, the machine with its CPU flags, load/steal at start and end.
    assert data["command"].startswith("python -m bench.index") and "--rounds 2" in data["command"]
    assert isinstance(data["machine"]["cpu_flags"], list) and data["machine"]["cpu_count"] >= 1
    for when in ("start", "end"):
        assert {"loadavg_1m", "steal_fraction", "busy"} <= set(data["load"][when])
    assert "cpu" not in data  # the old hand-written machine info is gone
    # FAISS's own build facts stay, in the config.
    assert data["config"]["faiss"]["faiss"] and data["config"]["faiss"]["threads"] >= 1
    assert data["config"]["rounds"] == 2

    (run,) = data["runs"]
    factories = list(run["factories"])
    assert factories[0] == "Flat" and len(factories) == 3
    first, second = run["round_orders"]
    assert sorted(first) == sorted(second) == sorted(factories)
    assert second == first[1:] + first[:1]  # the order rotated: no factory always goes first

    for name, row in run["factories"].items():
        for key in SPREAD_KEYS:
            spread = row[f"{key}_spread"]
            assert spread["min"] <= spread["median"] <= spread["max"], (name, key, spread)
            assert row[key] == spread["median"]  # the key docs and earlier results read
        assert len(row["single_query_ms_rounds"]) == len(row["batch64_query_ms_rounds"]) == 2
        assert row["recall_at_10"] > 0.9 and row["bytes_per_vector"] > 0
    flat = run["factories"]["Flat"]
    assert flat["single_speedup_vs_flat"] == flat["batch64_speedup_vs_flat"] == flat["build_vs_flat"] == 1.0


def test_ratios_are_taken_per_round_not_between_medians() -> None:
    # Round 2 ran on a slow machine for both engines: its ratio is 5, not a mix of rounds.
    assert ratios([1.0, 10.0, 4.0], [1.0, 2.0, 4.0], digits=2) == {"median": 1.0, "min": 1.0, "max": 5.0}
