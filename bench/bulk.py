"""Bulk embedding: the Ray Data job vs a plain in-process Encoder loop, same parquet, same cores, one run.

    ../shared/bin/loopback-only .venv/bin/python -m bench.bulk [--rows 20000] [--stream-rows 600000]

(The ../shared/bin/loopback-only prefix is for the project's CI machine, where Ray must run in a
namespace with loopback networking only; on your own machine no wrapper is needed.)

Writes bench/results/bulk.json: rows/s of the plain loop (measured before and after the job runs,
so drift from other load shows), of the job with 1 actor (2 onnxruntime threads) and 2 actors
(1 thread each); where an actor's time goes (tokenize vs encode, to decide where tokenizing
belongs); and peak memory while a corpus several times larger than a deliberately small object
store streams through the job (tiny model, so it takes seconds per 100k rows).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from bench.corpus_gen import write_corpus
from bench.machine import machine_info
from bench.peak_memory import PeakMemory
from embedder import Encoder
from jobs.embed_corpus import JobConfig, run

RESULTS = Path(__file__).parent / "results"
MIN_OBJECT_STORE = 80 * 2**20  # near Ray's floor (75 MiB): the point is a store much smaller than the data


def plain_loop(artifact: str, corpus: Path, threads: int, batch_rows: int = 2048) -> dict[str, Any]:
    """The baseline: load, read parquet in batches, encode, in this process; rows/s over all of it."""
    start = time.perf_counter()
    enc = Encoder.load(artifact, threads=threads)
    rows = 0
    for path in sorted(corpus.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["question"]):
            rows += len(enc.encode(batch.column(0).to_pylist()))
    wall = time.perf_counter() - start
    return {"rows": rows, "wall_seconds": round(wall, 2), "rows_per_second": round(rows / wall, 1)}


def tokenize_share(artifact: str, corpus: Path, threads: int, rows: int = 4000) -> dict[str, Any]:
    """Seconds to tokenize vs to encode the same texts: what moving tokenizing to CPU tasks could save."""
    enc = Encoder.load(artifact, threads=threads)
    texts = (
        pq.read_table(sorted(corpus.glob("*.parquet"))[0], columns=["question"]).column(0).to_pylist()[:rows]
    )
    enc.encode(texts[:256])  # warm-up
    t0 = time.perf_counter()
    enc.tokenizer.tokenize(texts)
    t1 = time.perf_counter()
    enc.encode(texts)  # tokenizes again inside, so encode-only time is the difference
    t2 = time.perf_counter()
    tok, total = t1 - t0, t2 - t1
    return {
        "rows": len(texts),
        "tokenize_seconds": round(tok, 3),
        "encode_seconds": round(total - tok, 3),
        "tokenize_fraction": round(tok / total, 4),
    }


def job(artifact: str, corpus: Path, out: Path, actors: int, threads: int, **extra: Any) -> dict[str, Any]:
    """One embed_corpus run on the already-started Ray; returns the fields of its summary we report."""
    cfg = JobConfig(
        artifact=artifact,
        input=str(corpus),
        output=str(out),
        min_actors=actors,
        max_actors=actors,
        threads_per_actor=threads,
        progress=False,
        **extra,
    )
    s = run(cfg)
    keys = ("rows_embedded", "wall_seconds", "rows_per_second", "encode_seconds", "shard_seconds", "shards")
    return {k: s[k] for k in keys} | {"actors": actors, "threads_per_actor": threads}


def stream(tiny_artifact: str, work: Path, rows: int, object_store: int) -> dict[str, Any]:
    """Peak memory while `rows` rows (several object stores' worth) go through the job."""
    corpus, out = work / f"stream-in-{rows}", work / f"stream-out-{rows}"
    write_corpus(corpus, rows, files=4, seed=7, row_group_rows=20_000)
    input_bytes = sum(pq.read_table(p).nbytes for p in corpus.glob("*.parquet"))
    with PeakMemory("MapWorker") as mem:
        result = job(tiny_artifact, corpus, out, 2, 1, keep_columns=("answer", "category"))
    output_bytes = sum(pq.read_table(p).nbytes for p in out.glob("part-*.parquet"))
    return result | {
        "object_store_bytes": object_store,
        "input_bytes_in_memory": input_bytes,
        "output_bytes_in_memory": output_bytes,
        "data_over_object_store": round((input_bytes + output_bytes) / object_store, 2),
        "peak_rss_all_processes_bytes": mem.peak_total,
        "peak_rss_one_actor_bytes": mem.peak_actor,
    }


def export_tiny_artifact(work: Path) -> str:
    """A tiny random BERT artifact for the streaming run (needs the export extra: torch)."""
    # Imported by name: the builder lives with the tests, and bench must not type-check test code.
    tiny = importlib.import_module("tests.helpers.tiny_model")
    return str(tiny.export_tiny(tiny.make_tiny_st_model(work / "tiny-model"), work / "tiny-artifact"))


def timed(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"[bulk] {label} ...", flush=True)
    result = fn()
    print(f"[bulk] {label}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    """Run every phase and write bench/results/bulk.json."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", default="artifacts/minilm-fp32")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--stream-rows", type=int, default=600_000, help="0 skips the memory run")
    p.add_argument("--object-store-mb", type=int, default=MIN_OBJECT_STORE // 2**20)
    p.add_argument("--out", type=Path, default=RESULTS / "bulk.json")
    a = p.parse_args()
    object_store = a.object_store_mb * 2**20
    results: dict[str, Any] = {"machine": machine_info(), "rows": a.rows, "artifact": a.artifact}
    # The CPU is shared: record the load so a reader can tell a quiet run from a contended one.
    results["load_average_at_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bulk-") as tmp:
        work = Path(tmp)
        corpus = work / "in"
        write_corpus(corpus, a.rows, files=4, seed=3, row_group_rows=2_000)
        results["tokenize_vs_encode"] = timed("tokenize share", lambda: tokenize_share(a.artifact, corpus, 2))
        before = timed("plain loop (before)", lambda: plain_loop(a.artifact, corpus, threads=2))
        ray.init(address="local", num_cpus=2, object_store_memory=object_store, include_dashboard=False)
        one = timed("job, 1 actor x 2 threads", lambda: job(a.artifact, corpus, work / "o1", 1, 2))
        two = timed("job, 2 actors x 1 thread", lambda: job(a.artifact, corpus, work / "o2", 2, 1))
        after = timed("plain loop (after)", lambda: plain_loop(a.artifact, corpus, threads=2))
        plain = (before["rows_per_second"] + after["rows_per_second"]) / 2
        results["plain_loop"] = {"before": before, "after": after, "mean_rows_per_second": round(plain, 1)}
        results["job_1_actor"], results["job_2_actors"] = one, two
        results["plain_over_job"] = {
            "1_actor": round(plain / one["rows_per_second"], 3),
            "2_actors": round(plain / two["rows_per_second"], 3),
        }
        if a.stream_rows:
            tiny = export_tiny_artifact(work)
            # Two sizes: bounded memory means the peak does not grow with the corpus.
            sizes = (a.stream_rows // 4, a.stream_rows)
            results["streaming_memory"] = [
                timed(f"stream {n} rows", partial(stream, tiny, work, n, object_store)) for n in sizes
            ]
        ray.shutdown()
    results["load_average_at_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[bulk] wrote {a.out}: plain/job = {results['plain_over_job']}")


if __name__ == "__main__":
    main()
