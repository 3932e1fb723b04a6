"""GPU utilisation through `nvidia-smi`, sampled while `make gpu-check` runs the bulk job.

Whether a usable CUDA GPU is here and what it is lives in testkit.cuda_gpu (tests skip
`gpu`-marked tests with it).
Parsing is kept apart from running nvidia-smi so it can be tested from sample output on machines
without a GPU.
"""

from __future__ import annotations

import subprocess
import tempfile
from types import TracebackType
from typing import IO, Any

import numpy as np

UTIL_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
SAMPLE_MS = 200


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
