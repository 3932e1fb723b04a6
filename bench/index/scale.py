"""Index cost curve at 1M / 3M / 10M vectors: the real build job, streamed from parquet.

    python -m bench.index scale [--sizes 1000000 3000000 10000000] [--work build/index-scale] [--merge]
    python -m bench.index scale --table        # the docs' table from bench/results/index_scale.json

For each size, `jobs.build_index.build.build` (the code `python -m jobs.build_index` runs) builds each
factory from an embeddings directory of clustered dim-384 vectors (`bench.index latency`'s),
in its own process so its peak RSS is its own. The build streams the parquet twice and never
holds the corpus: at 10M the float32 vectors are 15 GiB on disk. A second fresh process loads
the published version and times single queries on unseen vectors from the same distribution;
its RSS growth on loading is the index's memory. Recall@10 is the build's own gate measurement
(1000 held-out corpus rows vs exact search over all rows), so nothing is published below 0.95.

The corpus is generated once (250k-row part files) and the smaller sizes hard-link the first
files, so 1M is a prefix of 3M is a prefix of 10M. Goals (the ten-million issue): build <= 30
min, index memory <= 4 GiB, recall@10 >= 0.95, single query <= 5 ms.

One build per size and factory, no alternating rounds: the figures are absolute ones checked
against those goals (a build's minutes, its peak memory, the index's memory, recall), not ratios
between engines run side by side, and one pass over the curve takes hours (the 10M build alone
~9 min plus ~15 GiB of corpus streamed twice). `loads` keeps the envelope's record per
invocation, since `--merge` combines sizes measured at different times. FAISS's version, compile
options and threads are in `config.faiss`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.index.latency import faiss_build
from bench.runner import RESULTS, Benchmark
from index.faiss_index import IndexConfig, choose_factory, full_vector_bytes
from testkit.vectors import clustered_batches, clustered_vectors

DIM = 384
FILE_ROWS = 250_000
GOALS = {"build_seconds": 1800.0, "index_bytes": 4 * 1024**3, "recall_at_10": 0.95, "single_query_ms": 5.0}


def _vm(field: str) -> int:
    """A /proc/self/status memory figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def generate(root: Path, total: int) -> Path:
    """root/all: `total` rows in FILE_ROWS-row part files (reused when already complete)."""
    from jobs.common.embeddings_io import write_embeddings_parquet

    out = root / "all"
    done = out / "_GENERATED.json"
    want = {"rows": total, "dim": DIM, "file_rows": FILE_ROWS, "seed": 0}
    if done.exists() and json.loads(done.read_text()) == want:
        return out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, vectors in enumerate(clustered_batches(total, FILE_ROWS, DIM, seed=0)):
        first = i * FILE_ROWS
        ids = np.arange(first, first + len(vectors), dtype=np.int64)
        write_embeddings_parquet(out / f"part-{i:05d}.parquet", ids, vectors)
        print(f"generated {first + len(vectors):,}/{total:,} rows", flush=True)
    done.write_text(json.dumps(want))
    print(f"corpus of {total:,} rows in {time.perf_counter() - started:.0f}s", flush=True)
    return out


def prefix_dir(root: Path, everything: Path, n: int) -> Path:
    """root/emb-<n>: hard links to the first n/FILE_ROWS part files of `everything`."""
    out = root / f"emb-{n}"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n // FILE_ROWS):
        name = f"part-{i:05d}.parquet"
        if not (out / name).exists():
            os.link(everything / name, out / name)
    return out


def run_build(embeddings: str, out: str, factory: str) -> dict[str, Any]:
    """Child process: one build; prints its figures as JSON."""
    from jobs.build_index.build import build

    started = time.perf_counter()
    result = build(embeddings, out, factory=factory)
    m = result.manifest
    return {
        "factory": m.factory,
        "version_path": os.path.relpath(result.path),  # relative: no machine path in the JSON
        "build_seconds": round(time.perf_counter() - started, 1),
        "build_peak_rss_bytes": _vm("VmHWM"),
        "index_file_bytes": int(m.bytes_per_vector * m.count),
        "recall_at_10": m.recall_at_10,
        "search_params": m.search_params,
    }


def run_queries(version_path: str, factory: str, queries: int = 300) -> dict[str, Any]:
    """Child process: load a published version fresh, time single queries on unseen vectors."""
    from index.faiss_index import VectorIndex
    from index.store import INDEX_FILE, MANIFEST_FILE, IndexManifest

    manifest = IndexManifest.from_json(Path(version_path, MANIFEST_FILE).read_text())
    q = clustered_vectors(queries, DIM, seed=7)  # same distribution, not in the corpus
    before = _vm("VmRSS")
    index = VectorIndex.load(Path(version_path, INDEX_FILE), factory, "ip", manifest.search_params)
    loaded = _vm("VmRSS") - before
    index.search(q[:10], 10)  # warm-up
    times = []
    for i in range(queries):
        t = time.perf_counter()
        index.search(q[i : i + 1], 10)
        times.append(time.perf_counter() - t)
    ms = 1e3 * np.asarray(times)
    return {
        "index_rss_bytes": loaded,
        "single_query_ms": round(float(np.median(ms)), 3),
        "single_query_p95_ms": round(float(np.percentile(ms, 95)), 3),
    }


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.index", "scale", *args], check=True, capture_output=True, text=True
    )
    line: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return line


