"""Every tunable as a named, frozen field with a default and the reason for it.

Each config class can be built from a mapping (a YAML section, a Serve user_config) and
overridden from the environment (`QM_<SECTION>_<FIELD>`, e.g. QM_BATCH_BATCH_TOKENS=4096).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass(frozen=True)
class BatchConfig:
    """How texts are grouped for one onnxruntime call."""

    # Padded tokens per batch (batch size x longest sequence). Measured on a 2-core AVX2 CPU with
    # MiniLM: 1024 gave 74-81 sentences/s, 8192 only 60 (big batches spill the attention working
    # set out of cache). On a GPU raise it (e.g. 16384) to fill the device.
    batch_tokens: int = 1024
    # Upper bound on texts per batch so short texts do not make huge, latency-heavy batches.
    max_batch_size: int = 16


@dataclass(frozen=True)
class SessionConfig:
    """How the one onnxruntime InferenceSession is built."""

    # Ordered preference: "tensorrt", "cuda", "cpu". A GPU provider that fails to load is an
    # error (onnxruntime would otherwise fall back to CPU silently).
    providers: tuple[str, ...] = ("cpu",)
    # Intra-op threads; 0 lets onnxruntime use one per physical core. Never 0 where several
    # replicas share a node: each would pin one thread per core onto the same cores.
    threads: int = 0
    # Let idle intra-op threads spin-wait for the next op. Faster when the session owns its
    # cores; set false where the session shares cores with other work (HTTP proxy, ingress,
    # other replicas): spinning threads then burn the CPU the others need.
    allow_spinning: bool = True
    # "disable" | "basic" | "extended" | "all". "all" re-fuses at load; artifacts are pre-fused anyway.
    graph_optimization: str = "all"
    # CUDA device ordinal for cuda/tensorrt providers.
    device_id: int = 0
    # TensorRT fp16 kernels when the tensorrt provider is used.
    trt_fp16: bool = True


@dataclass(frozen=True)
class EncoderConfig:
    """Everything an Encoder needs besides the artifact."""

    batch: BatchConfig = field(default_factory=BatchConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    # Re-embed the probe set at load and refuse a drifting model. Only tests of the check itself turn it off.
    verify_fingerprint: bool = True


def _coerce(value: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(value)
    if target is bool:
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if target in (int, float, str):
        return target(value)
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, env_prefix: str | None = None) -> T:
    """Build a config dataclass from a mapping, then apply `env_prefix`+FIELD environment overrides."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sub_prefix = f"{env_prefix}{f.name.upper()}_" if env_prefix else None
            kwargs[f.name] = from_mapping(hint, data.get(f.name), sub_prefix)  # type: ignore[arg-type]
            continue
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hint)
        if env_prefix and (env := os.environ.get(f"{env_prefix}{f.name.upper()}")) is not None:
            kwargs[f.name] = _coerce(env, hint)
    return cls(**kwargs)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file into a dict (empty file -> {})."""
    with open(path, encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def as_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config, for recording in outputs that depend on it."""
    return dataclasses.asdict(cfg)
