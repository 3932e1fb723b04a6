"""Reading a Prometheus text scrape: sums of a series over the samples whose labels match.

Shared by the tests of `python -m service`'s /metrics and of Ray's metrics export port, which
read the same series (Ray's with a `ray_` prefix and its own extra labels).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from testkit.net import _DIRECT


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a scrape."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name` over the samples carrying all of `labels` (0.0 when none does)."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


def scrape(url: str, timeout: float = 10.0) -> list[Sample]:
    """GET a /metrics URL on loopback and parse it."""
    with _DIRECT.open(url, timeout=timeout) as response:
        return parse(response.read().decode("utf-8"))
