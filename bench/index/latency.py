"""FAISS factories side by side: build time, bytes/vector, recall@10 and query latency.

    python -m bench.index latency [--sizes 100000 1000000] [--dim 384] [--rounds 5] [--out bench/results/index.json]

Each factory's index is built once (build time, size, recall); then, for `--rounds` rounds, every
factory's single-query and batch-64 latency is measured in turn, the order rotating each round
(bench.runner), so a slow drift of a shared machine never favours one factory. Latencies are the
median over rounds with min and max; speed-ups are per-round ratios against Flat measured in the
same round (DESIGN rule 8). The FAISS build and thread count are in `config`, because FAISS kernels
differ between AVX2 and AVX-512 machines. All indexes of one size are held in memory at once
(about n x dim x 4 bytes each, more for HNSW).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np

from bench.runner import RESULTS, Benchmark, median_spread, ratios, run_rounds
from index.faiss_index import IndexConfig, VectorIndex, choose_factory
from index.tuning import build_in_memory
from testkit.machine import read_cpuinfo
from testkit.vectors import clustered_vectors

K = 10
# Calls per factory per round: enough single queries for a stable median, batches of 64 cost more.
SINGLE_CALLS = 200
BATCH = 64
BATCH_CALLS = 20


def faiss_build() -> dict[str, Any]:
    """The FAISS build and threads, and the SIMD flags its kernels choose from."""
    _, flags = read_cpuinfo()
    return {
        "simd_flags": sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "f16c"))),
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "faiss_simd": faiss.get_compile_options(),
    }


def _latency(index: VectorIndex, queries: np.ndarray, batch: int, calls: int) -> float:
    """Median seconds per query over `calls` searches of `batch` queries each."""
    times = []
    for r in range(calls):
        q = queries[(r * batch) % len(queries) :][:batch]
        t = time.perf_counter()
        index.search(q, K)
        times.append((time.perf_counter() - t) / len(q))
    return float(np.median(times))


def bench_size(n: int, dim: int, factories: Sequence[str], cfg: IndexConfig, rounds: int) -> dict[str, Any]:
    """Build each factory once over one generated corpus, then time them all in rotating rounds."""
    vectors = clustered_vectors(n, dim)
    queries = clustered_vectors(2_000, dim, seed=1)  # unseen queries from the same distribution
    rows: dict[str, dict[str, Any]] = {}
    indexes: dict[str, VectorIndex] = {}
    for factory in factories:
        started = time.perf_counter()
        index, report = build_in_memory(vectors, factory, "ip", cfg)
        build_s = time.perf_counter() - started  # includes the recall measurement and tuning
        index.search(queries[:BATCH], K)  # warm-up: the first round's first factory is not cold
        indexes[factory] = index
        rows[factory] = {
            "build_seconds": round(build_s, 2),
            "bytes_per_vector": round(index.bytes_per_vector(), 1),
            "recall_at_10": report.recall_at_10,
            "search_params": index.search_params,
        }
        print(n, factory, rows[factory], flush=True)
    del vectors

    orders: list[list[str]] = []  # the order factories actually ran in, per round

    def timed(factory: str) -> Callable[[int], dict[str, float]]:
        def one(r: int) -> dict[str, float]:
            if len(orders) <= r:
                orders.append([])
            orders[r].append(factory)
            # The same queries every round: the rounds differ only by what the machine did.
            return {
                "single": _latency(indexes[factory], queries, 1, SINGLE_CALLS),
                "batch64": _latency(indexes[factory], queries, BATCH, BATCH_CALLS),
            }

        return one

    measured = run_rounds({f: timed(f) for f in factories}, rounds)
    indexes.clear()
    per_round = {
        f: {kind: [m[kind] for m in runs] for kind in ("single", "batch64")} for f, runs in measured.items()
    }
    for factory, row in rows.items():
        for kind, key in (("single", "single_query_ms"), ("batch64", "batch64_query_ms")):
            ms = [1e3 * s for s in per_round[factory][kind]]
            spread = median_spread(ms)
            row[key] = spread["median"]  # the key earlier results and docs read
            row[f"{key}_spread"] = spread
            row[f"{key}_rounds"] = [round(v, 4) for v in ms]
    if "Flat" in rows:
        flat = per_round["Flat"]
        for factory, row in rows.items():
            for kind in ("single", "batch64"):
                # Flat's time over the factory's, within each round (both ran in that round).
                spread = ratios(flat[kind], per_round[factory][kind], digits=2)
                row[f"{kind}_speedup_vs_flat"] = spread["median"]
                row[f"{kind}_speedup_vs_flat_spread"] = spread
            row["build_vs_flat"] = round(row["build_seconds"] / rows["Flat"]["build_seconds"], 2)
    return {
        "n": n,
        "dim": dim,
        "auto_factory": choose_factory(n, dim, cfg),
        "round_orders": orders,
        "factories": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write the JSON."""
    bench = Benchmark("index", __doc__, command="bench.index latency")
    p = bench.flags(rounds=5, out=RESULTS / "index.json")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--factories", nargs="+", default=None, help="default: Flat, auto IVF, HNSW32")
    args = bench.start(argv)
    cfg = IndexConfig()
    runs = []
    for n in args.sizes:
        factories = args.factories or ["Flat", choose_factory(n, args.dim, cfg, "ivf"), "HNSW32"]
        runs.append(bench_size(n, args.dim, factories, cfg, args.rounds))
    result = {
        "config": {
            **dataclasses.asdict(cfg),
            "faiss": faiss_build(),
            "rounds": args.rounds,
            "calls_per_round": {"single": SINGLE_CALLS, "batch64": BATCH_CALLS},
        },
        "note": (
            "latency = seconds/query x 1e3, median of each round's calls; `*_ms` and `*_speedup_vs_flat` "
            "are medians over rounds (min/max in `*_spread`); speed-ups are Flat latency / factory "
            "latency within each round"
        ),
        "runs": runs,
    }
    # FAISS's OpenMP threads keep the cores busy to the end: that much load is the run's own.
    bench.report(result, args.out, own_load=float(faiss.omp_get_max_threads()))


if __name__ == "__main__":
    main()
