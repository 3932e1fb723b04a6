"""Serve benchmark: the online path against the in-process Encoder (+ IndexSearcher), same texts, same run.

    ../shared/bin/loopback-only .venv/bin/python -m bench.serve [--artifact artifacts/minilm-fp32] \
        [--apps noop inline graph] [--rounds 5] [--haproxy]

For `--rounds` rounds, and for each app in turn within a round, it deploys the app alone,
measures the in-process baseline (Encoder.encode of the same texts, and encode + search of one
question), then the app, then deletes it. Each app is measured with `/v1/embeddings` (one FAQ
text, question + answer, per request) at concurrency 1, 4, 16 and 32, and `/match` at
concurrency 1. Ratios are taken per round against the baseline of that round and reported as
median and spread (machines here are noisy: absolute times mean little). Writes
bench/results/serve.json (serve-haproxy.json with --haproxy) and its .png.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from bench.runner import RESULTS, Benchmark, median_spread, rotations
from testkit.faq_corpus import generate
from testkit.http_load import drive, percentiles, wait_ready

LEVELS = (1, 4, 16, 32)
NOOP_DIM = 384
noop_app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class NoopStage:
    """Returns its input: one handle hop with the real stage's call shape and no work."""

    def __call__(self, value: Any, *_: Any) -> Any:
        """Echo."""
        return value


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(noop_app)
class NoopIngress:
    """Same hops as the real ingress (await tokenizer, chain backbone -> pooling, await searcher)."""

    def __init__(self, tok: Any, backbone: Any, pooling: Any, searcher: Any) -> None:
        self.tok, self.backbone, self.pooling, self.searcher = tok, backbone, pooling, searcher

    async def _chain(self, text: str) -> Any:
        ids = await self.tok.remote(text)
        return self.pooling.remote(self.backbone.remote(ids))

    @noop_app.post("/match")
    async def match(self, request: Request) -> JSONResponse:
        """Canned match after four hops."""
        body = await request.json()
        result = await self.searcher.remote(await self._chain(body["question"]))
        return JSONResponse(
            {"matches": [{"id": 1, "score": 1.0, "question": result}], "index_version": "noop"}
        )

    @noop_app.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> JSONResponse:
        """Canned vector after three hops."""
        body = await request.json()
        await (await self._chain(body["input"]))
        data = [{"object": "embedding", "index": 0, "embedding": [0.0] * NOOP_DIM}]
        return JSONResponse({"object": "list", "data": data, "model": "noop"})

    @noop_app.get("/ready")
    async def ready(self) -> dict[str, bool]:
        """Always ready."""
        return {"ready": True}


def noop_app_graph() -> Any:
    """The no-op chain: ingress + four echo stages."""
    stage: Any = NoopStage  # a Deployment at runtime; type checkers see the class
    ingress: Any = NoopIngress
    return ingress.bind(stage.bind(), stage.bind(), stage.bind(), stage.bind())


class Baseline:
    """The in-process reference: the same artifact and index in this process, no HTTP."""

    def __init__(self, artifact: Path, index_root: Path, threads: int) -> None:
        from embedder import Encoder
        from index.searcher import IndexSearcher

        self.enc = Encoder.load(artifact, threads=threads)
        self.searcher = IndexSearcher.open(index_root, expected_fingerprint=self.enc.fingerprint)

    def measure(self, texts: list[str], questions: list[str]) -> dict[str, Any]:
        """Throughput of encode() over `texts`; latency of encode + search of one question."""
        self.enc.encode(texts[:16])  # warm-up
        t0 = time.perf_counter()
        self.enc.encode(texts)
        tput = len(texts) / (time.perf_counter() - t0)
        lat = []
        for q in questions:
            t1 = time.perf_counter()
            self.searcher.search(self.enc.encode([q]), top_k=5)
            lat.append(time.perf_counter() - t1)
        return {"texts_per_s": tput, "match_single": percentiles(lat)}


def measure_app(url: str, texts: list[str], questions: list[str], counts: dict[int, int]) -> dict[str, Any]:
    """/v1/embeddings at every level (one text a request) and /match at concurrency 1."""
    out: dict[str, Any] = {"embeddings": []}
    for level in LEVELS:
        bodies = [{"input": t} for t in (texts * 8)[: counts[level]]]
        row = asyncio.run(drive(url, "/v1/embeddings", bodies, level))
        if set(row["statuses"]) != {200}:
            raise RuntimeError(f"{url} /v1/embeddings c={level}: non-200 answers {row['statuses']}")
        out["embeddings"].append(row)
    out["match_single"] = asyncio.run(drive(url, "/match", [{"question": q} for q in questions], 1))
    return out


