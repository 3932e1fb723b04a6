"""Closed-loop HTTP load against a running app: every body sent once by N concurrent clients.

Shared by bench.serve (the CPU figures) and scripts/gpu_check.py (the same measure on a GPU), so
both count requests, statuses and latencies the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from testkit.net import http_ok
from testkit.waiting import wait_until


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds of latencies in seconds."""
    arr = np.asarray(samples) * 1000.0
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


async def drive(url: str, path: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Send every body once with `concurrency` workers; latency percentiles, req/s and status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                r = await client.post(path, json=body)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        # Warm the connections and the path before timing.
        await asyncio.gather(*(client.post(path, json=bodies[i % len(bodies)]) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(bodies), "req_per_s": len(bodies) / wall,
            "statuses": statuses, **percentiles(latencies)}  # fmt: skip


def wait_ready(url: str, timeout: float = 300.0) -> None:
    """Poll /ready until 200."""
    wait_until(lambda: http_ok(url + "/ready"), timeout, f"{url}/ready to answer 200")
