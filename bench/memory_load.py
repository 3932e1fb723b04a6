"""The workloads of bench.memory, each run inside one fresh process: RSS samples as it goes.

`requests`: requests of 1-64 texts of 1-512 token ids (random shapes) through the in-process
service (EmbedService over InProcessBackend: the scheduler's passes, its batch planner, the
runner), as a client would send them. `shapes`: (batch, length) pairs straight into the runner,
each one of the shapes the default batch planner can emit, in random order, twice over: a cache
that keeps every shape grows through the first sweep, a bounded one (or bucketed shapes) stays
flat. Memory is not a timing: these figures hold on a busy machine too; the seconds do not.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import psutil

from embedder.artifact import Artifact
from embedder.batches import TokenBatch
from embedder.config import BatchConfig, session_config
from embedder.graph_runner import GraphRunner
from engine.inprocess import InProcessBackend
from service.config import ServingConfig
from service.core import EmbedService

# Token ids drawn from the middle of a BERT WordPiece vocabulary: ordinary sub-words, no specials.
ID_RANGE = (2000, 20000)


def rss_mb() -> float:
    """This process's resident set, MiB."""
    return psutil.Process().memory_info().rss / 2**20


def request_shapes(n: int, seed: int, max_texts: int = 64, max_tokens: int = 512) -> list[np.ndarray]:
    """Per request, the token count of each text: 1-`max_texts` texts of 1-`max_tokens` tokens."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, max_tokens + 1, int(rng.integers(1, max_texts + 1))) for _ in range(n)]


def reachable_shapes(max_len: int, batch: BatchConfig) -> list[tuple[int, int]]:
    """Every (batch, length) the planner can cut: up to min(max_batch_size, batch_tokens // length) rows."""
    return [
        (b, length)
        for length in range(1, max_len + 1)
        for b in range(1, max(1, min(batch.max_batch_size, batch.batch_tokens // length)) + 1)
    ]


def run_requests(
    artifact: str,
    session: dict[str, Any],
    n: int,
    seed: int,
    every: int,
    threads: int,
    max_texts: int = 64,
    max_tokens: int = 512,
) -> dict[str, Any]:
    """n random-shape requests through EmbedService in this process: RSS every `every` requests."""
    backend = InProcessBackend(artifact, session=session_config({**session, "threads": threads}))
    service = EmbedService(backend, ServingConfig())
    rng = np.random.default_rng(seed + 1)
    samples: list[tuple[int, float]] = [(0, rss_mb())]
    tokens = 0
    start = time.perf_counter()

    async def go() -> None:
        nonlocal tokens
        for i, lengths in enumerate(request_shapes(n, seed, max_texts, max_tokens), start=1):
            ids = [rng.integers(*ID_RANGE, int(k)).tolist() for k in lengths]
            done = await service.embed(ids, "input")
            tokens += done.prompt_tokens
            if i % every == 0 or i == n:
                samples.append((i, rss_mb()))

    asyncio.run(go())
    seconds = time.perf_counter() - start
    return {
        "runtime": backend.backbone.runtime.as_dict(),
        "requests": n,
        "tokens_fed": tokens,
        "seconds": round(seconds, 3),
        "projected_hours_for_100k": round(seconds / n * 100_000 / 3600, 1),
        "distinct_runtime_shapes": len(backend.backbone.shapes),
        "samples": [(i, round(mb, 1)) for i, mb in samples],
    }


def run_shapes(
    artifact: str, session: dict[str, Any], limit: int, seed: int, every: int, threads: int, sweeps: int = 2
) -> dict[str, Any]:
    """Up to `limit` reachable shapes (random order) into the runner, `sweeps` times: RSS every `every` calls."""
    art = Artifact.load(artifact)
    runner = GraphRunner(art, session_config({**session, "threads": threads}))
    rng = np.random.default_rng(seed)
    shapes = reachable_shapes(art.manifest.max_seq_length, BatchConfig())
    order = rng.permutation(len(shapes))[:limit]
    samples: list[tuple[int, float, int]] = [(0, rss_mb(), 0)]
    calls = 0
    start = time.perf_counter()
    for _ in range(sweeps):
        for k in order:
            b, length = shapes[int(k)]
            ids = rng.integers(*ID_RANGE, (b, length))
            ones = np.ones((b, length), np.int64)
            runner.run(TokenBatch(ids, ones, np.zeros_like(ones), np.arange(b)))
            calls += 1
            if calls % every == 0:
                samples.append((calls, rss_mb(), len(runner.shapes)))
    return {
        "runtime": runner.runtime.as_dict(),
        "shapes_offered": len(order),
        "calls": calls,
        "seconds": round(time.perf_counter() - start, 1),
        "distinct_runtime_shapes": len(runner.shapes),
        "samples": [(i, round(mb, 1), s) for i, mb, s in samples],
    }


def speed(
    artifact: str, session: dict[str, Any], n: int, seed: int, threads: int, max_texts: int, max_tokens: int
) -> float:
    """Texts/s of `n` random-shape requests through the service (one timing, for alternating rounds)."""
    result = run_requests(artifact, session, n, seed, max(n, 1), threads, max_texts, max_tokens)
    return sum(len(x) for x in request_shapes(n, seed, max_texts, max_tokens)) / result["seconds"]


# The request mixes the speed comparison times: the issue's, short texts, and single questions.
MIXES = {"mixed_1-64x1-512": (64, 512), "short_1-16x4-48": (16, 48), "single_1x1-30": (1, 30)}
# Requests per mix, as multiples of --requests: a mixed request carries ~6,800 tokens, a short one
# ~230, a single question ~16, so each mix's round lasts long enough to time.
MIX_REQUESTS = {"mixed_1-64x1-512": 1, "short_1-16x4-48": 20, "single_1x1-30": 100}


def padding_cost(pads: list[int], max_len: int, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per mix and padding multiple: tokens the model computes over real tokens, and distinct shapes,
    for each request planned alone (no timing: what padding costs in arithmetic, before speed)."""
    from embedder.graph_runner import bucket_width
    from embedder.tokenize import plan_batches

    out: dict[str, Any] = {}
    for mix, (texts, tokens) in MIXES.items():
        reqs = [np.minimum(r, max_len) for r in request_shapes(n, seed, texts, tokens)]
        out[mix] = {}
        for pad in pads:
            real = fed = 0
            shapes: set[tuple[int, int]] = set()
            for lengths in reqs:
                for idx in plan_batches(lengths, BatchConfig()):
                    width = bucket_width(int(lengths[idx].max()), pad, max_len)
                    real, fed = real + int(lengths[idx].sum()), fed + len(idx) * width
                    shapes.add((len(idx), width))
            out[mix][f"pad{pad}"] = {
                "fed_over_real_tokens": round(fed / real, 3),
                "distinct_shapes": len(shapes),
            }
    return out
