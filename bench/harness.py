"""The one benchmark harness: alternating rounds, median and spread, the machine envelope, the JSON.

Every benchmark in bench/ measures engines against a baseline in the same run. These machines
are noisy (figures taken under load were off by up to 1.9x), so engines alternate within each
round with the order rotating (a slow drift never favours the one that always goes first), the
headline is the median of per-round figures with their min and max, and every result file
records the machine (CPU model, flags, matrix units) and how busy it was at start and end.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench.load import load_snapshot, warn_if_busy
from testkit.machine import machine_info

T = TypeVar("T")
RESULTS = Path(__file__).parent / "results"


def rotations(names: Sequence[T], rounds: int) -> Iterator[tuple[int, list[T]]]:
    """(round, order) for each round: every name once per round, the first one rotating."""
    for r in range(rounds):
        k = r % len(names) if names else 0
        yield r, [*names[k:], *names[:k]]


def run_rounds(
    runs: dict[str, Callable[[int], T]], rounds: int, log: Callable[[str], None] = print
) -> dict[str, list[T]]:
    """Call every run once per round in rotating order; results per name in round order."""
    out: dict[str, list[T]] = {name: [] for name in runs}
    for r, order in rotations(list(runs), rounds):
        for name in order:
            log(f"round {r + 1}/{rounds}: {name}")
            out[name].append(runs[name](r))
    return out


def time_rounds(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each run, once per round in rotating order (each round's runs back to back)."""
    import time

    def timed(fn: Callable[[], Any]) -> Callable[[int], float]:
        def one(_: int) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return one

    return run_rounds({name: timed(fn) for name, fn in runs.items()}, rounds, log=lambda _: None)


def median_spread(values: Iterable[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max of per-round figures."""
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


def ratios(numerators: Sequence[float], denominators: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Per-round ratios (engines of one round ran back to back), as median and spread."""
    return median_spread((n / d for n, d in zip(numerators, denominators, strict=True)), digits)


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command as run (`python -m <module> <args>`), for the envelope; argv None: sys.argv's."""
    given = sys.argv[1:] if argv is None else list(argv)
    return " ".join([f"python -m {module}", *given])


class Envelope:
    """The machine and its load around one benchmark run: start() before, finish() after."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.start = load_snapshot()
        warn_if_busy(self.start, "start")

    def so_far(self) -> dict[str, Any]:
        """command, machine and the start load: for a benchmark that writes a partial result before
        its long last phase (finish() replaces it once the run is over)."""
        return {"command": self.command, "machine": machine_info(), "load": {"start": self.start}}

    def finish(self, own_load: float = 2.0) -> dict[str, Any]:
        """command, machine (CPU flags, matrix units, versions) and load/steal at start and end."""
        end = load_snapshot(own_load=own_load)
        warn_if_busy(end, "end")
        return {"command": self.command, "machine": machine_info(), "load": {"start": self.start, "end": end}}


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write a result JSON (creating its folder) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")  # a half-written result never replaces the committed one
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out
