"""bench.serve's summary on hand-made rounds (imports Ray Serve, starts nothing): ratios per round
against that round's baseline, the no-op floor and latency budget, the busy flag from the envelope."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ray.serve")

from bench.serve import LEVELS, summarise


def one_round(base_tput: float, base_p50: float, rates: list[float], p50: float) -> dict[str, Any]:
    """One round as bench.serve records it: the in-process baseline, then the app."""
    return {
        "baseline": {"texts_per_s": base_tput, "match_single": {"p50_ms": base_p50}},
        "app": {
            "embeddings": [{"concurrency": lv, "req_per_s": r} for lv, r in zip(LEVELS, rates, strict=True)],
            "match_single": {"p50_ms": p50},
        },
    }


QUIET = {"start": {"busy": False}, "end": {"busy": False}}


def test_summary_takes_ratios_per_round_and_budgets_latency_from_the_noop_floor() -> None:
    apps = {
        "noop": {"rounds": [one_round(1, 1, [1] * 4, p) for p in (10.0, 12.0, 11.0)]},
        # The baseline halves in round 2 and the app with it: the per-round ratio stays 0.8.
        "inline": {
            "rounds": [
                one_round(100, 9, [90, 80, 80, 80], 30),
                one_round(50, 10, [45, 40, 40, 40], 25),
                one_round(80, 11, [72, 72, 72, 72], 28),
            ]
        },
        "graph": {"rounds": [one_round(100, 10, [60, 60, 60, 60], 20)] * 3},
    }
    summary = summarise(apps, QUIET)
    assert summary["noop_floor_match_p50_ms"] == 11.0
    assert "noop" not in summary
    inline = summary["inline"]
    assert inline["throughput_ratio_c4"] == {"median": 0.8, "min": 0.8, "max": 0.9}
    assert inline["throughput_target_met"] is True
    assert inline["match_p50_c1_ms"] == {"median": 28, "min": 25, "max": 30}
    assert inline["in_process_match_p50_ms"]["median"] == 10
    assert inline["match_p50_budget_ms"] == pytest.approx(10 + 1.2 * 11)  # 23.2: 28 ms is over it
    assert inline["latency_target_met"] is False
    graph = summary["graph"]
    assert graph["throughput_ratio_c32"]["median"] == 0.6 and graph["throughput_target_met"] is False
    assert graph["latency_target_met"] is True
    assert summary["machine_was_busy"] is False


def test_summary_without_noop_has_no_budget_and_reads_busy_from_the_envelope() -> None:
    apps = {"inline": {"rounds": [one_round(100, 9, [90, 80, 80, 80], 30)]}}
    busy_at_end = {"start": {"busy": False}, "end": {"busy": True}}
    summary = summarise(apps, busy_at_end)
    assert summary["noop_floor_match_p50_ms"] is None
    assert "match_p50_budget_ms" not in summary["inline"] and "latency_target_met" not in summary["inline"]
    assert summary["machine_was_busy"] is True
