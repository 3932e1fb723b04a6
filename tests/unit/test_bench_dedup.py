"""bench.dedup's result file from a hand-made envelope (no Ray): the envelope's keys replace the old
hand-written load fields, and `busy` (cited by docs/jobs.md) follows the envelope or --busy."""

from __future__ import annotations

from typing import Any

from bench.dedup import DEFAULT_SIZES, parse_args, summarise


def envelope(start_busy: bool, end_busy: bool) -> dict[str, Any]:
    """What bench.harness.Envelope.finish() returns, reduced to what the summary reads."""
    load = {"loadavg_1m": 0.3, "steal_fraction": 0.0}
    return {
        "command": "python -m bench.dedup --sizes 1000",
        "machine": {"cpu_model": "test CPU", "cpu_flags": ["avx2"]},
        "load": {"start": {**load, "busy": start_busy}, "end": {**load, "busy": end_busy}},
    }


RUN = {"factory_asked": "auto", "rows": 1000, "wall_seconds": 2.0, "pairs": 10}


def test_quiet_run_records_the_envelope_not_the_old_load_fields() -> None:
    out = summarise(parse_args(["--sizes", *map(str, DEFAULT_SIZES)]), envelope(False, False), [RUN])
    assert out["command"] == "python -m bench.dedup --sizes 1000"
    assert out["machine"]["cpu_flags"] == ["avx2"]
    assert set(out["load"]) == {"start", "end"}
    assert "load_average_start" not in out and "load_average_end" not in out
    assert out["busy"] is False and out["note"] == ""
    assert out["runs"] == [RUN]
    assert out["driver_max_rss_bytes"] > 0
    assert "out" not in out["config"] and out["config"]["sizes"] == list(DEFAULT_SIZES)


def test_busy_at_either_end_or_forced_is_flagged_and_noted() -> None:
    args = parse_args(["--sizes", "1000"])
    for env in (envelope(True, False), envelope(False, True)):
        out = summarise(args, env, [RUN])
        assert out["busy"] is True
        assert out["note"].startswith("taken on a busy shared machine")
        assert "only sizes [1000] were run" in out["note"]
    forced = summarise(parse_args(["--sizes", "1000", "--busy"]), envelope(False, False), [RUN])
    assert forced["busy"] is True
