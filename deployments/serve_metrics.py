"""The Ray side of service/metrics.py: its series as Ray Serve metrics.

Each node's metrics agent exports them on the node's metrics port (`--metrics-export-port`) with
a `ray_` prefix, plus the tags Serve adds (deployment, replica, application), so a dashboard can
sum a series over replicas or split it by them. A series is created on its first sample: a model
replica registers only the pass series, the Ingress the request series too.

Ray keeps one metric per name per process, and every recorder of a process shares this sink
(`ray_meter()`), as PassMetrics did before it was folded in here.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from ray.serve.metrics import Counter, Histogram

from service.metrics import Meter, Metric


class RaySink:
    """service.metrics.Sink over ray.serve.metrics Counters and Histograms."""

    def __init__(self) -> None:
        self._series: dict[str, Counter | Histogram] = {}
        self._lock = threading.Lock()  # model replicas record passes from their worker threads

    def _get(self, metric: Metric) -> Counter | Histogram:
        series = self._series.get(metric.name)
        if series is None:
            with self._lock:
                series = self._series.get(metric.name)
                if series is None:
                    tags = cast(Any, metric.tags)  # Ray's hint says tuple[str]; any tuple of str works
                    if metric.kind == "counter":
                        series = Counter(metric.name, metric.help, tags)
                    else:
                        series = Histogram(metric.name, metric.help, list(metric.buckets), tags)
                    self._series[metric.name] = series
        return series

    def add(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        series = self._get(metric)
        assert isinstance(series, Counter)
        series.inc(value, tags=tags)

    def observe(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        series = self._get(metric)
        assert isinstance(series, Histogram)
        series.observe(value, tags=tags)


_METER: Meter | None = None


def ray_meter() -> Meter:
    """This process's Meter over Ray metrics (one per process: Ray registers a name once)."""
    global _METER
    if _METER is None:
        _METER = Meter(RaySink())
    return _METER
