"""bench.encoder's per-set summary on hand-made round times (no model): sentences/s as median and
spread, and the ratio to sentence-transformers taken per round, under the keys the plots and
the committed files use."""

from __future__ import annotations

from bench.encoder import summarise_set

ST = "sentence_transformers_torch"


def test_rates_and_per_round_ratios_under_the_committed_keys() -> None:
    # 100 texts, 3000 tokens. Round 2 is slow for both engines: its ratio is still 1.25.
    seconds = {ST: [1.0, 2.0, 1.25], "encoder_fp32": [0.8, 1.6, 0.5]}
    out = summarise_set(seconds, sentences=100, tokens=3000)
    fp32 = out["encoder_fp32"]
    assert fp32["sentences_per_s_rounds"] == [125.0, 62.5, 200.0]
    assert (fp32["sentences_per_s_median"], fp32["sentences_per_s_min"], fp32["sentences_per_s_max"]) == (
        125.0,
        62.5,
        200.0,
    )
    assert fp32["tokens_per_s_median"] == 3750.0  # 125 texts/s x 30 tokens
    assert fp32["ratio_vs_sentence_transformers_median"] == 1.25
    assert fp32["ratio_spread"] == [1.25, 2.5]  # [min, max], as _plot and earlier files read it
    st = out[ST]
    assert st["ratio_vs_sentence_transformers_median"] == 1.0 and st["ratio_spread"] == [1.0, 1.0]
