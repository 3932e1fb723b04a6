"""Application metrics: every series the project exports, named once, recorded in one place.

METRICS is the one table of names, kinds, tags and buckets. `Meter` turns what happened (an
HTTP request answered, a model pass run, a model loaded or evicted) into samples of those
series, and writes them to a `Sink`, which is where the two runtimes differ:
- `PrometheusSink` (here): a prometheus_client registry of its own, which `python -m service`
  serves at GET /metrics (a registry per app, not the global one, so several apps can live in
  one process, as in tests);
- `deployments.serve_metrics.RaySink`: Ray Serve metrics, exported by each node's metrics agent
  with a `ray_` prefix (service/ stays Ray-free, so that sink lives in deployments/).
Exported names follow Prometheus: a counter `qm_x` is scraped as `qm_x_total`, a histogram as
`qm_x_bucket` / `_count` / `_sum` (under Ray: `ray_qm_x_total`, ...). docs/operations.md lists them.

Per request, the route handler knows the route and the status; the model and the tokens are
only known deep inside EmbedService. They travel back in a `Usage` held in a context variable:
the request's task and the task asyncio.wait_for makes for its work share the one object.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

Kind = Literal["counter", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One series family: its name before any exporter suffix or prefix, kind, help, tag keys."""

    name: str
    kind: Kind
    help: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def exported(self, prefix: str = "") -> list[str]:
        """The names a scrape shows for it (`prefix` "ray_" under Ray)."""
        base = prefix + self.name
        if self.kind == "counter":
            return [base + "_total"]
        return [base + "_bucket", base + "_count", base + "_sum"]


# Seconds: a one-text request takes ~10 ms in process, a full 65k-token one ~12 s (config.py).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1.0, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16.0, 64, 256, 1024, 2048, 4096, 8192, 16384)

REQUESTS = Metric(
    "qm_http_requests",
    "counter",
    "API requests answered, by route template, HTTP status and model ('' before a model was chosen)",
    ("route", "status", "model"),
)
LATENCY = Metric(
    "qm_http_request_seconds",
    "histogram",
    "Seconds from a request's arrival at the service to its answer (body read included)",
    ("route",),
    LATENCY_BUCKETS,
)
TOKENS = Metric(
    "qm_prompt_tokens",
    "counter",
    "Real tokens the model embedded for answered requests (the usage.prompt_tokens of /v1/embeddings)",
    ("route", "model"),
)
KEY_REQUESTS = Metric(
    "qm_key_requests", "counter", "API requests by API key name and HTTP status", ("key", "status")
)
KEY_TOKENS = Metric("qm_key_prompt_tokens", "counter", "Real tokens embedded per API key name", ("key",))
BATCH_REQUESTS = Metric(
    "qm_batch_requests", "histogram", "Requests merged into one model pass", (), SIZE_BUCKETS
)
BATCH_TEXTS = Metric("qm_batch_texts", "histogram", "Texts per onnxruntime call", (), SIZE_BUCKETS)
BATCH_PADDED_TOKENS = Metric(
    "qm_batch_padded_tokens", "histogram", "Padded tokens per onnxruntime call", (), TOKEN_BUCKETS
)
MODEL_CALLS = Metric("qm_model_calls", "counter", "onnxruntime calls")
MODEL_LOADS = Metric("qm_model_loads", "counter", "Models loaded by a multiplexed model replica", ("model",))
MODEL_EVICTIONS = Metric(
    "qm_model_evictions", "counter", "Models evicted by a multiplexed model replica", ("model",)
)
METRICS = (
    REQUESTS,
    LATENCY,
    TOKENS,
    KEY_REQUESTS,
    KEY_TOKENS,
    BATCH_REQUESTS,
    BATCH_TEXTS,
    BATCH_PADDED_TOKENS,
    MODEL_CALLS,
    MODEL_LOADS,
    MODEL_EVICTIONS,
)


