"""How busy the machine was around a benchmark: load average and CPU steal, with a warning flag.

Noisy shared machines moved earlier figures by up to 2x; every result file records this at start
and end so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import os
import time
from typing import Any

BUSY_LOAD_PER_CORE = 0.5  # a 1-minute load above half the cores means something else was running


def _cpu_times() -> tuple[int, int]:
    """(total, steal) jiffies from /proc/stat's aggregate cpu line; (0, 0) where unavailable."""
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields), steal


def load_snapshot(window_s: float = 1.0, own_load: float = 0.0) -> dict[str, Any]:
    """Load averages, and the share of CPU time stolen by the hypervisor over `window_s`.

    `own_load`: runnable threads the benchmark itself contributes to the 1-minute load (at the
    end of a run that kept both cores busy, about 2); only load beyond it counts as busy.
    """
    total0, steal0 = _cpu_times()
    time.sleep(window_s)
    total1, steal1 = _cpu_times()
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    steal = (steal1 - steal0) / (total1 - total0) if total1 > total0 else 0.0
    return {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "steal_fraction": round(steal, 4),
        "own_load_allowed": own_load,
        "busy": one - own_load > BUSY_LOAD_PER_CORE * cores or steal > 0.05,
    }


def warn_if_busy(snapshot: dict[str, Any], when: str) -> None:
    """Print a warning line when the machine was not quiet."""
    if snapshot["busy"]:
        print(
            f"WARNING ({when}): machine busy (load {snapshot['loadavg_1m']}, steal "
            f"{snapshot['steal_fraction']:.1%}); ratios are still same-run, absolute figures are not comparable"
        )
