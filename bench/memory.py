"""Does an encoder's memory stay flat when every request has another shape? One process per engine.

    python -m bench.memory [--requests 5000] [--engines onnxruntime-fp32 openvino-fp32 openvino-bf16]

Runtimes may keep a compiled plan per input shape (OpenVINO's CPU plugin caches kernels per
shape; onnxruntime's arena grows to the largest batch). Each engine runs in its own fresh process:
requests of 1-4 texts of random length 1-256 tokens (so up to 1,024 distinct (batch, length)
shapes), RSS sampled every 500 requests. Goal (issue 17): RSS after all requests within 10% of
RSS after the first 1,000. Memory is not a timing: the figures hold on a busy machine too.
Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from bench.harness import Envelope, write_report

ENGINES = {
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
}
GOAL_GROWTH = 0.10
# Words that are one WordPiece token each in MiniLM's vocabulary, so a text of n words is n + 2 tokens.
WORDS = "how do i reset my password refund order delivery account billing change the address".split()  # noqa: SIM905


def requests(n: int, seed: int = 0) -> list[list[str]]:
    """n requests of 1-4 texts, each of a random length 1-256 tokens (words of one token each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = int(rng.integers(1, 5))
        # Every word above is one WordPiece token; [CLS]/[SEP] make 2 more, so 1..254 words.
        out.append([" ".join(rng.choice(WORDS, int(rng.integers(1, 255)))) for _ in range(size)])
    return out


def run_engine(artifact: str, backend: str, precision: str, n: int, threads: int) -> dict[str, Any]:
    """In this process: encode the requests, sample RSS."""
    from embedder import Encoder

    enc = Encoder.load(artifact, backend=backend, precision=precision, threads=threads)
    proc = psutil.Process()
    samples: list[tuple[int, float]] = [(0, proc.memory_info().rss / 2**20)]
    shapes: set[tuple[int, int]] = set()
    for i, texts in enumerate(requests(n), start=1):
        tokenized = enc.tokenizer.tokenize(texts)
        shapes.add((len(texts), int(tokenized.lengths.max())))
        enc.encode_tokenized(tokenized)
        if i % 500 == 0 or i == n:
            samples.append((i, proc.memory_info().rss / 2**20))
    at_1000 = next((mb for i, mb in samples if i >= 1000), samples[-1][1])
    final = samples[-1][1]
    return {
        "runtime": enc.runtime.as_dict(),
        "requests": n,
        "distinct_shapes": len(shapes),
        "rss_mb_after_1000": round(at_1000, 1),
        "rss_mb_final": round(final, 1),
        "growth_after_1000": round(final / at_1000 - 1, 4),
        "goal_met": final / at_1000 - 1 <= GOAL_GROWTH,
        "samples": [(i, round(mb, 1)) for i, mb in samples],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run each engine in a child process and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", default="artifacts/minilm-fp32")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engines", nargs="*", default=list(ENGINES))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--out", default="bench/results/memory.json")
    args = p.parse_args(argv)
    if args.child:
        backend, precision = args.child
        print(json.dumps(run_engine(args.artifact, backend, precision, args.requests, args.threads)))
        return 0
    envelope = Envelope("python -m bench.memory " + " ".join(argv or []))
    results: dict[str, Any] = {}
    for name in args.engines:
        backend, precision = ENGINES[name]
        cmd = [sys.executable, "-m", "bench.memory", "--artifact", args.artifact, "--requests",
               str(args.requests), "--threads", str(args.threads), "--child", backend, precision]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:18s} {r['rss_mb_after_1000']:.0f} MB after 1000 -> {r['rss_mb_final']:.0f} MB after "
              f"{r['requests']} ({100 * r['growth_after_1000']:+.1f}%, {r['distinct_shapes']} shapes)", flush=True)  # fmt: skip
    report = {
        "benchmark": "memory",
        "goal": f"RSS after all requests within {GOAL_GROWTH:.0%} of after the first 1,000",
        "engines": results,
        **envelope.finish(own_load=0.0),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
