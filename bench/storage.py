"""The bulk job from s3:// to s3:// (a local S3 server) vs the same job on local disk, same run.

    ../shared/bin/loopback-only .venv/bin/python -m bench.storage [--rows 2000] [--rounds 5]

What it isolates: the cost of the storage layer itself (listing, footer reads, shard reads
through pyarrow's S3 client, all-or-nothing uploads of part files and markers, the lease), not
network bandwidth: the server is moto on loopback. Both engines run the same corpus with the same
actors, alternating local / s3 for `--rounds` rounds on one Ray instance; the headline is the
median ratio of s3 wall time to local wall time. Writes bench/results/storage.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

import storage
from bench.runner import RESULTS, Benchmark, median_spread, run_rounds
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run

REPO = Path(__file__).resolve().parents[1]


def one_run(artifact: str, corpus: str, out: str) -> dict[str, Any]:
    started = time.perf_counter()
    summary = run(
        JobConfig(artifact, corpus, out, shard_rows=250, min_actors=2, max_actors=2, progress=False)
    )
    return {"wall_seconds": round(time.perf_counter() - started, 2), "rows": summary["rows_embedded"]}


def main(argv: list[str] | None = None) -> None:
    """Alternate the local and the s3 run, write the JSON."""
    bench = Benchmark("storage", __doc__)
    artifact = str(REPO / "artifacts" / "minilm-fp32")
    parser = bench.flags(rounds=5, artifact=artifact, out=RESULTS / "storage.json")
    parser.add_argument("--rows", type=int, default=2000)
    args = bench.start(argv)

    from testkit.s3_server import patched_env, s3_server

    table = pq.read_table(REPO / "data" / "sample_qa.parquet")
    table = table.slice(0, min(args.rows, table.num_rows))
    with tempfile.TemporaryDirectory() as tmp, s3_server() as server, patched_env(server.env):
        server.create_bucket("bench")
        local_corpus = Path(tmp) / "corpus.parquet"
        pq.write_table(table, local_corpus, row_group_size=250)
        s3_corpus = "s3://bench/corpus/corpus.parquet"
        storage.write_parquet(s3_corpus, table, row_group_size=250)
        s3_artifact = "s3://bench/artifacts/minilm"
        storage.upload_dir(Path(args.artifact), s3_artifact, last=["manifest.json"])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        one_run(args.artifact, str(local_corpus), str(Path(tmp) / "warm"))  # warm-up: imports, actor start
        # local and s3 alternate, the one going first rotating each round.
        timed = run_rounds(
            {
                "local": lambda r: one_run(args.artifact, str(local_corpus), str(Path(tmp) / f"local-{r}")),
                "s3": lambda r: one_run(s3_artifact, s3_corpus, f"s3://bench/runs/s3-{r}"),
            },
            args.rounds,
        )
        rounds = []
        for r, (local, remote) in enumerate(zip(timed["local"], timed["s3"], strict=True)):
            rounds.append(
                {
                    "local": local,
                    "s3": remote,
                    "ratio": round(remote["wall_seconds"] / local["wall_seconds"], 3),
                }
            )
            print(
                f"round {r}: local {local['wall_seconds']} s, s3 {remote['wall_seconds']} s, ratio {rounds[-1]['ratio']}"
            )
        ray.shutdown()
    result = {
        "rows": table.num_rows,
        "rounds": rounds,
        "ratio_s3_over_local": median_spread(r["ratio"] for r in rounds),
        "notes": "s3 = moto server on loopback; the artifact is fetched into the node cache (QM_CACHE_DIR) on first use and reused after",
    }
    bench.report(result, args.out)
    print(json.dumps(result["ratio_s3_over_local"]))


if __name__ == "__main__":
    main()
