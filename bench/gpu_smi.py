"""NVIDIA GPUs through `nvidia-smi`: is there a usable one, what is it, how busy was it.

Used by scripts/gpu_check.py and by tests/conftest.py (skipping `gpu`-marked tests). Parsing is
kept apart from running nvidia-smi so it can be tested from sample output on machines without a
GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np

GPU_QUERY = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
UTIL_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
SAMPLE_MS = 200


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


def parse_utilization(text: str) -> list[int]:
    """Percent samples from `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits
    -lms N` output; lines that are not a number ("[N/A]", a truncated last line) are skipped."""
    samples = []
    for line in text.splitlines():
        value = line.strip()
        if value.isdigit():
            samples.append(int(value))
    return samples


def summarize_utilization(samples: list[int], active_from: int = 10, busy: int = 80) -> dict[str, Any]:
    """Mean over the whole run and over the active window: first to last sample at or above
    `active_from` percent. The job's run includes Ray start-up and actor start-up, when the GPU
    is idle by design; the window is the encode phase the goal is about."""
    if not samples:
        return {"samples": 0, "interval_ms": SAMPLE_MS}
    arr = np.asarray(samples, dtype=float)
    active = np.flatnonzero(arr >= active_from)
    window = arr[active[0] : active[-1] + 1] if active.size else arr[:0]
    out: dict[str, Any] = {
        "samples": len(samples),
        "interval_ms": SAMPLE_MS,
        "mean_all": round(float(arr.mean()), 1),
        "max": int(arr.max()),
        "active_samples": int(window.size),
        "active_seconds": round(window.size * SAMPLE_MS / 1000, 1),
    }
    if window.size:
        out["mean_active"] = round(float(window.mean()), 1)
        out["p50_active"] = round(float(np.median(window)), 1)
        out[f"share_active_at_least_{busy}"] = round(float((window >= busy).mean()), 3)
    return out


class UtilizationSampler:
    """`nvidia-smi ... -lms 200` running in the background for the duration of a `with` block."""

    def __init__(self, device: int = 0, interval_ms: int = SAMPLE_MS) -> None:
        self.command = [*UTIL_QUERY, "-i", str(device), "-lms", str(interval_ms)]
        self.samples: list[int] = []
        self._out: IO[str] | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> UtilizationSampler:
        self._out = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(self.command, stdout=self._out, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._out is not None:
            self._out.seek(0)
            self.samples = parse_utilization(self._out.read())
            self._out.close()
