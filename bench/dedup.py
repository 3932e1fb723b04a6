"""Duplicate-detection benchmark: time, peak memory and pairs found by jobs.find_duplicates per corpus size.

    loopback-only python -m bench.dedup [--sizes 100000 300000 1000000] [--out bench/results/dedup.json]

Synthetic but shaped like a real FAQ corpus with many paraphrases (no model run: vectors are
generated directly, dim 384): paraphrase clusters of geometric size (many singletons, a few up to
30) around centres with topic structure (testkit.vectors.clustered_vectors: a narrow cone, skewed
topics, so other clusters are near). Each cluster has wording variants whose vectors sit at
cosine ~0.86-0.96 from each other (straddling the default threshold 0.9); rows of one variant
differ only in case, spacing and trailing punctuation (exact duplicates after normalisation) and
get a small extra noise (cosine ~0.997). Texts come from bench.corpus_gen's templates.

Each size runs the real job (embeddings parquet and corpus on local disk, Ray started here) and
records wall time per stage, peak RSS summed over all processes (the object store's shared pages
are counted in every process that maps them, so this overstates), the largest search actor,
pairs, groups, the job's own recall check, and how pure the groups are (share of groups whose
members all come from one generated cluster).

One run per size (and per `--factories` entry), no alternating rounds: each figure is an
absolute one of that size (time, peak memory, pairs, groups, recall), not a ratio between engines
measured side by side, and one run is minutes of a Ray job (13 min at 1M). The envelope
(bench.harness.Envelope: `command`, `machine`, `load` at start and end) says how quiet the machine
was; `busy` is set when it was not (or when --busy says so). Several `--factories` are run one after
the other on the same generated data per size; compare them only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import storage
from bench.corpus_gen import PREFIXES, groups
from bench.harness import Envelope, command_line, write_report
from bench.peak_memory import PeakMemory
from jobs.common.embeddings_io import write_embeddings_parquet
from jobs.common.layout import GROUPS_FILE
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.run import run
from testkit.vectors import clustered_vectors

DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
STYLES = ("{}", "{}?", "{}!!", "{} ?", "  {}", "{}.")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(vectors (n, dim) unit float32, texts, generated cluster of each row), rows in random order."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.45, size=n), 30)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= int(sizes.sum() - n)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    centres = clustered_vectors(len(sizes), dim, seed=seed + 1)
    # Variants: about one per two rows of a cluster; each row picks one.
    n_var = np.maximum(1, (sizes + 1) // 2)
    first_var = np.r_[0, np.cumsum(n_var)[:-1]]
    variant = first_var[cluster] + rng.integers(0, n_var[cluster])
    var_cluster = np.repeat(np.arange(len(sizes)), n_var)
    spread = rng.uniform(0.2, 0.4, len(sizes))[var_cluster, None]
    out = np.empty((n, dim), dtype=np.float32)
    var_vec = np.empty((len(var_cluster), dim), dtype=np.float32)
    for lo in range(0, len(var_cluster), 65_536):
        hi = min(len(var_cluster), lo + 65_536)
        noise = rng.standard_normal((hi - lo, dim)) / np.sqrt(dim)
        var_vec[lo:hi] = _unit(centres[var_cluster[lo:hi]] + spread[lo:hi] * noise)
    for lo in range(0, n, 65_536):
        hi = min(n, lo + 65_536)
        noise = rng.standard_normal((hi - lo, dim)) / np.sqrt(dim)
        out[lo:hi] = _unit(var_vec[variant[lo:hi]] + 0.05 * noise)
    table = groups()
    texts = []
    style = rng.integers(0, len(STYLES), n)
    upper = rng.random(n) < 0.2
    for r in range(n):
        c, v = int(cluster[r]), int(variant[r])
        para = table[c % len(table)][3]
        base = f"{PREFIXES[v % len(PREFIXES)]}{para[v % len(para)]} (ref {c}-{v})".rstrip("?")
        text = STYLES[style[r]].format(base)
        texts.append(text.upper() if upper[r] else text)
    order = rng.permutation(n)
    return out[order], [texts[i] for i in order.tolist()], cluster[order]


def one_size(n: int, dim: int, work: Path, args: argparse.Namespace, factory: str) -> dict[str, Any]:
    """Generate, write, run the job, measure."""
    t = time.perf_counter()
    vectors, texts, cluster = synthetic(n, dim, seed=args.seed)
    ids = np.arange(n, dtype=np.int64)
    emb, corpus, out = work / "emb", work / "corpus.parquet", work / "out"
    for f, part in enumerate(np.array_split(np.arange(n), 4)):
        write_embeddings_parquet(
            emb / f"part-{f:05d}.parquet", ids[part], vectors[part], fingerprint="sha256:bench"
        )
    storage.write_parquet(corpus, pa.table({"id": ids, "question": texts}))
    generate_seconds = time.perf_counter() - t
    del vectors, texts
    cfg = DedupConfig(
        embeddings=str(emb),
        output=str(out),
        corpus=str(corpus),
        threshold=args.threshold,
        k=args.k,
        workers=args.workers,
        check_sample=args.check_sample,
        factory=factory,
        build_cpus=args.build_cpus,
        progress=False,
    )
    with PeakMemory("NearSearcher", interval=0.25) as mem:
        summary = run(cfg)
    groups_table = storage.read_parquet(out / GROUPS_FILE, columns=["member_ids"])
    pure = [len(set(cluster[m].tolist())) == 1 for m in groups_table.column(0).to_pylist()]
    return {
        "rows": n,
        "generate_seconds": round(generate_seconds, 2),
        "wall_seconds": summary["wall_seconds"],
        "rows_per_second": round(n / summary["wall_seconds"], 1),
        "stage_seconds": summary["stage_seconds"],
        "peak_rss_all_processes_bytes": mem.peak_total,
        "peak_rss_one_search_actor_bytes": mem.peak_actor,
        "exact_pairs": summary["exact_pairs"],
        "near_pairs": summary["near_pairs"],
        "pairs": summary["pairs"],
        "groups": summary["groups"],
        "rows_in_groups": summary["rows_in_groups"],
        "largest_group": summary["largest_group"],
        "rows_saturated": summary["rows_saturated"],
        "generated_clusters_with_2plus_rows": int((np.bincount(cluster) >= 2).sum()),
        "groups_from_one_generated_cluster_share": round(float(np.mean(pure)) if pure else 1.0, 4),
        "index": summary["index"],
        "check": summary["check"],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--build-cpus", type=int, default=1)
    p.add_argument(
        "--factories",
        nargs="+",
        default=["auto"],
        help="index per run: auto (the job's choice) or FAISS strings",
    )
    p.add_argument("--check-sample", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--busy", action="store_true", help="mark the results as taken on a busy machine")
    p.add_argument("--work", help="scratch directory (default: a temp dir, removed after each size)")
    p.add_argument("--out", default="bench/results/dedup.json")
    return p.parse_args(argv)


def summarise(args: argparse.Namespace, env: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The result file: the envelope (`env`, Envelope.finish()), the busy flag and note, the runs."""
    # docs/jobs.md cites this flag: the envelope's busy test at start or end, or --busy.
    busy = bool(args.busy or env["load"]["start"]["busy"] or env["load"]["end"]["busy"])
    return {
        "benchmark": "dedup",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **env,
        "busy": busy,
        "note": ("taken on a busy shared machine: absolute times are inflated; " if busy else "")
        + (
            f"only sizes {args.sizes} were run, not the target sizes {list(DEFAULT_SIZES)}"
            if sorted(args.sizes) != sorted(DEFAULT_SIZES)
            else ""
        ),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "driver_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, write the JSON."""
    args = parse_args(argv)
    import ray

    envelope = Envelope(command_line("bench.dedup", argv))
    ray.init(num_cpus=2, include_dashboard=False)
    runs = []
    try:
        for n in args.sizes:
            for factory in args.factories:
                work = Path(tempfile.mkdtemp(prefix=f"qm-dedup-{n}-", dir=args.work))
                try:
                    runs.append({"factory_asked": factory, **one_size(n, args.dim, work, args, factory)})
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                print(json.dumps(runs[-1]))
    finally:
        ray.shutdown()
    # The search actors kept both cores busy until the last size ended: that load is the run's own.
    write_report(args.out, summarise(args, envelope.finish(own_load=float(args.workers)), runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
