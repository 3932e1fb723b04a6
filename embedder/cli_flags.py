"""The runtime flags every command shares (`--backend`, `--precision`), defined once.

Used by `python -m embedder encode`, `python -m service` and `jobs.embed_corpus`, so the choices,
defaults and help text cannot drift apart; `session_from_flags` builds the session of the first
two in the one order of every entry point: flag > QM_SESSION_* environment > default.
"""

from __future__ import annotations

import argparse

from embedder.config import BACKENDS, RUNTIME_PRECISIONS, SessionConfig, session_config


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """Add --backend and --precision (default None: QM_SESSION_* from the environment, else auto)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="model runtime; default: QM_SESSION_BACKEND or auto (OpenVINO on CPUs with AMX / AVX-512 "
        "BF16 when the openvino extra is installed, else onnxruntime)",
    )
    parser.add_argument(
        "--precision",
        choices=RUNTIME_PRECISIONS,
        default=None,
        help="runtime precision of an fp32 artifact: bf16 (CPU, OpenVINO), fp16 (CUDA), fp32; "
        "default: QM_SESSION_PRECISION or auto",
    )


def session_from_flags(args: argparse.Namespace) -> SessionConfig:
    """The session of a command line: each of --threads / --backend / --precision given beats its
    QM_SESSION_* variable; one left out (None) leaves the variable, else the default, in charge."""
    given = {name: getattr(args, name, None) for name in ("threads", "backend", "precision")}
    return session_config(flags={k: v for k, v in given.items() if v is not None})
