"""Demo of the online service: start it, ask a few questions, print the matches, stop it.

On the project's CI machine Ray must run inside the loopback wrapper:
    ../shared/bin/loopback-only .venv/bin/python scripts/demo_serve.py \
        --artifact artifacts/minilm-fp32 --index indexes/<name>
On your own machine no wrapper is needed: drop the ../shared/bin/loopback-only prefix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_QUESTIONS = (
    "How do I reset my password?",
    "How long does delivery to Canada take?",
    "Can I send my headphones back for a refund?",
    "Is the backpack back in stock soon?",
)


APP_NAME = "qmatch-demo"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="exported model directory")
    p.add_argument("--index", required=True, help="index root (indexes/<name>, holding CURRENT)")
    p.add_argument("--topology", default="auto", choices=("auto", "inline", "graph", "fused"))
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--top-k", type=int, default=3)
    # The sample corpus stores several phrasings per answer: grouping by `answer` shows top_k
    # distinct answers (each with its best-matching stored question) instead of one answer twice.
    p.add_argument(
        "--group-by", default="answer", help="metadata column to group matches by ('' for plain matches)"
    )
    p.add_argument("--questions", nargs="*", default=list(DEFAULT_QUESTIONS))
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for /ready")
    return p.parse_args(argv)


def wait_ready(url: str, timeout: float) -> None:
    """Poll /ready until it answers 200 (raises with the last reason on timeout)."""
    deadline, reason = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            r = requests.get(url + "/ready", timeout=5)
            if r.status_code == 200:
                return
            reason = r.json()["error"]["message"]
        except requests.RequestException as exc:
            reason = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"service not ready after {timeout:.0f}s: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """Start, query, print, stop."""
    args = parse_args(argv)
    import ray
    from ray import serve

    from deployments.app import build_app

    # Ray's and Serve's start-up INFO lines ("Started a local Ray instance", "Started Serve in
    # namespace ...") say what the next line of this script says; warnings and errors still show.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 2, 2),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        started = time.perf_counter()
        serve.run(
            build_app({"artifact": args.artifact, "index": args.index, "topology": args.topology}),
            name=APP_NAME,
            blocking=False,
        )
        url = f"http://127.0.0.1:{args.port}"
        wait_ready(url, args.timeout)
        info = requests.get(url + "/info", timeout=10).json()
        print(
            f"serving {info['model']} ({info['topology']}) index {info['index']['version']} "
            f"({info['index']['size']} questions), ready in {time.perf_counter() - started:.1f}s at {url}"
        )
        body: dict[str, Any] = {"questions": args.questions, "top_k": args.top_k}
        if args.group_by:
            body["group_by"] = args.group_by
        r = requests.post(url + "/match", json=body, timeout=60)
        r.raise_for_status()
        for result in r.json()["results"]:
            print(f"\nQ: {result['question']}")
            for m in result["matches"]:
                answer = str(m.get("answer", ""))[:100]
                seen = result.get("grouping", {}).get("candidates")
                hits = f" ({m['group_hits']} of its group in the best {seen})" if "group_hits" in m else ""
                print(f"  {m['score']:.3f}  [{m['id']}] {m.get('question', '')}{hits}\n         -> {answer}")
    finally:
        # The app first, then Ray (which ends the Serve controller with the local instance):
        # serve.shutdown() here made the raylet print a failed graceful_shutdown task on exit.
        serve.delete(APP_NAME)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
