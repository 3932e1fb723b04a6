"""The one benchmark runner: common flags, alternating rounds, median and spread, the envelope, the report.

Every benchmark in bench/ measures engines against a baseline in the same run. These machines
are noisy (figures taken under load were off by up to 1.9x), so engines alternate within each
round with the order rotating (a slow drift never favours the one that always goes first), the
headline is the median of per-round figures with their min and max, and every result file
records the command, the machine (CPU model, flags, matrix units: testkit.machine) and how busy
it was at start and end (load average and CPU steal: `command`, `machine`, `load`, `busy`).
Benchmarks that run once instead (a timeline, an absolute figure checked against a goal) say why.
Those that start Ray run inside ../shared/bin/loopback-only on the project's CI machine (Ray must
bind to loopback only there); on your own machine no wrapper is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from testkit.machine import machine_info

T = TypeVar("T")
RESULTS = Path(__file__).parent / "results"
BUSY_LOAD_PER_CORE = 0.5  # a 1-minute load above half the cores means something else was running


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


def _cpu_times() -> tuple[int, int]:
    """(total, steal) jiffies from /proc/stat's aggregate cpu line; (0, 0) where unavailable."""
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields), fields[7] if len(fields) > 7 else 0


def load_snapshot(window_s: float = 1.0, own_load: float = 0.0) -> dict[str, Any]:
    """Load averages, and the share of CPU time stolen by the hypervisor over `window_s`.

    `own_load`: runnable threads the benchmark itself contributes to the 1-minute load (at the
    end of a run that kept both cores busy, about 2); only load beyond it counts as busy.
    """
    total0, steal0 = _cpu_times()
    time.sleep(window_s)
    total1, steal1 = _cpu_times()
    one, five, fifteen = os.getloadavg()
    steal = (steal1 - steal0) / (total1 - total0) if total1 > total0 else 0.0
    snapshot = {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "steal_fraction": round(steal, 4),
        "own_load_allowed": own_load,
        "busy": one - own_load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1) or steal > 0.05,
    }
    if snapshot["busy"]:
        print(f"WARNING: machine busy (load {one:.2f}, steal {steal:.1%}); ratios are still same-run, "
              "absolute figures are not comparable")  # fmt: skip
    return snapshot


class Benchmark:
    """One run of `python -m bench.<name>`: its flags (the common ones here), envelope and report.

    `name` is the result's `benchmark` key; `command` the module and sub-command that run it
    (default `bench.<name>`), recorded in front of the arguments.
    """

    def __init__(self, name: str, doc: str | None, command: str | None = None) -> None:
        self.name = name
        self.command = command or f"bench.{name}"
        self.parser = argparse.ArgumentParser(
            prog=f"python -m {self.command}",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.started: tuple[str, dict[str, Any]] | None = None  # (command, load at start)
        self.env: dict[str, Any] | None = None

    def flags(
        self,
        *,
        rounds: int | None = None,
        threads: int | None = None,
        artifact: str | None = None,
        out: Path | None = None,
    ) -> argparse.ArgumentParser:
        """Add the common flags this benchmark takes (those given a default); the parser, for its own."""
        p = self.parser
        if rounds is not None:
            p.add_argument("--rounds", type=int, default=rounds, help="alternating rounds (order rotating)")
        if threads is not None:
            p.add_argument("--threads", type=int, default=threads, help="threads per session")
        if artifact is not None:
            p.add_argument("--artifact", default=artifact, help="exported model directory")
        where = out or "named by the run, in bench/results/"
        p.add_argument("--out", type=Path, default=out, help=f"result JSON (default: {where})")
        return p

    def begin(self, argv: Sequence[str] | None) -> None:
        """Record the command and the machine's load now (a 1-second sample)."""
        self.started = (command_line(self.command, argv), load_snapshot())

    def start(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """Parse the flags and begin the envelope."""
        args = self.parser.parse_args(argv)
        self.begin(argv)
        return args

    def finish(self, own_load: float = 2.0) -> dict[str, Any]:
        """The envelope (once): command, machine (CPU flags, matrix units, versions), load and steal
        at start and end; `own_load` is the load the run itself leaves at the end (its threads)."""
        if self.env is None:
            assert self.started is not None, "begin() first"
            command, start = self.started
            load = {"start": start, "end": load_snapshot(own_load=own_load)}
            self.env = {"command": command, "machine": machine_info(), "load": load}
        return self.env

    def busy(self) -> bool:
        """Whether the machine was busy at the start or the end of the run."""
        load = self.finish()["load"]
        return bool(load["start"]["busy"] or load["end"]["busy"])

    def report(self, body: dict[str, Any], out: str | Path, own_load: float = 2.0) -> dict[str, Any]:
        """Write the result: benchmark, created_at, the envelope and busy first, then `body`."""
        env = self.finish(own_load)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report = {"benchmark": self.name, "created_at": created, **env, "busy": self.busy(), **body}
        write_report(out, report)
        return report


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write a result JSON (creating its folder) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")  # a half-written result never replaces the committed one
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out
