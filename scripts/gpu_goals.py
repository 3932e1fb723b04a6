"""The issue's goals for the first GPU run, and how `make gpu-check` results measure against them.

Goals (one H100, MiniLM-L6, FAQ-length texts): bulk job >= 25,000 texts/s in fp16 with GPU
utilisation >= 80% during the encode phase; Serve /v1/embeddings at 16 clients >= 5x the same app
on 2 CPU cores; fp16 min cosine >= 0.9999 to sentence-transformers fp32.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

BULK_TEXTS_PER_S = 25_000
BULK_GPU_UTIL = 80.0
SERVE_RATIO_VS_CPU = 5.0
FP16_MIN_COSINE = 0.9999
SERVE_CLIENTS = 16
# The CPU app the Serve goal compares with: the CPU default topology, as bench.serve measures it.
CPU_APP = "inline"


def cpu_serve_reference(
    path: Path, clients: int = SERVE_CLIENTS, app: str = CPU_APP
) -> dict[str, Any] | None:
    """Median /v1/embeddings requests/s (one text each) at `clients` of the CPU app in a
    bench.serve result file, with where it came from; None when the file or figure is missing."""
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    rounds = data.get("apps", {}).get(app, {}).get("rounds", [])
    rates = [
        row["req_per_s"]
        for r in rounds
        for row in r.get("app", {}).get("embeddings", [])
        if row.get("concurrency") == clients
    ]
    if not rates:
        return None
    machine = data.get("machine", {})
    return {
        "texts_per_s": round(statistics.median(rates), 1),
        "app": app,
        "rounds": len(rates),
        "source": str(path),
        "cpu": machine.get("cpu_model"),
        "cpu_count": machine.get("cpu_count"),
        "note": "taken from an earlier bench.serve run on a 2-core machine, not measured in this run",
    }


def _goal(name: str, target: str, measured: Any, met: bool | None, note: str = "") -> dict[str, Any]:
    return {
        "goal": name,
        "target": target,
        "measured": measured,
        "status": "not measured" if met is None else ("met" if met else "not met"),
        "note": note,
    }


def evaluate_goals(
    steps: dict[str, dict[str, Any]], cpu_reference: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Met / not met / not measured per goal, from the recorded steps of one gpu-check run."""
    goals = []
    bulk = steps.get("bulk_job", {}).get("result", {})
    rate = bulk.get("rows_per_second")
    util = bulk.get("gpu_utilization", {}).get("mean_active")
    precision = bulk.get("precision")
    note = "" if precision in (None, "fp16") else f"the job ran in {precision}, the goal is for fp16"
    goals.append(
        _goal(
            "bulk job texts/s (fp16)",
            f">= {BULK_TEXTS_PER_S}",
            rate,
            None if rate is None else rate >= BULK_TEXTS_PER_S and precision in (None, "fp16"),
            note,
        )
    )
    goals.append(
        _goal(
            "GPU utilisation during the encode phase (%)",
            f">= {BULK_GPU_UTIL:g}",
            util,
            None if util is None else util >= BULK_GPU_UTIL,
            "mean over the samples from the first to the last one >= 10%",
        )
    )
    serve = steps.get("serve", {}).get("result", {})
    gpu_rate = serve.get("embeddings", {}).get("req_per_s")
    if gpu_rate is None or cpu_reference is None:
        why = "no CPU figure (bench/results/serve.json missing)" if cpu_reference is None else ""
        goals.append(
            _goal(
                f"Serve /v1/embeddings at {SERVE_CLIENTS} clients vs 2 CPU cores",
                f">= {SERVE_RATIO_VS_CPU:g}x",
                None,
                None,
                why,
            )
        )
    else:
        ratio = round(gpu_rate / cpu_reference["texts_per_s"], 2)
        goals.append(
            _goal(
                f"Serve /v1/embeddings at {SERVE_CLIENTS} clients vs 2 CPU cores",
                f">= {SERVE_RATIO_VS_CPU:g}x",
                ratio,
                ratio >= SERVE_RATIO_VS_CPU,
                f"{gpu_rate:.1f} req/s here vs {cpu_reference['texts_per_s']} req/s of the "
                f"'{cpu_reference['app']}' app from {cpu_reference['source']} ({cpu_reference['note']})",
            )
        )
    cos = steps.get("probe_cosine", {}).get("result", {})
    ref = cos.get("fp16_vs_reference", {})
    low = ref.get("min")
    goals.append(
        _goal(
            "fp16 min cosine to sentence-transformers fp32",
            f">= {FP16_MIN_COSINE}",
            low,
            None if low is None else low >= FP16_MIN_COSINE,
            ref.get("reference", ""),
        )
    )
    return goals
