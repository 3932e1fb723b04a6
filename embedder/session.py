"""The one place that builds a model session, whatever runs it (onnxruntime CPU/CUDA, OpenVINO CPU).

Everything above (tokenizer, batch planner, pooling, hand-offs, fingerprint, probe) is one code
path: it sees a `ModelSession` with `run(output_names, feeds)` and a `RuntimeInfo` that says
what produced the vectors (recorded in /info and every job's _SUMMARY.json).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedder.config import SessionConfig
from embedder.cpu_features import cpu_flags, matrix_units
from embedder.errors import ProviderUnavailable
from embedder.runtime_choice import RuntimeChoice, RuntimeRefused, choose_runtime, installed_backends

log = logging.getLogger(__name__)


class ModelSession(Protocol):
    """What the Backbone needs from a runtime."""

    backend: str
    placement: dict[str, dict[str, int]]

    @property
    def providers(self) -> tuple[str, ...]: ...

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RuntimeInfo:
    """Which backend, precision, device and CPU units produce the vectors, and why they were chosen."""

    backend: str
    precision: str
    device: str
    providers: tuple[str, ...]
    cpu_units: tuple[str, ...]
    reason: str
    cuda_tf32: bool = False
    placement: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def tolerance_key(self) -> str:
        """The key of PROBE_MIN_COSINE that applies (precision, with TF32 marked)."""
        if self.precision == "fp32" and self.device == "cuda" and self.cuda_tf32:
            return "fp32-tf32"
        return self.precision

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for /info and job summaries."""
        data = asdict(self)
        data["providers"] = list(self.providers)
        data["cpu_units"] = list(self.cpu_units)
        data["tolerance_key"] = self.tolerance_key
        return data


def resolve(config: SessionConfig, artifact_precision: str) -> RuntimeChoice:
    """The backend and precision this config means here (auto resolved); ProviderUnavailable when refused."""
    try:
        return choose_runtime(
            backend=config.backend,
            precision=config.precision,
            providers=[p.strip().lower() for p in config.providers],
            artifact_precision=artifact_precision,
            cpu_flags=cpu_flags(),
            installed=installed_backends(),
        )
    except RuntimeRefused as exc:
        raise ProviderUnavailable(str(exc)) from None


def create_session(
    model_path: str | Path, config: SessionConfig, artifact_precision: str = "fp32"
) -> tuple[ModelSession, RuntimeInfo]:
    """Build the session the config asks for; raises ArtifactError / ProviderUnavailable / PlacementError."""
    choice = resolve(config, artifact_precision)
    path = Path(model_path)
    session: ModelSession
    if choice.backend == "openvino":
        from embedder.openvino_session import OpenVinoSession

        ov_session = OpenVinoSession(path, config, choice.precision)
        precision = ov_session.precision
        if precision != choice.precision:
            log.warning(
                "OpenVINO runs %s although %s was asked (no such units on this CPU)",
                precision,
                choice.precision,
            )
        session = ov_session
    else:
        from embedder.ort_session import OrtSession

        session = OrtSession(path, config, choice.precision)
        precision = choice.precision
    info = RuntimeInfo(
        backend=choice.backend,
        precision=precision,
        device=choice.device,
        providers=session.providers,
        cpu_units=tuple(matrix_units()),
        reason=choice.reason,
        cuda_tf32=config.cuda_tf32 and choice.device == "cuda",
        placement=session.placement,
    )
    log.info("model session: %s %s on %s (%s)", info.backend, info.precision, info.device, info.reason)
    return session, info
