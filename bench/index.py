"""Index benchmark: build time, bytes/vector, recall@10 and query latency per FAISS factory.

    python -m bench.index [--sizes 100000 1000000] [--dim 384] [--out bench/results/index.json]

Latencies are reported as ratios against Flat measured in the same run (DESIGN rule 8); CPU model
and flags are recorded because FAISS kernels differ between AVX2 and AVX-512 machines.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from bench.harness import write_report
from bench.machine import read_cpuinfo
from index.faiss_index import IndexConfig, build_index, choose_factory
from testkit.vectors import clustered_vectors


def cpu_info() -> dict[str, Any]:
    """CPU model, SIMD flags that matter to FAISS, thread count, FAISS build."""
    model, flags = read_cpuinfo()
    simd = sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "f16c")))
    return {
        "model": model,
        "simd_flags": simd,
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "faiss_simd": faiss.get_compile_options(),
        # Shared machine: a high load average means absolute times are inflated; ratios less so.
        "load_average": os.getloadavg(),
    }


def _latency(index: Any, queries: np.ndarray, batch: int, repeats: int) -> float:
    """Median seconds per query when searching `batch` queries per call."""
    times = []
    for r in range(repeats):
        q = queries[(r * batch) % len(queries) :][:batch]
        t = time.perf_counter()
        index.search(q, 10)
        times.append((time.perf_counter() - t) / len(q))
    return float(np.median(times))


def bench_size(n: int, dim: int, factories: Sequence[str], cfg: IndexConfig) -> dict[str, Any]:
    """Build each factory over one generated corpus and measure it."""
    vectors = clustered_vectors(n, dim)
    queries = clustered_vectors(2_000, dim, seed=1)  # unseen queries from the same distribution
    rows: dict[str, dict[str, Any]] = {}
    for factory in factories:
        started = time.perf_counter()
        index, report = build_index(vectors, factory, "ip", cfg)
        build_s = time.perf_counter() - started  # includes the recall measurement and tuning
        rows[factory] = {
            "build_seconds": round(build_s, 2),
            "bytes_per_vector": round(index.bytes_per_vector(), 1),
            "recall_at_10": report.recall_at_10,
            "search_params": index.search_params,
            "single_query_ms": round(1e3 * _latency(index, queries, 1, 200), 3),
            "batch64_query_ms": round(1e3 * _latency(index, queries, 64, 20), 3),
        }
        print(n, factory, rows[factory], flush=True)
        del index
    base = rows.get("Flat")
    if base:
        for row in rows.values():
            row["single_speedup_vs_flat"] = round(base["single_query_ms"] / row["single_query_ms"], 2)
            row["batch64_speedup_vs_flat"] = round(base["batch64_query_ms"] / row["batch64_query_ms"], 2)
            row["build_vs_flat"] = round(row["build_seconds"] / base["build_seconds"], 2)
    return {"n": n, "dim": dim, "auto_factory": choose_factory(n, dim, cfg), "factories": rows}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.index")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--factories", nargs="+", default=None, help="default: Flat, auto IVF, HNSW32")
    p.add_argument("--out", default="bench/results/index.json")
    args = p.parse_args(argv)
    cfg = IndexConfig()
    runs = []
    for n in args.sizes:
        factories = args.factories or ["Flat", choose_factory(n, args.dim, cfg, "ivf"), "HNSW32"]
        runs.append(bench_size(n, args.dim, factories, cfg))
    result = {
        "benchmark": "index",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_info(),
        "config": IndexConfig().__dict__,
        "note": "latency = median seconds/query x 1e3; speedups are Flat latency / factory latency, same run",
        "runs": runs,
    }
    write_report(args.out, result)


if __name__ == "__main__":
    main()
