"""The shipped Grafana dashboard queries only series the code exports (service/metrics.py's table
under both prefixes; Ray Serve's own series are checked against a real scrape in
tests/serve/test_metrics_serve.py)."""

from __future__ import annotations

from service.metrics import METRICS
from testkit.dashboard import exprs, queried_series


def test_every_series_the_dashboard_queries_is_exported() -> None:
    ours = {n for m in METRICS for n in m.exported()}
    assert exprs() and all("${prefix}qm_" in e or "ray_serve_" in e for e in exprs())
    assert queried_series("") - {n for n in queried_series("") if n.startswith("ray_")} <= ours
    under_ray = {n for n in queried_series("ray_") if n.startswith("ray_qm_")}
    assert under_ray <= {n for m in METRICS for n in m.exported("ray_")}
    # Each of our series families shows up in some panel (a renamed metric cannot leave a gap).
    queried = {n.removeprefix("ray_") for n in queried_series("ray_")}
    assert {m.name for m in METRICS} <= {n.rsplit("_", 1)[0] for n in queried}
