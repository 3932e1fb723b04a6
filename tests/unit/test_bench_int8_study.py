"""bench.int8_study's speed summary on hand-made round times (no model): speed relative to the fp32
artifact and to sentence-transformers as per-round ratios, under the committed file's keys."""

from __future__ import annotations

from bench.int8_study import summarise_speed

ST = "sentence_transformers_torch"


def test_speed_ratios_are_per_round_seconds_over_the_engines() -> None:
    # Round 2 is slow for everything: the int8 engine is still 2x fp32 in it.
    seconds = {ST: [3.0, 6.0, 3.0], "fp32": [2.0, 4.0, 2.0], "int8": [1.0, 2.0, 2.0]}
    out = summarise_speed(seconds, sentences=200)
    int8 = out["int8"]
    assert int8["sentences_per_s_median"] == 100.0  # 200 texts / median 2.0 s
    assert int8["vs_fp32_median"] == 2.0 and int8["vs_fp32_spread"] == [1.0, 2.0]
    assert int8["vs_sentence_transformers_median"] == 3.0
    assert int8["vs_sentence_transformers_spread"] == [1.5, 3.0]
    assert out["fp32"]["vs_fp32_median"] == 1.0 and out["fp32"]["vs_fp32_spread"] == [1.0, 1.0]
    assert out[ST]["vs_sentence_transformers_median"] == 1.0
