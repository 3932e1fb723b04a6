"""Embed a parquet corpus with Ray Data: `python -m jobs.embed_corpus --artifact A --input I --output O`.

A, I and O are local paths or URIs (s3://, gs://, ...). Rerunning the same command resumes; every
good row lands in the output exactly once (how: jobs/embed_corpus/run.py).

`--device gpu` runs the pool on GPU nodes with the CUDA provider and GPU-sized batches; each
actor call takes several shards and overlaps their reads and writes with the model. The job
asks the autoscaler for the GPU nodes the pool needs and waits for them (--gpu-wait-seconds),
so a cluster whose GPU type starts at zero nodes works; a cluster that cannot grow fails at once.

Texts get the model's document prompt (sentence-transformers' encode_document rule: e5's
"passage: "), or the one `--prompt-name` names; the summary and every part file record it, and an
index built from the output only serves a model that gives documents the same prompt.

`--previous P` makes the run incremental (jobs/embed_corpus/incremental.py): rows whose exact text was embedded
in the complete earlier run P with the same artifact take P's vector, only new or changed texts go
through the model, and the output is still a complete, self-contained run of the current input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from embedder.cli_flags import add_runtime_flags
from embedder.config import batch_defaults
from jobs.common.cli import JobArgumentParser, run_job
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from jobs.embed_corpus.udfs import TOO_LONG_POLICIES


def one_line(summary: dict[str, Any]) -> str:
    """The stdout summary line."""
    if summary.get("already_complete"):
        return (
            f"nothing to do: {summary['output']} already holds a complete run "
            f"({summary['rows_embedded']} rows embedded, {summary['rows_quarantined']} quarantined, "
            f"fingerprint {summary['fingerprint']})"
        )
    resumed = (
        f", resumed: {summary['shards_this_run']}/{summary['shards']} shards run now"
        if summary["resumed"]
        else ""
    )
    incremental = (
        f", {summary['rows_reused']} reused and {summary['rows_embedded_new']} through the model "
        f"(vs {summary['previous']}: {summary['rows_added']} added, {summary['rows_changed']} changed, "
        f"{summary['rows_removed']} removed)"
        if summary.get("previous")
        else ""
    )
    prompt = f", prompt {summary['prompt_name']!r}" if summary.get("prompt") else ""
    return (
        f"embedded {summary['rows_embedded']} of {summary['rows_read']} rows "
        f"({summary['rows_quarantined']} quarantined, {summary['rows_truncated']} truncated, "
        f"{summary['tokens']} tokens){incremental} "
        f"in {summary['wall_seconds']:.1f} s, {summary['rows_per_second']:.0f} rows/s{resumed} "
        f"-> {summary['output']} [{summary['fingerprint']}{prompt}] by {', '.join(summary.get('runtimes') or ['?'])}"
    )


def command_line(artifact: str, input: str, output: str, *flags: str) -> list[str]:
    """The argv that runs this job in a subprocess (tests, `make gpu-check`) with this interpreter."""
    return [sys.executable, "-m", "jobs.embed_corpus", "--artifact", artifact, "--input", input,
            "--output", output, *flags]  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> JobConfig:
    """CLI flags -> JobConfig: flags given win over QM_JOB_<FIELD> environment variables, which win over defaults."""
    # Defaults are the JobConfig field defaults (shown in --help); unset flags stay out of the namespace
    # so that the QM_JOB_* environment can fill them (jobs.common.cli.JobArgumentParser).
    p = JobArgumentParser("embed_corpus", __doc__, "QM_JOB_")
    p.add_argument("--artifact", required=True, help="exported model directory")
    p.add_argument("--input", required=True, help="parquet file, directory or glob")
    p.add_argument(
        "--output", required=True, help="output directory (part-*.parquet, quarantine/, _SUMMARY.json)"
    )
    p.add_argument("--text-column", help="default: question")
    p.add_argument("--id-column", help="default: 'id' if present, else the row position")
    p.add_argument("--keep-columns", help="comma-separated passthrough columns, e.g. answer,category")
    p.add_argument("--device", choices=("cpu", "gpu"), help="default: cpu")
    p.add_argument(
        "--providers",
        help="comma-separated onnxruntime providers of the actors (cpu, cuda); default: cuda on gpu, cpu on cpu",
    )
    add_runtime_flags(p)
    p.add_argument(
        "--cuda-tf32",
        action="store_const",
        const=True,
        help="allow TF32 matmuls on CUDA (faster on Ampere+, ~1e-3 relative); default: off",
    )
    p.add_argument(
        "--cpu-stand-in-for-gpu",
        action="store_const",
        const=True,
        help="only to rehearse GPU scheduling on a fake cluster: reserve GPUs but run --providers "
        "(e.g. cpu); the vectors come from the CPU",
    )
    p.add_argument("--min-actors", type=int, help="default: 1")
    p.add_argument("--max-actors", type=int, help="default: 2")
    cpu, gpu = batch_defaults("cpu"), batch_defaults("gpu")
    p.add_argument(
        "--batch-tokens",
        type=int,
        help=f"padded tokens per model call; default: {cpu.batch_tokens} on cpu, {gpu.batch_tokens} on gpu",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        help=f"texts per model call; default: {cpu.max_batch_size} on cpu, {gpu.max_batch_size} on gpu",
    )
    p.add_argument(
        "--call-overhead-tokens",
        type=int,
        help="what one model call costs in tokens (the planner pads up to this before splitting); "
        f"default: {cpu.call_overhead_tokens} on cpu, {gpu.call_overhead_tokens} on gpu",
    )
    p.add_argument(
        "--shards-per-call",
        type=int,
        help="shards per actor call, pipelined (I/O beside the model); default 0: 1 on cpu, 4 on gpu",
    )
    p.add_argument("--too-long", choices=TOO_LONG_POLICIES, help="default: truncate")
    p.add_argument("--shard-rows", type=int, help="rows per shard (default 0: auto)")
    p.add_argument("--cpus-per-actor", type=float, help="default: 1.0 on cpu, 0 on gpu")
    p.add_argument("--threads-per-actor", type=int, help="default 0: the actor's CPUs")
    p.add_argument("--gpus-per-actor", type=float, help="default: 1.0")
    p.add_argument(
        "--lease-ttl-seconds",
        type=float,
        help="how long this run's lease outlives a crashed driver (default: 60)",
    )
    p.add_argument(
        "--gpu-wait-seconds",
        type=float,
        help="--device gpu: how long to wait for the autoscaler's GPU nodes (default: 600)",
    )
    p.add_argument(
        "--prompt-name",
        help="which of the model's prompts the texts get (e.g. query); default: its document prompt "
        "(the first of document, passage, corpus it has, else its default prompt, else none)",
    )
    p.add_argument("--ray-address", help="default: ray.init() (running cluster, else local)")
    p.add_argument(
        "--previous",
        help="an earlier complete output of the same artifact: reuse its vectors for unchanged texts",
    )
    return p.config(JobConfig, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success (or nothing to do), 2 on wrong input."""
    cfg = parse_args(argv)
    return run_job("embed_corpus", lambda: run(cfg), one_line)
