"""bench.index: a tiny `latency` run (no Ray, a few seconds) writes per-factory median/min/max,
per-round speed-ups against Flat, the machine envelope, and factories alternating in rotating order;
`scale --merge` on hand-made files (no build): runs of other sizes survive a merge, every
invocation's envelope stays in `loads`, old files still merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.index.latency import main
from bench.index.scale import load_entry, markdown_table, merge

SPREAD_KEYS = ("single_query_ms", "batch64_query_ms", "single_speedup_vs_flat", "batch64_speedup_vs_flat")


@pytest.mark.slow  # about 2 s: out of the fast tier (docs/development.md)
def test_tiny_index_bench_reports_spread_envelope_and_rotating_rounds(tmp_path: Path) -> None:
    out = tmp_path / "index.json"
    main(["--sizes", "2000", "--dim", "16", "--rounds", "2", "--out", str(out)])
    data = json.loads(out.read_text(encoding="utf-8"))

    # The envelope: the command as run, the machine with its CPU flags, load/steal at start and end.
    assert data["command"].startswith("python -m bench.index latency") and "--rounds 2" in data["command"]
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


START = {"loadavg_1m": 0.2, "steal_fraction": 0.0, "busy": False}
END = {"loadavg_1m": 2.1, "steal_fraction": 0.0, "busy": False}


def env(command: str) -> dict[str, Any]:
    """What bench.runner.Benchmark.finish() returns."""
    return {"command": command, "machine": {"cpu_model": "test CPU"}, "load": {"start": START, "end": END}}


def run(n: int, build_seconds: float) -> dict[str, Any]:
    """One size's run as `bench.index scale` records it (what the table reads)."""
    return {
        "n": n,
        "auto_factory": "IVF4096,Flat",
        "measured_at": "2026-01-01T00:00:00Z",
        "factories": [
            {
                "factory": "IVF4096,Flat",
                "build_seconds": build_seconds,
                "index_rss_bytes": 2**30,
                "build_peak_rss_bytes": 2 * 2**30,
                "recall_at_10": 0.97,
                "search_params": {"nprobe": 16},
                "single_query_ms": 0.3,
                "single_query_p95_ms": 0.5,
                "meets": {"index_bytes": True},
            }
        ],
    }


def test_load_entry_names_the_invocation() -> None:
    entry = load_entry([1_000_000], env("python -m bench.index scale --sizes 1000000"))
    assert entry == {
        "sizes": [1_000_000],
        "command": "python -m bench.index scale --sizes 1000000",
        "cpu_model": "test CPU",
        "start": START,
        "end": END,
    }


def test_without_an_earlier_file_the_history_is_this_run() -> None:
    runs, loads = merge(None, [run(1_000_000, 100.0)], {"sizes": [1_000_000]})
    assert [r["n"] for r in runs] == [1_000_000]
    assert loads == [{"sizes": [1_000_000]}]


def test_merge_replaces_the_sizes_measured_again_and_appends_the_envelope() -> None:
    earlier = {
        "runs": [run(1_000_000, 100.0), run(10_000_000, 600.0)],
        "loads": [{"sizes": [1_000_000, 10_000_000], "start": START, "end": END}],
    }
    entry = load_entry([10_000_000], env("python -m bench.index scale --sizes 10000000 --merge"))
    runs, loads = merge(earlier, [run(10_000_000, 540.0)], entry)
    assert [(r["n"], r["factories"][0]["build_seconds"]) for r in runs] == [
        (1_000_000, 100.0),
        (10_000_000, 540.0),
    ]
    assert loads == [earlier["loads"][0], entry]
    assert "| 10M | `IVF4096,Flat` (auto) | 540 s |" in markdown_table({"runs": runs})


def test_a_file_from_before_the_load_history_still_merges() -> None:
    old = {"runs": [run(3_000_000, 300.0)], "load": {"start": START, "end": END}}
    _, loads = merge(old, [run(1_000_000, 90.0)], {"sizes": [1_000_000]})
    assert loads == [{"sizes": [3_000_000], "start": START, "end": END}, {"sizes": [1_000_000]}]
