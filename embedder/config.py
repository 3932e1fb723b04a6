"""Every tunable as a named, frozen field with a default and the reason for it.

Each config class can be built from a mapping (a YAML section, a Serve user_config) and
overridden from the environment (`QM_<SECTION>_<FIELD>`, e.g. QM_BATCH_BATCH_TOKENS=4096).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# Accepted spellings of a boolean (compared lower-cased, stripped); anything else is an error.
BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}
# Environment values that mean "unset" for an optional (`X | None`) setting.
NONE_WORDS = ("", "none", "null")
# Execution providers and graph optimisation levels embedder.session knows how to build.
PROVIDERS = ("cpu", "cuda")
BACKENDS = ("auto", "onnxruntime", "openvino")
# Runtime precisions of an fp32 artifact (int8 and fp16 are exported artifacts).
RUNTIME_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


# The `overrides_from` label of command-line flags: errors then name the flag (`--max-actors 0`).
COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from (environment variable or key)."""


class FieldValueError(ValueError):
    """A config dataclass refused the value of one field (raised from __post_init__ via `check_field`)."""

    def __init__(self, owner: str, name: str, value: Any, reason: str) -> None:
        super().__init__(f"{owner}.{name}={value!r}: {reason}")
        self.owner, self.name, self.value, self.reason = owner, name, value, reason


def check_field(cfg: Any, name: str, ok: bool, reason: str) -> None:
    """For __post_init__: raise FieldValueError naming `cfg`'s field `name` unless `ok`."""
    if not ok:
        raise FieldValueError(type(cfg).__name__, name, getattr(cfg, name), reason)


@dataclass(frozen=True)
class BatchConfig:
    """How texts are grouped for one onnxruntime call."""

    # Padded tokens per batch (batch size x longest sequence). Measured on a 2-core AVX2 CPU with
    # MiniLM: 1024 gave 74-81 sentences/s, 8192 only 60 (big batches spill the attention working
    # set out of cache). On a GPU raise it (e.g. 16384) to fill the device.
    batch_tokens: int = 1024
    # Upper bound on texts per batch so short texts do not make huge, latency-heavy batches.
    max_batch_size: int = 16
    # What one onnxruntime call costs beyond its tokens, in token-equivalents: the planner splits
    # a batch where padding would cost more than another call. Measured on a 2-core AVX2 CPU with
    # MiniLM at ~34 tokens a text: 1 text per call 70/s, 16 per call 80/s, i.e. ~5-10 tokens a call.
    call_overhead_tokens: int = 8

    def __post_init__(self) -> None:
        check_field(self, "batch_tokens", self.batch_tokens >= 1, "must be >= 1")
        check_field(self, "max_batch_size", self.max_batch_size >= 1, "must be >= 1")
        check_field(self, "call_overhead_tokens", self.call_overhead_tokens >= 0, "must be >= 0")


# Batching for a CUDA device, from the GPU's arithmetic rather than the CPU's cache (no GPU was
# available to measure; `make gpu-check` reports the rate these give). MiniLM-L6 costs ~21.8
# MFLOP a token; an H100 sustaining ~15% of its ~990 dense fp16 TFLOP/s on hidden size 384 runs
# ~7M tokens/s, so one call of 32,768 padded tokens is ~5 ms of work: long enough that the
# ~0.3-0.5 ms of launches and host<->device copies each call pays stays under 10%. At ~2M
# tokens/s (the 25k texts/s goal at ~66 tokens), 0.5 ms is ~1,000 tokens, hence
# call_overhead_tokens 1024: the planner accepts padding up to that before it splits a call.
# 512 texts a call bounds the attention working set (512 x 12 heads x 64^2 x 4 B = 100 MB).
GPU_BATCH_TOKENS = 32768
GPU_MAX_BATCH_SIZE = 512
GPU_CALL_OVERHEAD_TOKENS = 1024


def batch_defaults(device: str) -> BatchConfig:
    """The default batching for a device ("cpu" or "gpu")."""
    if device == "gpu":
        return BatchConfig(GPU_BATCH_TOKENS, GPU_MAX_BATCH_SIZE, GPU_CALL_OVERHEAD_TOKENS)
    if device == "cpu":
        return BatchConfig()
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


