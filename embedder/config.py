"""Model settings: the session (backend, precision, providers, threads) and the batching of model calls.

Each is a frozen dataclass with a default and the reason for it, built by the one settings loader
(settings.loader.from_mapping) from a mapping with `QM_SESSION_*` / `QM_BATCH_*` environment overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from settings.loader import COMMAND_LINE, check_field, from_mapping

# Execution providers and graph optimisation levels embedder.session knows how to build.
PROVIDERS = ("cpu", "cuda")
BACKENDS = ("auto", "onnxruntime", "openvino")
# Runtime precisions of an fp32 artifact (int8 and fp16 are exported artifacts).
RUNTIME_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


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
    # Pad every model call's sequence length up to a multiple of this (0 or 1: no padding). Each
    # distinct (batch, length) a runtime sees keeps a compiled kernel (OpenVINO, ~0.3-1 MiB each
    # here) or a memory plan (onnxruntime's memory pattern); random-length traffic feeds every
    # length: 2,348 shapes for max_seq_length 256 at the default batching, more than
    # openvino_shape_cache holds, so the cache churns and RSS kept growing (bench.memory shapes).
    # 8 leaves 299 (374 at 512 tokens), under the cache: flat once seen. The attention mask hides
    # the padding (vectors within 1e-6 cosine); it costs padded tokens: +1% on the mixed
    # requests, +19-23% on short questions (bench.memory speed measures the time).
    pad_to_multiple: int = 8
    # Model calls that run at once on this session, each on `threads` threads (the scheduler's
    # lanes, SchedulerConfig.workers). onnxruntime takes concurrent calls as they come (they share
    # its intra-op pool); OpenVINO compiles enough copies of the model for them (a stream runs one
    # call at a time; embedder/openvino_session.py copies_for): +72 MiB a copy for MiniLM bf16.
    # 0: as many as the host's scheduler has lanes (the in-process backend), else 1.
    concurrent_runs: int = 0
    # onnxruntime's memory pattern: plans the buffers of a call from the previous call of the same
    # input shape, and keeps one plan per shape it has seen. Measured per shape in bench.memory.
    onnxruntime_mem_pattern: bool = True

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
        check_field(self, "concurrent_runs", self.concurrent_runs >= 0, "must be >= 0 (0: the host's lanes)")
        check_field(self, "openvino_shape_cache", self.openvino_shape_cache >= 0, "must be >= 0")
        check_field(
            self, "pad_to_multiple", 0 <= self.pad_to_multiple <= 512, "must be 0 (off) or 1..512 tokens"
        )

    @property
    def wants_cuda(self) -> bool:
        """True when the CUDA provider is requested."""
        return any(p.strip().lower() == "cuda" for p in self.providers)


# Environment prefix of SessionConfig fields (QM_SESSION_BACKEND=openvino, QM_SESSION_PRECISION=bf16, ...).
SESSION_ENV_PREFIX = "QM_SESSION_"


def session_config(
    data: Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None
) -> SessionConfig:
    """SessionConfig: defaults < `data` (YAML, Serve args) < QM_SESSION_<FIELD> < `flags`.

    `flags` are the options given on a command line (None values left out by the caller); a
    refused one is named as typed (`--threads -1: must be >= 0`).
    """
    return from_mapping(
        SessionConfig, data, env_prefix=SESSION_ENV_PREFIX, overrides=flags, overrides_from=COMMAND_LINE
    )


@dataclass(frozen=True)
class EncoderConfig:
    """Everything an Encoder needs besides the artifact."""

    batch: BatchConfig = field(default_factory=BatchConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    # Re-embed the probe set at load and refuse a drifting model. Only tests of the check itself turn it off.
    verify_fingerprint: bool = True
