"""Fair share by key: a quiet key's latency while another key floods the same replica.

    .venv/bin/python -m bench.fairness [--artifact artifacts/minilm-fp32] [--duration 60] \
        [--flood-concurrency 64] [--flood-tokens 2048]

Starts `python -m service` (a process of its own, so the load generator does not share its GIL)
with two keys, `quiet` and `flood`. Phase "alone": the quiet key sends single questions one after
another for `--duration` seconds. Phase "flood": the same, while the flood key keeps
`--flood-concurrency` requests of `--flood-tokens` real tokens each in flight (each flood worker
waits the Retry-After it is given on a 429, as a well-behaved client; `--flood-ignores-retry-after`
resends at once). The issue's goal, checked in `goals`: the quiet key's p99 during the flood at
most 3x its p99 alone, no quiet request failed, the flood key refused with 429 carrying
Retry-After and never timed out (408 or no answer within the client timeout). Runs once (a goal
on absolute figures, not a ratio of engines): take it on a quiet machine. Writes
bench/results/fairness.json.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.runner import RESULTS, Benchmark
from embedder.artifact import Artifact
from testkit.http_load import percentiles, wait_ready
from testkit.keys import bearer, key_entry, new_key
from testkit.net import free_port

GOAL_P99_RATIO = 3.0
CLIENT_TIMEOUT_S = 60.0
QUESTIONS = [f"how do I change the delivery address of order {i}?" for i in range(50)]


def flood_body(flood_tokens: int, max_seq_length: int) -> dict[str, Any]:
    """Texts cut to max_seq_length (truncate) adding up to `flood_tokens` real tokens."""
    long_text = " ".join(["refund policy for damaged parcels shipped abroad"] * (max_seq_length // 4 + 8))
    return {"input": [long_text] * math.ceil(flood_tokens / max_seq_length), "model": "bench"}


async def quiet_loop(client: httpx.AsyncClient, key: str, until: float) -> dict[str, Any]:
    """Single questions, one after another, until `until`: latencies and statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    n = 0
    while time.perf_counter() < until:
        body = {"input": QUESTIONS[n % len(QUESTIONS)], "model": "bench"}
        t0 = time.perf_counter()
        try:
            status = (await client.post("/v1/embeddings", json=body, headers=bearer(key))).status_code
        except httpx.TimeoutException:
            status = 0  # no answer within the client timeout
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        n += 1
    return {"requests": n, "statuses": statuses, **(percentiles(latencies) if latencies else {})}


async def flood_worker(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], until: float, honour: bool, out: dict[str, Any]
) -> None:
    """Back-to-back flood requests; counts statuses, 429s without Retry-After and timeouts."""
    while time.perf_counter() < until:
        try:
            r = await client.post("/v1/embeddings", json=body, headers=bearer(key))
        except httpx.TimeoutException:
            out["timeouts"] += 1
            continue
        out["statuses"][r.status_code] = out["statuses"].get(r.status_code, 0) + 1
        if r.status_code == 429:
            retry = r.headers.get("retry-after")
            if retry is None:
                out["429_without_retry_after"] += 1
            elif honour:
                await asyncio.sleep(min(float(retry), max(0.0, until - time.perf_counter())))


async def phase(
    url: str, keys: dict[str, str], duration: float, flood: dict[str, Any] | None
) -> dict[str, Any]:
    """One phase: the quiet loop, with the flood beside it if `flood` is given."""
    concurrency = flood["concurrency"] if flood else 0
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        await client.post(
            "/v1/embeddings", json={"input": "warm up", "model": "bench"}, headers=bearer(keys["quiet"])
        )
        until = time.perf_counter() + duration
        counts: dict[str, Any] = {"statuses": {}, "timeouts": 0, "429_without_retry_after": 0}
        workers = [
            asyncio.create_task(flood_worker(client, keys["flood"], flood["body"], until, flood["honour"], counts))
            for _ in range(concurrency)
        ] if flood else []  # fmt: skip
        quiet = await quiet_loop(client, keys["quiet"], until)
        await asyncio.gather(*workers)
    return {"quiet": quiet, **({"flood": counts} if flood else {})}


def goals(alone: dict[str, Any], flooded: dict[str, Any]) -> dict[str, Any]:
    """The issue's goal, item by item."""
    quiet, flood = flooded["quiet"], flooded["flood"]
    ratio = quiet["p99_ms"] / alone["quiet"]["p99_ms"]
    quiet_errors = sum(n for s, n in quiet["statuses"].items() if s != 200)
    return {
        "quiet_p99_ratio": round(ratio, 2),
        "quiet_p99_within_3x": ratio <= GOAL_P99_RATIO,
        "quiet_errors": quiet_errors,
        "flood_429s": flood["statuses"].get(429, 0),
        "flood_429s_all_with_retry_after": flood["429_without_retry_after"] == 0,
        "flood_timeouts": flood["timeouts"] + flood["statuses"].get(408, 0),
        "met": ratio <= GOAL_P99_RATIO and quiet_errors == 0 and flood["statuses"].get(429, 0) > 0
        and flood["429_without_retry_after"] == 0 and flood["timeouts"] + flood["statuses"].get(408, 0) == 0,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Start the service with two keys, run both phases, write the result."""
    bench = Benchmark("fairness", __doc__)
    p = bench.flags(artifact="artifacts/minilm-fp32")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    p.add_argument("--flood-concurrency", type=int, default=64)
    p.add_argument("--flood-tokens", type=int, default=2048, help="real tokens per flood request")
    p.add_argument("--flood-ignores-retry-after", action="store_true")
    args = bench.start(argv)
    max_len = Artifact.load(args.artifact).manifest.max_seq_length
    keys, entries = {}, []
    for name in ("quiet", "flood"):
        key, digest = new_key()
        keys[name] = key
        entries.append(key_entry(name, digest))
    work = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    (work / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "service", "--artifact", args.artifact, "--model-name", "bench",
           "--auth-file", str(work / "keys.yaml"), "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(cmd)
    try:
        wait_ready(url, timeout=120)
        alone = asyncio.run(phase(url, keys, args.duration, None))
        flood = {
            "concurrency": args.flood_concurrency,
            "body": flood_body(args.flood_tokens, max_len),
            "honour": not args.flood_ignores_retry_after,
        }
        flooded = asyncio.run(phase(url, keys, args.duration, flood))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "config": {"artifact": args.artifact, "duration_s": args.duration, "flood_concurrency": args.flood_concurrency,
                   "flood_tokens": args.flood_tokens, "flood_texts": len(flood["body"]["input"]),
                   "max_seq_length": max_len, "flood_honours_retry_after": flood["honour"],
                   "server": "python -m service (in-process backend, default ServingConfig / SchedulerConfig)"},
        "alone": alone,
        "flood": flooded,
        "goals": goals(alone, flooded),
    }  # fmt: skip
    bench.report(result, args.out or RESULTS / "fairness.json")
    print(result["goals"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