class Sink(Protocol):
    """Where samples go: a counter grows by `value`, a histogram observes `value`."""

    def add(self, metric: Metric, value: float, tags: dict[str, str]) -> None: ...

    def observe(self, metric: Metric, value: float, tags: dict[str, str]) -> None: ...


@dataclass
class Usage:
    """What the service learnt while answering one request (filled in by EmbedService)."""

    model: str = ""
    tokens: int = 0


_USAGE: ContextVar[Usage | None] = ContextVar("qm_request_usage", default=None)


def note_model(name: str) -> None:
    """The model the current request was given to (a no-op outside a metered request)."""
    usage = _USAGE.get()
    if usage is not None:
        usage.model = name


def note_tokens(count: int) -> None:
    """Tokens the model embedded for the current request (a no-op outside a metered request)."""
    usage = _USAGE.get()
    if usage is not None:
        usage.tokens += count


@dataclass
class Metered:
    """One request being answered: started by Meter.begin, recorded by `end`."""

    meter: Meter
    route: str
    key: str
    started: float = field(default_factory=time.perf_counter)
    usage: Usage = field(default_factory=Usage)

    def end(self, status: int) -> None:
        self.meter.request(self.route, status, self.usage, self.key, time.perf_counter() - self.started)


class Meter:
    """The one place samples are made; `None` as sink records nothing (tests of the contract)."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink

    def begin(self, route: str, key: str = "") -> Metered:
        """Start metering the current request (call from the request's own task)."""
        metered = Metered(self, route, key)
        _USAGE.set(metered.usage)
        return metered

    def request(self, route: str, status: int, usage: Usage, key: str, seconds: float) -> None:
        """One answered API request. `key` is the API key's configured name ("anonymous" without keys, "unknown key" when refused)."""
        if self.sink is None:
            return
        code = str(status)
        self.sink.add(REQUESTS, 1, {"route": route, "status": code, "model": usage.model})
        self.sink.observe(LATENCY, seconds, {"route": route})
        self.sink.add(KEY_REQUESTS, 1, {"key": key, "status": code})
        if usage.tokens and status < 400:
            self.sink.add(TOKENS, usage.tokens, {"route": route, "model": usage.model})
            self.sink.add(KEY_TOKENS, usage.tokens, {"key": key})

    def __call__(self, requests: int, calls: list[tuple[int, int]]) -> None:
        """One model pass (engine.scheduler.PassObserver): requests merged, (texts, padded) per call."""
        if self.sink is None:
            return
        self.sink.observe(BATCH_REQUESTS, requests, {})
        for texts, padded in calls:
            self.sink.observe(BATCH_TEXTS, texts, {})
            self.sink.observe(BATCH_PADDED_TOKENS, padded, {})
            self.sink.add(MODEL_CALLS, 1, {})

    def model_loaded(self, model: str) -> None:
        if self.sink is not None:
            self.sink.add(MODEL_LOADS, 1, {"model": model})

    def model_evicted(self, model: str) -> None:
        if self.sink is not None:
            self.sink.add(MODEL_EVICTIONS, 1, {"model": model})


class PrometheusSink:
    """prometheus_client series in a registry of their own (`python -m service`'s GET /metrics)."""

    def __init__(self, metrics: Iterable[Metric] = METRICS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[str, Counter | Histogram] = {}
        for m in metrics:
            if m.kind == "counter":
                self._series[m.name] = Counter(m.name, m.help, m.tags, registry=self.registry)
            else:
                self._series[m.name] = Histogram(
                    m.name, m.help, m.tags, registry=self.registry, buckets=m.buckets
                )

    def add(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        series = self._series[metric.name]
        assert isinstance(series, Counter)
        (series.labels(**tags) if tags else series).inc(value)

    def observe(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        series = self._series[metric.name]
        assert isinstance(series, Histogram)
        (series.labels(**tags) if tags else series).observe(value)

    def scrape(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every series, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
