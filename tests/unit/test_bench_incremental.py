"""bench.incremental's summaries on hand-made rounds (imports Ray, starts nothing): full and
incremental runs alternate in rotating order, ratios are taken per round, the old keys hold the
medians, and the index phase keeps `update` / `full_build` / `full_over_update` as earlier files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from bench.incremental import index_phase, round_orders, summarise_embed, summarise_index


def embed_run(wall: float, reused: int = 0) -> dict[str, Any]:
    """One embed() summary as bench.incremental records it (the fields that matter here)."""
    return {"rows_embedded": 1000 - reused, "rows_reused": reused, "wall_seconds": wall}


def test_round_orders_rotate_so_no_run_always_goes_first() -> None:
    assert round_orders(["full", "incremental"], 3) == [
        ["full", "incremental"],
        ["incremental", "full"],
        ["full", "incremental"],
    ]


def test_embed_summary_takes_ratios_per_round_and_keeps_the_old_keys() -> None:
    # Round 2 ran on a machine twice as slow for both runs: its ratio is still 4, not a mix of rounds.
    runs = {
        "full": [embed_run(40.0), embed_run(80.0), embed_run(30.0)],
        "incremental": [embed_run(10.0, 990), embed_run(20.0, 990), embed_run(10.0, 990)],
    }
    orders = round_orders(list(runs), 3)
    out = summarise_embed(runs, orders)

    assert out["full_over_incremental"] == {"median": 4.0, "min": 3.0, "max": 4.0}
    assert out["incremental_over_full"] == {"median": 0.25, "min": 0.25, "max": 0.333}
    assert out["full_over_incremental_median"] == 4.0  # the key docs and earlier files read
    assert out["full_wall_seconds"] == {"median": 40.0, "min": 30.0, "max": 80.0}
    assert out["incremental_wall_seconds"] == {"median": 10.0, "min": 10.0, "max": 20.0}
    # The per-round pairs, as the committed files hold them, with the order each round ran in.
    assert [r["full_over_incremental"] for r in out["rounds"]] == [4.0, 4.0, 3.0]
    assert [r["order"] for r in out["rounds"]] == orders
    assert out["rounds"][1]["full"]["wall_seconds"] == 80.0
    assert out["rounds"][1]["incremental"]["rows_reused"] == 990


def test_index_summary_keeps_update_and_full_build_with_median_seconds() -> None:
    update = [
        {
            "mode": "update",
            "reason": "",
            "counts": {"rows_changed": 200},
            "wall_seconds": s,
            "recall_at_10": 0.99,
        }
        for s in (2.0, 2.5, 1.0)
    ]
    full = [{"wall_seconds": s, "recall_at_10": 1.0, "search_params": {"nprobe": 8}} for s in (4.0, 4.0, 3.0)]
    out = summarise_index({"update": update, "full_build": full}, round_orders(["update", "full_build"], 3))

    assert out["update"]["wall_seconds"] == 2.0 and out["update"]["mode"] == "update"
    assert out["update"]["wall_seconds_spread"] == {"median": 2.0, "min": 1.0, "max": 2.5}
    assert out["full_build"]["wall_seconds"] == 4.0 and out["full_build"]["search_params"] == {"nprobe": 8}
    # Per-round ratios 2.0, 1.6, 3.0: the median of those, not 4.0 / 2.0 of the medians by chance.
    assert out["full_over_update"] == 2.0
    assert out["full_over_update_spread"] == {"median": 2.0, "min": 1.6, "max": 3.0}
    assert [r["full_over_update"] for r in out["rounds"]] == [2.0, 1.6, 3.0]
    assert out["rounds"][1]["order"] == ["full_build", "update"]


def test_every_index_round_updates_from_day_one(tmp_path: Path) -> None:
    # A real, tiny index phase (FAISS only, no Ray, about a second): without CURRENT pointed back
    # at day one, round 2's update would find nothing to change.
    out = index_phase(5000, 0.01, 0.0, 0.0, 16, tmp_path, rounds=2)
    for r in out["rounds"]:
        assert r["update"]["mode"] == "update" and r["update"]["current_flipped"] is True
        assert r["update"]["counts"]["rows_changed"] == 50
    assert [r["order"] for r in out["rounds"]] == [["update", "full_build"], ["full_build", "update"]]
    assert (
        out["full_over_update_spread"]["min"]
        <= out["full_over_update"]
        <= out["full_over_update_spread"]["max"]
    )
