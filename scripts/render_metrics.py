"""Render the Grafana dashboard's panels from a real scrape, with matplotlib (no Grafana here).

Starts `python -m service`'s app (the same build and GET /metrics as `main`) on a loopback port,
sends a bounded mix of requests from a few clients (answered ones and some 401 / 422 refusals),
scrapes /metrics every `--interval` seconds, and draws what docs/grafana/qmatch-dashboard.json
shows from those scrapes: requests per second by route and status, p50 / p99 latency per route,
tokens per second per model, requests per key, model passes. It is a rendering of the scraped
series, computed as the dashboard's PromQL does (rate over consecutive scrapes,
histogram_quantile's linear interpolation in the buckets), not a Grafana screenshot, and its
numbers come from one short run on whatever machine runs it: an illustration, not a benchmark.

    .venv/bin/python scripts/render_metrics.py --artifact artifacts/minilm-fp32 \
        --out docs/grafana/qmatch-rendering.png
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import requests
import uvicorn
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.__main__ import build, single_box_app
from service.__main__ import parse_args as service_args
from service.metrics import Meter, PrometheusSink
from testkit.keys import bearer, key_entry, new_key
from testkit.net import free_port, http_ok
from testkit.prometheus_text import Sample, scrape
from testkit.waiting import wait_until

TENANTS = ("acme", "globex")  # one key each, so the per-key panel shows two customers
Snapshot = tuple[float, list[Sample]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="exported model directory")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the clients send requests")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    p.add_argument("--out", default="docs/grafana/qmatch-rendering.png")
    return p.parse_args(argv)


def client(url: str, n_client: int, key: str, stop: threading.Event) -> None:
    """One client's requests, back to back: mostly embeddings, some /embed, some refusals."""
    auth = bearer(key)
    n = 0
    with requests.Session() as s:
        while not stop.is_set():
            n += 1
            texts = [f"client {n_client} question {n} about refunds and delivery"] * (1 + n % 4)
            if n % 10 == 0:
                s.post(url + "/v1/embeddings", json={"input": []}, headers=auth, timeout=30)  # 422
            elif n % 17 == 0:
                s.post(url + "/v1/embeddings", json={"input": texts}, timeout=30)  # 401
            elif n % 3 == 0:
                s.post(url + "/embed", json={"inputs": texts}, headers=auth, timeout=30)
            else:
                s.post(url + "/v1/embeddings", json={"input": texts}, headers=auth, timeout=30)


def counters(samples: list[Sample], name: str, by: Sequence[str]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for s in samples:
        if s.name == name:
            out[tuple(s.labels.get(k, "") for k in by)] += s.value
    return out


def rates(snaps: list[Snapshot], name: str, by: Sequence[str]) -> dict[tuple[str, ...], list[float]]:
    """rate(name[interval]) per label set, one value per pair of consecutive scrapes."""
    out: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for i, ((t0, a), (t1, b)) in enumerate(itertools.pairwise(snaps)):
        before, after = counters(a, name, by), counters(b, name, by)
        for labels in after:
            series = out[labels]
            series.extend([0.0] * (i - len(series)))
            series.append((after[labels] - before.get(labels, 0.0)) / (t1 - t0))
    return out


def quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket holding rank q."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper in bounds:
        if buckets[upper] >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(buckets[upper] - below, 1e-12)
        lower, below = upper, buckets[upper]
    return lower


def latency(snaps: list[Snapshot], q: float) -> dict[str, list[float]]:
    """histogram_quantile(q, rate(qm_http_request_seconds_bucket)) per route."""
    out: dict[str, list[float]] = defaultdict(list)
    for (_, a), (_, b) in itertools.pairwise(snaps):
        start = counters(a, "qm_http_request_seconds_bucket", ("route", "le"))
        end = counters(b, "qm_http_request_seconds_bucket", ("route", "le"))
        per_route: dict[str, dict[float, float]] = defaultdict(dict)
        for (route, le), v in end.items():
            per_route[route][float(le)] = v - start.get((route, le), 0.0)
        for route, buckets in per_route.items():
            out[route].append(quantile(q, buckets))
    return out


def render(snaps: list[Snapshot], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = snaps[0][0]
    xs = [t - t0 for t, _ in snaps[1:]]
    fig, axes = plt.subplots(3, 2, figsize=(14, 11))
    panels: list[tuple[str, dict[tuple[str, ...], list[float]], str]] = [
        ("Requests per second by route and status", rates(snaps, "qm_http_requests_total", ("route", "status")), "req/s"),
        ("Prompt tokens per second by model", rates(snaps, "qm_prompt_tokens_total", ("model",)), "tokens/s"),
        ("Requests per second by API key (key name, status)", rates(snaps, "qm_key_requests_total", ("key", "status")), "req/s"),
        ("Model passes and onnxruntime calls per second", {
            ("passes",): rates(snaps, "qm_batch_requests_count", ()).get((), []),
            ("onnxruntime calls",): rates(snaps, "qm_model_calls_total", ()).get((), []),
        }, "1/s"),
    ]  # fmt: skip
    for ax, (title, series, unit) in zip(axes.flat, panels, strict=False):
        for labels, values in sorted(series.items()):
            ax.plot(xs[: len(values)], values, label=" ".join(v or '""' for v in labels))
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    for ax, q in zip(axes.flat[4:], (0.5, 0.99), strict=True):
        for route, values in sorted(latency(snaps, q).items()):
            ax.plot(xs[: len(values)], [v * 1000 for v in values], label=route)
        ax.set_title(f"Latency p{int(q * 100)} by route")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "qmatch dashboard panels rendered with matplotlib from real /metrics scrapes "
        "(python -m service, short loopback run) - not Grafana, not a benchmark",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sink = PrometheusSink()
    keys = {name: new_key() for name in TENANTS}
    auth_file = Path(tempfile.mkdtemp(prefix="render-metrics-")) / "keys.yaml"
    auth_file.write_text(yaml.safe_dump({"keys": [key_entry(n, sha) for n, (_, sha) in keys.items()]}))
    service = build(service_args(["--artifact", args.artifact, "--auth-file", str(auth_file)]), Meter(sink))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(single_box_app(service, sink), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + "/ready"), 60, "the service's /ready")
    stop = threading.Event()
    tenant_keys = [keys[TENANTS[i % len(TENANTS)]][0] for i in range(args.clients)]
    clients = [
        threading.Thread(target=client, args=(url, i, tenant_keys[i], stop), daemon=True)
        for i in range(args.clients)
    ]
    snaps: list[Snapshot] = [(time.monotonic(), scrape(url + "/metrics"))]
    for c in clients:
        c.start()
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(args.interval)
        snaps.append((time.monotonic(), scrape(url + "/metrics")))
    stop.set()
    for c in clients:
        c.join(timeout=30)
    server.should_exit = True
    render(snaps, Path(args.out))
    print(f"rendered {len(snaps)} scrapes to {args.out}")


if __name__ == "__main__":
    main()