def summarise_app(rounds: list[dict[str, Any]], floor_ms: float | None) -> dict[str, Any]:
    """Per-round ratios against that round's baseline, as median and spread; the issue's targets."""
    out: dict[str, Any] = {}
    for i, level in enumerate(LEVELS):
        ratios = [r["app"]["embeddings"][i]["req_per_s"] / r["baseline"]["texts_per_s"] for r in rounds]
        out[f"throughput_ratio_c{level}"] = median_spread(ratios)
    p50 = [r["app"]["match_single"]["p50_ms"] for r in rounds]
    base = [r["baseline"]["match_single"]["p50_ms"] for r in rounds]
    out["match_p50_c1_ms"] = median_spread(p50)
    out["in_process_match_p50_ms"] = median_spread(base)
    out["embed_texts_per_s_c32"] = median_spread([r["app"]["embeddings"][-1]["req_per_s"] for r in rounds])
    out["in_process_texts_per_s"] = median_spread([r["baseline"]["texts_per_s"] for r in rounds])
    out["throughput_target_met"] = all(out[f"throughput_ratio_c{lv}"]["median"] >= 0.7 for lv in (4, 16, 32))
    if floor_ms is not None:
        budget = statistics.median(base) + 1.2 * floor_ms
        out["match_p50_budget_ms"] = round(budget, 1)
        out["latency_target_met"] = statistics.median(p50) <= budget
    return out


def summarise(apps: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    """The summary of a run: the no-op floor, each real app's figures, and whether the machine
    was busy (the envelope's `load`, start or end)."""
    floor = None
    if "noop" in apps:
        floor = statistics.median(r["app"]["match_single"]["p50_ms"] for r in apps["noop"]["rounds"])
    summary: dict[str, Any] = {
        "noop_floor_match_p50_ms": floor,
        **{name: summarise_app(res["rounds"], floor) for name, res in apps.items() if name != "noop"},
    }
    # docs/benchmarks.md cites this flag; it is now the harness's busy test (load beyond the run's
    # own, or steal) instead of a fixed load threshold.
    summary["machine_was_busy"] = bool(load["start"]["busy"] or load["end"]["busy"])
    return summary


def replica_rss() -> dict[str, float]:
    """Resident MB per Serve replica process (by its ray:: process title)."""
    out: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "ServeReplica:" in cmd and p.info.get("memory_info") is not None:
            name = cmd.split("ServeReplica:", 1)[1].split()[0]
            out[name] = out.get(name, 0.0) + p.info["memory_info"].rss / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items())}


