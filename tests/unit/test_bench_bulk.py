"""bench.bulk's round summary on hand-made rounds (imports Ray, starts nothing): rows/s per engine
as median/min/max, job time over plain-loop time and bf16 over fp32 as per-round ratios."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from bench.bulk import summarise_rounds


def runs_of(rates: list[float]) -> list[dict[str, float]]:
    return [{"rows_per_second": r, "wall_seconds": 10_000 / r} for r in rates]


def test_ratios_are_per_round_and_keep_the_committed_keys() -> None:
    # Round 2 is slow for every engine: the per-round ratio does not move with it.
    runs = {
        "plain_loop": runs_of([450.0, 225.0, 440.0]),
        "job_1_actor": runs_of([400.0, 200.0, 400.0]),
        "job_2_actors": runs_of([500.0, 250.0, 400.0]),
        "job_1_actor_bf16": runs_of([800.0, 300.0, 400.0]),
    }
    out = summarise_rounds(runs)
    assert out["plain_loop"]["rows_per_second"] == {"median": 440.0, "min": 225.0, "max": 450.0}
    assert out["plain_loop"]["runs"] == runs["plain_loop"]
    assert out["plain_over_job"]["job_2_actors"] == {"median": 0.9, "min": 0.9, "max": 1.1}
    assert out["plain_over_job"]["job_1_actor"] == {"median": 1.125, "min": 1.1, "max": 1.125}
    assert set(out["plain_over_job"]) == {"job_1_actor", "job_2_actors", "job_1_actor_bf16"}
    assert out["bf16_job_over_fp32_job"] == {"median": 1.5, "min": 1.0, "max": 2.0}


def test_without_both_one_actor_jobs_there_is_no_bf16_ratio() -> None:
    out = summarise_rounds({"plain_loop": runs_of([450.0]), "job_2_actors": runs_of([500.0])})
    assert "bf16_job_over_fp32_job" not in out
    assert out["plain_over_job"] == {"job_2_actors": {"median": 0.9, "min": 0.9, "max": 0.9}}
