"""Several models on multiplexed model replicas against one model (issue 25's goals).

    ../shared/bin/loopback-only .venv/bin/python -m bench.multimodel \
        [--artifact artifacts/minilm-fp32] [--rounds 3] [--requests 600]

Three MiniLM-shaped models (the one MiniLM artifact this machine has, under three names: each is
its own session, scheduler and memory in the replica) on one fused model replica that holds two
(`max_models_per_replica: 2`), against a one-model fused app with the same replica, session and
batching. Rounds alternate the two apps (order rotating); each round:

- **throughput**: 16 clients send `--requests` single FAQ questions to /v1/embeddings, the
  multi-model app's alternating between its two resident models; the ratio multi / one is the
  goal (>= 0.9);
- **first request to the evicted model** (multi only): one request to the third model, its
  status, latency and `Server-Timing: model-load;dur=...` (the load it waited for);
- **churn** (multi only): 16 clients on the two models while a `serve deploy` of the Ingress's
  user_config adds a fourth model, requests go to the fourth and the third (each load evicts
  one), and another deploy removes the fourth: failed requests are the goal (0).

Writes bench/results/multimodel.json. Run it alone on a quiet machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.runner import RESULTS, Benchmark, median_spread, rotations
from testkit.faq_corpus import generate
from testkit.http_load import drive, wait_ready

CLIENTS = 16
MODELS = ("m1", "m2", "m3")
SESSION = {"threads": 2, "allow_spinning": False}


def app_args(artifact: str, several: bool) -> dict[str, Any]:
    """The fused app: one model, or three on a replica holding two (same replica and session)."""
    args: dict[str, Any] = {
        "artifact": artifact,
        "model_name": MODELS[0],
        "topology": "fused",
        "session": SESSION,
        "deployments": {"FusedEncoder": {"ray_actor_options": {"num_cpus": 1}}},
    }
    if several:
        args |= {"models": {m: artifact for m in MODELS[1:]}, "max_models_per_replica": 2}
    return args


def bodies(questions: list[str], models: Sequence[str], n: int) -> list[dict[str, Any]]:
    """`n` single-question /v1/embeddings bodies cycling through `models`."""
    return [{"input": questions[i % len(questions)], "model": models[i % len(models)]} for i in range(n)]


def one_request(url: str, model: str, text: str) -> dict[str, Any]:
    """One timed request: status, latency, the Server-Timing it carried."""
    started = time.perf_counter()
    r = httpx.post(url + "/v1/embeddings", json={"input": text, "model": model}, timeout=120)
    return {
        "model": model,
        "status": r.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "server_timing": r.headers.get("server-timing", ""),
    }


def models_listed(url: str, failures: list[dict[str, Any]] | None = None) -> list[str]:
    """The served model names. A listing that fails is kept in `failures` (it counts as a failed
    request of the churn) and retried."""
    while True:
        r = httpx.get(url + "/v1/models", timeout=30)
        if r.status_code == 200:
            return [m["id"] for m in r.json()["data"]]
        if failures is not None:
            failures.append({"route": "/v1/models", "status": r.status_code, "body": r.text[:200]})
        time.sleep(0.2)


def churn(url: str, args: dict[str, Any], questions: list[str], requests: int) -> dict[str, Any]:
    """Load on the two resident models while models are added, loaded (evicting) and removed."""
    from deployments.app import ingress_user_config
    from testkit.serve_deploy import deploy_app

    base = ingress_user_config(args)
    added = {**base, "models": {**base["models"], "m4": args["artifact"]}}
    events: list[dict[str, Any]] = []
    listing_failures: list[dict[str, Any]] = []

    def actions() -> None:
        t0 = time.perf_counter()
        deploy_app(args, [{"name": "Ingress", "user_config": added}])
        while "m4" not in models_listed(url, listing_failures):
            time.sleep(0.2)
        events.append({"event": "m4 added", "at_s": round(time.perf_counter() - t0, 2)})
        for model in ("m4", "m3", "m4"):
            events.append({"event": "request", **one_request(url, model, questions[0])})
        deploy_app(args, [{"name": "Ingress", "user_config": base}])
        while "m4" in models_listed(url, listing_failures):
            time.sleep(0.2)
        events.append({"event": "m4 removed", "at_s": round(time.perf_counter() - t0, 2)})

    async def both() -> dict[str, Any]:
        load = asyncio.create_task(
            drive(url, "/v1/embeddings", bodies(questions, MODELS[:2], requests), CLIENTS)
        )
        await asyncio.to_thread(actions)
        return await load

    load = asyncio.run(both())
    failed = sum(n for status, n in load["statuses"].items() if status != 200)
    failed += sum(1 for e in events if e.get("event") == "request" and e["status"] != 200)
    failed += len(listing_failures)
    return {"load": load, "events": events, "listing_failures": listing_failures, "failed_requests": failed}


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the one-model and the three-model app for --rounds rounds in one Ray instance."""
    import ray
    from ray import serve

    from testkit.serve_deploy import deploy_app

    bench = Benchmark("multimodel", __doc__)
    p = bench.flags(rounds=3, artifact="artifacts/minilm-fp32")
    p.add_argument("--requests", type=int, default=600, help="requests per throughput measurement")
    args = bench.start(argv)
    questions = generate(200, seed=7).to_pydict()["question"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench.serve: a serving node runs nothing else
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rounds: list[dict[str, Any]] = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for r, order in rotations(["one", "multi"], args.rounds):
            row: dict[str, Any] = {"round": r, "order": order}
            for name in order:
                several = name == "multi"
                deploy_app(app_args(args.artifact, several))
                wait_ready(url)
                if several:  # both measured models resident before timing (the probe loaded all)
                    for model in MODELS[:2]:
                        one_request(url, model, questions[0])
                models = MODELS[:2] if several else MODELS[:1]
                row[name] = asyncio.run(
                    drive(url, "/v1/embeddings", bodies(questions, models, args.requests), CLIENTS)
                )
                if several:
                    row["evicted_first_request"] = one_request(url, MODELS[2], questions[1])
                    row["churn"] = churn(url, app_args(args.artifact, True), questions, args.requests)
                serve.delete("qmatch")
            row["ratio"] = round(row["multi"]["req_per_s"] / row["one"]["req_per_s"], 3)
            rounds.append(row)
            print(f"round {r}: one {row['one']['req_per_s']:.1f}/s, multi {row['multi']['req_per_s']:.1f}/s "
                  f"(x{row['ratio']}), evicted first request {row['evicted_first_request']}, churn failed "
                  f"{row['churn']['failed_requests']}", flush=True)  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()
    loads = [float(r["evicted_first_request"]["server_timing"].split("dur=")[1]) for r in rounds
             if "dur=" in r["evicted_first_request"]["server_timing"]]  # fmt: skip
    summary = {
        "throughput_ratio_multi_over_one": median_spread(r["ratio"] for r in rounds),
        "goal_ratio": 0.9,
        "evicted_first_request_ok": all(r["evicted_first_request"]["status"] == 200 for r in rounds),
        "model_load_ms": median_spread(loads) if loads else None,
        "evicted_first_request_latency_ms": statistics.median(
            r["evicted_first_request"]["latency_ms"] for r in rounds
        ),
        "churn_failed_requests": sum(r["churn"]["failed_requests"] for r in rounds),
        "goal_churn_failed": 0,
    }
    config = {"clients": CLIENTS, "requests": args.requests, "rounds": args.rounds, "session": SESSION,
              "models": "one MiniLM artifact under three names (m1..m3), m4 added during churn",
              "max_models_per_replica": 2, "topology": "fused"}  # fmt: skip
    out = args.out or RESULTS / "multimodel.json"
    report = bench.report({"config": config, "summary": summary, "rounds": rounds}, out)
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