def measure(emb: Path, index_root: Path, n: int, factory: str) -> dict[str, Any]:
    """Build then query one factory at one size (two fresh processes); figures and goal checks."""
    row = _child("--child-build", str(emb), str(index_root / f"{n}-{factory}"), factory)
    row.update(_child("--child-query", row["version_path"], factory))
    row["index_gib"] = round(row["index_file_bytes"] / 1024**3, 3)
    row["meets"] = {
        "build_seconds": row["build_seconds"] <= GOALS["build_seconds"],
        "index_bytes": max(row["index_file_bytes"], row["index_rss_bytes"]) <= GOALS["index_bytes"],
        "recall_at_10": row["recall_at_10"] >= GOALS["recall_at_10"],
        "single_query_ms": row["single_query_ms"] <= GOALS["single_query_ms"],
    }
    print(n, json.dumps(row), flush=True)
    return row


def factories_for(n: int, cfg: IndexConfig) -> list[str]:
    """The auto choice plus its neighbour on the curve: full vectors vs SQ8 at the same nlist.

    IVF-Flat is skipped where its vectors alone are more than twice the memory budget (10M: 15 GiB).
    """
    auto = choose_factory(n, DIM, cfg)
    flat, sq8 = choose_factory(n, DIM, cfg, "ivf"), choose_factory(n, DIM, cfg, "compressed")
    out = [auto] + [f for f in (flat, sq8) if f != auto]
    if full_vector_bytes(n, DIM) > 2 * cfg.memory_budget_bytes:
        out = [f for f in out if f != flat]
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """The README's table, from a result file (so no figure there that the JSON does not hold)."""
    lines = [
        "| vectors | factory | build (whole job) | index memory | build peak RSS | recall@10 (tuned) "
        "| single query p50 / p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for f in run["factories"]:
            auto = " (auto)" if f["factory"] == run["auto_factory"] else ""
            over = "" if f["meets"]["index_bytes"] else " (over budget)"
            params = ", ".join(f"{k} {v}" for k, v in f["search_params"].items())
            lines.append(
                f"| {run['n'] / 1e6:g}M | `{f['factory']}`{auto} | {f['build_seconds']:.0f} s "
                f"| {f['index_rss_bytes'] / 2**30:.2f} GiB{over} | {f['build_peak_rss_bytes'] / 2**30:.1f} GiB "
                f"| {f['recall_at_10']:.4f} ({params}) "
                f"| {f['single_query_ms']:.2f} / {f['single_query_p95_ms']:.2f} ms |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the curve and write the JSON."""
    bench = Benchmark("index_scale", __doc__, command="bench.index scale")
    p = bench.flags(out=RESULTS / "index_scale.json")
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--work", default="build/index-scale", help="scratch dir (the 10M corpus is ~15 GiB)")
    p.add_argument(
        "--merge", action="store_true", help="keep the other sizes' runs already in --out, replace these"
    )
    p.add_argument("--child-build", nargs=3, metavar=("EMB", "OUT", "FACTORY"), help=argparse.SUPPRESS)
    p.add_argument("--child-query", nargs=2, metavar=("VERSION", "FACTORY"), help=argparse.SUPPRESS)
    p.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    args = p.parse_args(argv)  # the children and --table record no envelope
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text())))
        return
    if args.child_build:
        print(json.dumps(run_build(*args.child_build)))
        return
    if args.child_query:
        print(json.dumps(run_queries(*args.child_query)))
        return

    bench.begin(argv)
    cfg = IndexConfig()
    work = Path(args.work)
    everything = generate(work, max(args.sizes))
    runs = []
    for n in sorted(args.sizes):
        emb = prefix_dir(work, everything, n)
        rows = [measure(emb, work / "indexes", n, f) for f in factories_for(n, cfg)]
        runs.append(
            {
                "n": n,
                "dim": DIM,
                "auto_factory": choose_factory(n, DIM, cfg),
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "factories": rows,
            }
        )
    # The builds' FAISS threads kept both cores busy to the end: that load is the run's own.
    env = bench.finish(own_load=2.0)
    out = Path(args.out)
    earlier = json.loads(out.read_text()) if args.merge and out.exists() else None
    runs, loads = merge(earlier, runs, load_entry(sorted(args.sizes), env))
    result = {
        "loads": loads,
        "goals": GOALS,
        "config": {**dataclasses.asdict(cfg), "faiss": faiss_build()},
        "note": (
            "build_seconds: the whole jobs.build_index build (two parquet passes, training, adding, exact "
            "recall check, tuning, writing, publishing). index_rss_bytes: RSS growth of a fresh process "
            "loading the version. recall_at_10: the build's gate on 1000 held-out corpus rows. "
            "command/machine/load: this invocation; loads: every invocation whose runs the file holds."
        ),
        "runs": runs,
    }
    bench.report(result, out)


def load_entry(sizes: list[int], env: dict[str, Any]) -> dict[str, Any]:
    """One invocation in `loads`: its sizes, command, CPU and load at start and end (from `env`,
    Benchmark.finish()), so rows merged from different runs can each be traced to theirs."""
    return {
        "sizes": sizes,
        "command": env["command"],
        "cpu_model": env["machine"]["cpu_model"],
        **env["load"],
    }


def merge(
    earlier: dict[str, Any] | None, runs: list[dict[str, Any]], entry: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs, loads) to write: with an earlier file (--merge), its runs of other sizes stay as they
    were measured (each carries its measured_at) and its load history goes before this run's."""
    if earlier is None:
        return runs, [entry]
    sizes = {int(r["n"]) for r in runs}
    merged = sorted(
        [r for r in earlier["runs"] if int(r["n"]) not in sizes] + runs, key=lambda r: int(r["n"])
    )
    # Files written before `loads` existed hold one `load` for all of their runs.
    history = earlier.get("loads") or [{"sizes": [r["n"] for r in earlier["runs"]], **earlier["load"]}]
    return merged, [*history, entry]


if __name__ == "__main__":
    main()
