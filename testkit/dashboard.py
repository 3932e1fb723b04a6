"""The series names the shipped Grafana dashboard (docs/grafana/qmatch-dashboard.json) queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "qmatch-dashboard.json"
# A series name in PromQL: ours (qm_...) or Ray's (ray_...); functions, `by` and `le` never match.
_SERIES = re.compile(r"\b(?:ray_|qm_)[A-Za-z0-9_]+\b")


def exprs(path: Path = DASHBOARD) -> list[str]:
    """Every panel target's PromQL expression."""
    board = json.loads(path.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def queried_series(prefix: str, path: Path = DASHBOARD) -> set[str]:
    """The series names the dashboard queries with its `prefix` variable set to `prefix`."""
    return {n for e in exprs(path) for n in _SERIES.findall(e.replace("${prefix}", prefix))}
