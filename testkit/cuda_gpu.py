"""Is a CUDA GPU usable here? NVIDIA GPUs through `nvidia-smi`, and onnxruntime's CUDA provider.

Used by tests/conftest.py (skipping `gpu`-marked tests) and by `make gpu-check`
(scripts/gpu_check.py, through scripts/gpu_smi.py). Parsing is kept apart from running nvidia-smi so
it can be tested from sample output on machines without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

GPU_QUERY = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi names it."""

    name: str
    driver: str


def parse_gpu_query(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`, one per GPU."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # The name may itself contain commas in principle; the driver version is the last field.
        name, sep, driver = line.rpartition(",")
        if not sep or not name.strip():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(GpuInfo(name.strip(), driver.strip()))
    return gpus


def query_gpus(timeout: float = 20.0) -> tuple[list[GpuInfo], str | None]:
    """(GPUs, None), or ([], why not) when nvidia-smi is missing, fails or lists none."""
    if shutil.which("nvidia-smi") is None:
        return [], "no nvidia-smi on PATH (no NVIDIA driver here)"
    try:
        done = subprocess.run(GPU_QUERY, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi did not answer: {exc}"
    if done.returncode != 0:
        first = (done.stdout + done.stderr).strip().splitlines()
        return [], f"nvidia-smi failed (exit {done.returncode}): {first[0] if first else 'no output'}"
    try:
        gpus = parse_gpu_query(done.stdout)
    except ValueError as exc:
        return [], str(exc)
    return (gpus, None) if gpus else ([], "nvidia-smi lists no GPU")


def cuda_unusable_reason() -> str | None:
    """None when a CUDA GPU can run the model here: nvidia-smi sees a GPU and onnxruntime's CUDA
    provider loads with every library (embedder.cuda_libs, driver required). Else one line why."""
    _, reason = query_gpus()
    if reason:
        return reason
    from embedder.cuda_libs import check

    report = check(require_driver=True)
    if report.ok:
        return None
    detail = [u.line() for u in report.unresolved if not u.allowed]
    return report.lines()[0] + (f" ({detail[0]})" if detail else "")