@dataclass(frozen=True)
class SessionConfig:
    """How the one model session is built (embedder/session.py): backend, precision, device, threads."""

    # "auto" | "onnxruntime" | "openvino". auto: OpenVINO where the CPU has bf16 units (AMX,
    # AVX-512 BF16) and it is installed, else onnxruntime (rules: embedder/runtime_choice.py).
    backend: str = "auto"
    # Runtime precision of an fp32 artifact: "auto" | "fp32" | "bf16" (CPU, OpenVINO) | "fp16"
    # (CUDA). int8 and fp16 artifacts run as exported.
    precision: str = "auto"
    # "cpu" or "cuda". A GPU provider that fails to load is an error (onnxruntime would
    # otherwise fall back to CPU silently), and so is a compute node placed on the CPU.
    providers: tuple[str, ...] = ("cpu",)
    # Intra-op threads; 0 lets the runtime use one per physical core. Never 0 where several
    # replicas share a node: each would pin one thread per core onto the same cores.
    threads: int = 0
    # Let idle intra-op threads spin-wait for the next op. Faster when the session owns its
    # cores; set false where the session shares cores with other work (HTTP proxy, ingress,
    # other replicas): spinning threads then burn the CPU the others need.
    allow_spinning: bool = True
    # "disable" | "basic" | "extended" | "all". "all" re-fuses at load; artifacts are pre-fused anyway.
    graph_optimization: str = "all"
    # CUDA device ordinal. 0 is right inside Ray actors: Ray sets CUDA_VISIBLE_DEVICES per actor.
    device_id: int = 0
    # TF32 matmuls on Ampere+ GPUs: ~1e-3 relative error per product. Off, so fp32 means fp32
    # and the fp32 probe floor holds; on, the probe floor is PROBE_MIN_COSINE["fp32-tf32"].
    cuda_tf32: bool = False
    # On CUDA: profile one probe pass at load and refuse when a compute node (MatMul, Attention,
    # LayerNorm, ...) runs on the CPU (the int8 ops have no CUDA kernels, for example).
    check_placement: bool = True
    # OpenVINO keeps compiled kernels per input shape; this bounds that cache (entries) so a
    # server seeing every (batch, length) pair keeps flat memory. OpenVINO's default is 5000.
    openvino_shape_cache: int = 512

    def __post_init__(self) -> None:
        for name in self.providers:
            key = name.strip().lower()
            reason = (
                "TensorRT support was removed (no TensorRT libraries in the images, no optimisation "
                "profiles, engines rebuilt per shape); use cuda with precision fp16"
                if key == "tensorrt"
                else f"unknown execution provider {name!r}; expected one of {list(PROVIDERS)}"
            )
            check_field(self, "providers", key in PROVIDERS, reason)
        check_field(self, "backend", self.backend in BACKENDS, f"must be one of {list(BACKENDS)}")
        check_field(
            self,
            "precision",
            self.precision in RUNTIME_PRECISIONS,
            f"must be one of {list(RUNTIME_PRECISIONS)} (int8 is an exported artifact)",
        )
        check_field(self, "threads", self.threads >= 0, "must be >= 0 (0: one per physical core)")
        check_field(
            self,
            "graph_optimization",
            self.graph_optimization in GRAPH_OPTIMIZATION_LEVELS,
            f"must be one of {list(GRAPH_OPTIMIZATION_LEVELS)}",
        )
        check_field(self, "device_id", self.device_id >= 0, "must be >= 0")
        check_field(self, "openvino_shape_cache", self.openvino_shape_cache >= 0, "must be >= 0")

    @property
    def wants_cuda(self) -> bool:
        """True when the CUDA provider is requested."""
        return any(p.strip().lower() == "cuda" for p in self.providers)


# Environment prefix of SessionConfig fields (QM_SESSION_BACKEND=openvino, QM_SESSION_PRECISION=bf16, ...).
SESSION_ENV_PREFIX = "QM_SESSION_"


def session_config(data: Mapping[str, Any] | None = None) -> SessionConfig:
    """SessionConfig from a mapping (YAML, Serve args) with QM_SESSION_<FIELD> environment overrides."""
    return from_mapping(SessionConfig, data, env_prefix=SESSION_ENV_PREFIX)


@dataclass(frozen=True)
class EncoderConfig:
    """Everything an Encoder needs besides the artifact."""

    batch: BatchConfig = field(default_factory=BatchConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    # Re-embed the probe set at load and refuse a drifting model. Only tests of the check itself turn it off.
    verify_fingerprint: bool = True


def _optional_inner(target: Any) -> Any | None:
    """X for `X | None` / Optional[X], else None."""
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(target) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(target)) == 2:
            return args[0]
    return None


def _coerce(value: Any, target: Any, from_env: bool = False) -> Any:
    """`value` as type `target`; ValueError with a short reason ("expected an integer") when it is not one.

    Environment values are always strings; mapping values may already be typed (YAML, JSON).
    """
    inner = _optional_inner(target)
    if inner is not None:
        if value is None or (from_env and isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        return _coerce(value, inner, from_env)
    if typing.get_origin(target) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a comma-separated string or a list of strings, got {_kind(value)}")
        return tuple(value)
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise ValueError(f"expected a boolean (one of {', '.join(BOOL_WORDS)}; case-insensitive)")
    if target is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("expected an integer") from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError(
            "expected an integer" + ("" if isinstance(value, float) else f", got {_kind(value)}")
        )
    if target is float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("expected a number") from None
        if not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return float(value)
    if target is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)} (quote it in YAML)")
        return value
    return value


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