def parse_args(bench: Benchmark, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; begins the envelope."""
    p = bench.flags(rounds=5, threads=2, artifact="artifacts/minilm-fp32")
    p.add_argument("--corpus-rows", type=int, default=2000)
    p.add_argument(
        "--requests", type=int, nargs=4, default=[30, 80, 160, 240], help="requests at c=1, 4, 16, 32"
    )
    p.add_argument("--apps", nargs="*", default=["noop", "inline", "graph"])
    p.add_argument(
        "--haproxy",
        action="store_true",
        help="Ray Serve's direct ingress behind its bundled HAProxy instead of the Python HTTP proxy",
    )
    return bench.start(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything in one Ray instance, one app at a time, alternating with the baseline."""
    import ray

    from deployments.app import build_app
    from embedder import Encoder
    from testkit.serve_index import publish_index

    bench = Benchmark("serve", __doc__)
    args = parse_args(bench, argv)
    counts = dict(zip(LEVELS, args.requests, strict=True))
    corpus = generate(args.corpus_rows, seed=0).to_pydict()
    rows = list(zip(corpus["question"], corpus["answer"], strict=True))
    extra = generate(200, seed=99).to_pydict()
    # FAQ-shaped texts of ~66 tokens (question + answer), the text the issue measured.
    texts = [f"{q} {a}" for q, a in zip(extra["question"], extra["answer"], strict=True)]
    questions = extra["question"][:40]
    index_root = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "corpus"
    index_root.mkdir()
    publish_index(index_root, Encoder.load(args.artifact), rows)
    token_counts = Encoder.load(args.artifact).tokenizer.count_tokens(texts)
    results: dict[str, Any] = {
        "config": {"levels": LEVELS, "requests": counts, "rounds": args.rounds, "threads": args.threads,
                   "texts": len(texts), "mean_tokens_per_text": float(np.mean(token_counts))},
        "apps": {},
    }  # fmt: skip
    baseline = Baseline(Path(args.artifact), index_root, args.threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    session = {"threads": args.threads, "allow_spinning": False}
    # Ray starts workers at nice 15; the baseline runs at nice 0. A serving node runs nothing
    # else, so nice 0 is the representative setting (recorded in the JSON).
    niceness = "RAY_worker_niceness"  # a raylet setting, spelled as Ray spells it
    os.environ.setdefault(niceness, "0")
    results["config"]["ray_worker_niceness"] = os.environ[niceness]
    if args.haproxy:
        # Cluster-wide Serve settings: replicas serve HTTP themselves and HAProxy (C) routes to
        # them, so no request passes through the Python proxy actor.
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    results["config"]["http_ingress"] = "haproxy+direct" if args.haproxy else "python proxy"
    # num_cpus=2: the real node's size, so the apps' reservations are what fits.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    common = {"artifact": args.artifact, "index": str(index_root)}
    apps: dict[str, Any] = {
        "noop": lambda: noop_app_graph(),
        # The CPU default: two 1-thread passes side by side (deployments/app.py INLINE_CPU_*).
        "inline": lambda: build_app({**common, "topology": "inline"}),
        # The same pipeline with one 2-thread pass at a time, for comparison.
        "inline-1x2": lambda: build_app(
            {**common, "topology": "inline", "session": session, "batching": {"workers": 1}}
        ),
        "graph": lambda: build_app({**common, "topology": "graph", "session": session}),
    }
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # Each round deploys each app alone, measures the baseline right before it, then the app,
        # then deletes it: apps alternate within every round (slow drifts of a shared machine hit
        # all alike) and no idle app's background work weighs on the one being measured.
        for r, order in rotations(args.apps, args.rounds):
            for name in order:
                started = time.perf_counter()
                serve.run(apps[name](), name=name, route_prefix="/", blocking=False)
                wait_ready(url)
                entry = results["apps"].setdefault(name, {"deploy_ready_s": [], "rounds": []})
                entry["deploy_ready_s"].append(round(time.perf_counter() - started, 1))
                base = baseline.measure(texts, questions)
                app = measure_app(url, texts, questions, counts)
                entry["rounds"].append({"baseline": base, "app": app})
                entry["replica_rss_mb"] = replica_rss()
                serve.delete(name)
                print(f"round {r} {name:10s} baseline {base['texts_per_s']:.1f} texts/s, match p50 "
                      f"{base['match_single']['p50_ms']:.1f} ms | app " + ", ".join(
                          f"c{row['concurrency']} {row['req_per_s']:.1f}/s" for row in app["embeddings"])
                      + f", match p50 {app['match_single']['p50_ms']:.1f} ms", flush=True)  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()
    # The load generator and the two replicas' threads kept both cores busy: that load is ours.
    env = bench.finish(own_load=2.0)  # command, machine (scripts/gpu_goals.py reads it), load
    results["summary"] = summarise(results["apps"], env["load"])
    out = args.out or RESULTS / ("serve-haproxy.json" if args.haproxy else "serve.json")
    results = bench.report(results, out)
    plot(results, out.with_suffix(".png"))
    print(json.dumps(results["summary"], indent=2))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    """texts/s per client count (median of rounds, min-max bars) and single /match p50, per app."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, latency) = plt.subplots(1, 2, figsize=(11, 3.8))
    apps = results["apps"]
    for name, entry in apps.items():
        levels = [row["concurrency"] for row in entry["rounds"][0]["app"]["embeddings"]]
        per_level = [
            [r["app"]["embeddings"][i]["req_per_s"] for r in entry["rounds"]] for i in range(len(levels))
        ]
        mid = [statistics.median(v) for v in per_level]
        err = [[m - min(v) for m, v in zip(mid, per_level, strict=True)],
               [max(v) - m for m, v in zip(mid, per_level, strict=True)]]  # fmt: skip
        rate.errorbar(levels, mid, yerr=err, marker="o", capsize=3, label=name)
    baselines = [r["baseline"]["texts_per_s"] for e in apps.values() for r in e["rounds"]]
    if baselines:
        rate.axhline(statistics.median(baselines), color="grey", ls=":", label="in-process encode")
    rate.set_xscale("log", base=2)
    rate.set_xlabel("concurrent clients (1 text per request)")
    rate.set_ylabel("texts/s (median of rounds)")
    rate.legend(fontsize=8)
    names = list(apps)
    p50 = [statistics.median(r["app"]["match_single"]["p50_ms"] for r in apps[n]["rounds"]) for n in names]
    latency.barh(names, p50, color="tab:blue")
    for y, v in enumerate(p50):
        latency.text(v, y, f" {v:.1f} ms", va="center")
    latency.set_xlabel("/match p50, one client (ms, median of rounds)")
    fig.suptitle(
        f"bench.serve, {results['config']['http_ingress']}, {results['config']['rounds']} rounds", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
