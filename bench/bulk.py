"""Bulk embedding: the Ray Data job vs a plain in-process Encoder loop, same parquet, same cores, one run.

    ../shared/bin/loopback-only .venv/bin/python -m bench.bulk [--rows 10000] [--rounds 5]
        [--stream-rows 200000 2000000]

Writes bench/results/bulk.json: the plain loop, the job with 1 actor (2 onnxruntime threads) and
the job with 2 actors (1 thread each), alternating for `--rounds` rounds on one Ray instance
(start-up included in every run: model load, actor pool); per engine the median and spread of
rows/s, and the median per-round ratio plain/job. Also where an actor's time goes (tokenize vs
encode), and peak memory of all processes while corpora several times larger than a
deliberately small object store stream through the job (tiny model, so 2M rows take minutes):
bounded memory means the peak does not grow with the corpus.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from bench.peak_memory import PeakMemory
from bench.runner import RESULTS, Benchmark, median_spread, ratios, run_rounds
from embedder import Encoder
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from testkit.faq_corpus import write_corpus

FP32: dict[str, Any] = {"backend": "onnxruntime", "precision": "fp32"}  # the job as it was before bf16
BF16: dict[str, Any] = {"backend": "openvino", "precision": "bf16"}
MIN_OBJECT_STORE = 80 * 2**20  # near Ray's floor (75 MiB): the point is a store much smaller than the data


def plain_loop(artifact: str, corpus: Path, threads: int, batch_rows: int = 2048) -> dict[str, Any]:
    """The baseline: load, read parquet in batches, encode, in this process; rows/s over all of it."""
    start = time.perf_counter()
    enc = Encoder.load(artifact, threads=threads, backend="onnxruntime", precision="fp32")  # today's baseline
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
    keys = (
        "rows_embedded",
        "wall_seconds",
        "rows_per_second",
        "encode_seconds",
        "shard_seconds",
        "shards",
        "runtimes",
    )
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
    tiny = importlib.import_module("testkit.tiny_model")
    return str(tiny.export_tiny(tiny.make_tiny_st_model(work / "tiny-model"), work / "tiny-artifact"))


def timed(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"[bulk] {label} ...", flush=True)
    result = fn()
    print(f"[bulk] {label}: {json.dumps(result)}", flush=True)
    return result


ENGINES = ("plain_loop", "job_1_actor", "job_2_actors", "job_1_actor_bf16")


def rounds(artifact: str, corpus: Path, work: Path, n: int, names: Sequence[str] = ENGINES) -> dict[str, Any]:
    """Alternate the engines for n rounds; per-engine spread and per-round ratios to the plain loop."""
    every: dict[str, Callable[[int], dict[str, Any]]] = {
        "plain_loop": lambda r: plain_loop(artifact, corpus, threads=2),
        "job_1_actor": lambda r: job(artifact, corpus, work / f"o1-{r}", 1, 2, **FP32),
        "job_2_actors": lambda r: job(artifact, corpus, work / f"o2-{r}", 2, 1, **FP32),
        # The same job with the CPU's bf16 units (OpenVINO bf16 on the fp32 artifact).
        "job_1_actor_bf16": lambda r: job(artifact, corpus, work / f"b1-{r}", 1, 2, **BF16),
    }
    engines = {name: every[name] for name in ("plain_loop", *names) if name in every}

    def logged(name: str) -> Callable[[int], dict[str, Any]]:
        return lambda r: timed(f"round {r + 1}/{n}: {name}", partial(engines[name], r))

    return summarise_rounds(run_rounds({name: logged(name) for name in engines}, n, log=lambda _: None))


def summarise_rounds(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per engine its runs and rows/s as median/min/max; per job engine the per-round ratio of
    plain-loop rows/s to the job's (= job time / plain-loop time), and bf16 job over fp32 job.

    `runs`: run_rounds' result, engine -> one summary (with `rows_per_second`) per round.
    """
    rate = {name: [x["rows_per_second"] for x in rs] for name, rs in runs.items()}
    out: dict[str, Any] = {
        name: {"rows_per_second": median_spread(v), "runs": runs[name]} for name, v in rate.items()
    }
    out["plain_over_job"] = {
        job_name: ratios(rate["plain_loop"], rate[job_name]) for job_name in rate if job_name != "plain_loop"
    }
    if "job_1_actor_bf16" in rate and "job_1_actor" in rate:
        # Issue 17's bulk goal: the bf16 job's rows/s over today's fp32 job, per round.
        out["bf16_job_over_fp32_job"] = ratios(rate["job_1_actor_bf16"], rate["job_1_actor"])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run every phase and write bench/results/bulk.json."""
    bench = Benchmark("bulk", __doc__)
    p = bench.flags(rounds=5, artifact="artifacts/minilm-fp32", out=RESULTS / "bulk.json")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument(
        "--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="the plain loop always runs"
    )
    p.add_argument(
        "--stream-rows", type=int, nargs="*", default=[200_000, 2_000_000], help="none skips the memory run"
    )
    p.add_argument("--object-store-mb", type=int, default=MIN_OBJECT_STORE // 2**20)
    a = bench.start(argv)
    object_store = a.object_store_mb * 2**20
    results: dict[str, Any] = {"rows": a.rows, "rounds": a.rounds, "artifact": a.artifact}
    with tempfile.TemporaryDirectory(prefix="bulk-") as tmp:
        work = Path(tmp)
        corpus = work / "in"
        write_corpus(corpus, a.rows, files=4, seed=3, row_group_rows=2_000)
        results["tokenize_vs_encode"] = timed("tokenize share", lambda: tokenize_share(a.artifact, corpus, 2))
        ray.init(address="local", num_cpus=2, object_store_memory=object_store, include_dashboard=False)
        results.update(rounds(a.artifact, corpus, work, a.rounds, a.engines))
        if a.stream_rows:
            tiny = export_tiny_artifact(work)
            results["streaming_memory"] = [
                timed(f"stream {n} rows", partial(stream, tiny, work, n, object_store)) for n in a.stream_rows
            ]
        ray.shutdown()
    bench.report(results, a.out, own_load=2.0)  # the actors kept both cores busy to the end
    print(f"[bulk] job time / plain-loop time = {results['plain_over_job']}")


if __name__ == "__main__":
    main()