@dataclass
class _Given:
    """One setting that was supplied (not left at its default), for error messages."""

    owner: str  # the dataclass holding the field
    path: str  # field path from the config being built, e.g. "batch.batch_tokens"
    value: Any
    source: str  # "mapping", "env" or the overrides label
    env_var: str = ""

    def describe(self) -> str:
        if self.source == "env":
            return f"environment variable {self.env_var}={self.value!r}"
        if self.source == COMMAND_LINE:  # spelled as the user typed it
            return f"--{self.path.rsplit('.', 1)[-1].replace('_', '-')} {self.value}"
        return f"{self.owner}.{self.path.rsplit('.', 1)[-1]}={self.value!r} (from {self.source})"


def from_mapping(
    cls: type[T],
    data: Mapping[str, Any] | None,
    env_prefix: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_from: str = "overrides",
) -> T:
    """Build a config dataclass: defaults < `data` < `env_prefix`+FIELD environment variables < `overrides`.

    Nested dataclass fields read a sub-mapping and the prefix `env_prefix`+FIELD+"_" (e.g.
    SchedulerConfig.batch.batch_tokens <- QM_SCHED_BATCH_BATCH_TOKENS). `overrides` (e.g. command-line
    flags given explicitly) win over everything; `overrides_from` names them in error messages.
    Every refusal is a ConfigError naming the environment variable or key it came from.
    """
    return _build(cls, data, env_prefix, overrides, overrides_from, [])


def _build(
    cls: type[T],
    data: Any,
    env_prefix: str | None,
    overrides: Any,
    overrides_from: str,
    given: list[_Given],
    path: str = "",
) -> T:
    name = cls.__name__
    layers: list[tuple[str, dict[str, Any]]] = []
    for source, raw in (("mapping", data), (overrides_from, overrides)):
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{name}={raw!r} (from {source}): expected a mapping, got {_kind(raw)}")
        layers.append((source, dict(raw or {})))
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    known = {f.name for f in fields}
    for source, layer in layers:
        unknown = set(layer) - known
        if unknown:
            raise ConfigError(
                f"{name}: unknown setting(s) {sorted(unknown)} (from {source}); known: {sorted(known)}"
            )
    mine: list[_Given] = []
    kwargs: dict[str, Any] = {}
    for f in fields:
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            for source, layer in layers:
                if layer.get(f.name) is not None and not isinstance(layer[f.name], Mapping):
                    raise ConfigError(
                        f"{name}.{f.name}={layer[f.name]!r} (from {source}): expected a mapping of "
                        f"{getattr(hint, '__name__', hint)} settings, got {_kind(layer[f.name])}"
                    )
            sub_prefix = f"{env_prefix}{f.name.upper()}_" if env_prefix else None
            kwargs[f.name] = _build(
                hint,  # type: ignore[arg-type]
                layers[0][1].get(f.name),
                sub_prefix,
                layers[1][1].get(f.name),
                overrides_from,
                mine,
                f"{path}{f.name}.",
            )
            continue
        candidates: list[_Given] = []
        if f.name in layers[0][1]:
            candidates.append(_Given(name, path + f.name, layers[0][1][f.name], "mapping"))
        if env_prefix and (env := os.environ.get(var := f"{env_prefix}{f.name.upper()}")) is not None:
            candidates.append(_Given(name, path + f.name, env, "env", var))
        if f.name in layers[1][1]:
            candidates.append(_Given(name, path + f.name, layers[1][1][f.name], overrides_from))
        for g in candidates:  # every layer must be valid, even one a later layer replaces
            try:
                kwargs[f.name] = _coerce(g.value, hint, from_env=g.source == "env")
            except ValueError as exc:
                raise ConfigError(f"{g.describe()}: {exc}") from None
        if candidates:
            mine.append(candidates[-1])
    missing = [
        f.name
        for f in fields
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        hint_env = (
            f" (nor environment variable(s) {[f'{env_prefix}{m.upper()}' for m in missing]})"
            if env_prefix
            else ""
        )
        raise ConfigError(f"{name}: required setting(s) {missing} not given{hint_env}")
    try:
        result = cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise _refusal(name, path, exc, mine) from None
    given.extend(mine)
    return result


def _refusal(name: str, path: str, exc: ValueError, given: list[_Given]) -> ConfigError:
    """ConfigError for a ValueError from `name`'s __post_init__, naming the settings involved."""
    if isinstance(exc, FieldValueError):
        g = next((g for g in given if g.path == path + exc.name), None)
        if g is not None and g.source == "env":
            return ConfigError(f"{g.describe()} ({exc.owner}.{exc.name}): {exc.reason}")
        if g is not None and g.source == COMMAND_LINE:
            return ConfigError(f"{g.describe()}: {exc.reason}")
        if g is not None:
            return ConfigError(f"{exc.owner}.{exc.name}={exc.value!r} (from {g.source}): {exc.reason}")
    message = str(exc)
    # The settings the message mentions; all that were given when it mentions none of them.
    named = [g for g in given if _mentions(message, g.path)] or given
    involved = ", ".join(g.describe() for g in named) or "none, all defaults"
    prefix = "" if message.startswith(name) else f"{name}: "
    return ConfigError(f"{prefix}{message} (settings given: {involved})")


def _mentions(message: str, path: str) -> bool:
    return any(re.search(rf"\b{re.escape(part)}\b", message) for part in path.split("."))


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
