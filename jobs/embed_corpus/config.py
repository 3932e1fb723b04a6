"""Every setting of one embedding run (flags / QM_JOB_* through jobs.common.cli; recorded in
_RUN.json and _SUMMARY.json), with the device defaults resolved (providers, batching, CPUs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from embedder.config import BACKENDS, PROVIDERS, RUNTIME_PRECISIONS, BatchConfig, batch_defaults
from jobs.embed_corpus.run_state import LEASE_TTL_SECONDS
from jobs.embed_corpus.udfs import TOO_LONG_POLICIES
from settings.loader import check_field


@dataclass(frozen=True)
class JobConfig:
    """Every setting of one embedding run (recorded in _RUN.json and _SUMMARY.json)."""

    artifact: str
    input: str
    output: str
    text_column: str = "question"
    # None: use an 'id' column when the input has one, else the global row position.
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    device: str = "cpu"  # "cpu" | "gpu"
    # onnxruntime execution providers of the actors; None = ("cuda",) on gpu, ("cpu",) on cpu.
    # With device gpu the list must hold "cuda": a CPU session on a reserved GPU would waste it.
    providers: tuple[str, ...] | None = None
    # Model runtime and precision (embedder.runtime_choice): None = the nodes' QM_SESSION_BACKEND /
    # QM_SESSION_PRECISION, else auto (OpenVINO bf16 on CPUs with AMX / AVX-512 BF16 when the
    # openvino extra is installed, onnxruntime fp32 elsewhere; fp32 on CUDA unless fp16 is asked).
    backend: str | None = None
    precision: str | None = None
    # CUDA TF32 matmuls (faster on Ampere+, ~1e-3 relative; the probe then uses its TF32 floor).
    cuda_tf32: bool = False
    # Only for rehearsing GPU scheduling on a fake cluster (tests, cluster/autoscale-local.yaml):
    # actors reserve GPUs as with device gpu but run the providers given (e.g. cpu), so the
    # vectors come from the CPU. Never set it for a real run.
    cpu_stand_in_for_gpu: bool = False
    # Actor pool bounds; each actor holds one Encoder (one model copy in memory).
    min_actors: int = 1
    max_actors: int = 2
    # Batching per onnxruntime call; None = the device's default (embedder.config.batch_defaults:
    # cache-sized batches on cpu, large ones that fill the device on gpu).
    batch_tokens: int | None = None
    max_batch_size: int | None = None
    call_overhead_tokens: int | None = None
    # Shards per UDF call (map_batches batch_size); 0 = 1 on cpu, 4 on gpu. Above 1 an actor
    # reads and tokenizes the next shard and writes the previous one while the model runs, so a
    # GPU does not wait for parquet I/O; on cpu those threads would compete with the model's.
    shards_per_call: int = 0
    too_long: str = "truncate"  # or "quarantine"
    # Rows per shard (the unit of retry and resume); 0 = about 8 shards per actor, 256..8192.
    shard_rows: int = 0
    # Logical CPU reservation per actor; None = 1 on cpu, 0 on gpu. 1, not 2: an actor taking
    # every CPU of a 2-CPU node starves Ray Data's other operators and the pipeline deadlocks.
    # 0 on gpu because GPU node types advertise CPU 0 (cluster.yaml): then no CPU-only work can
    # ever make the autoscaler start a GPU node, and a GPU actor must not wait for a CPU there.
    cpus_per_actor: float | None = None
    # onnxruntime intra-op threads per actor; 0 = the actor's CPU reservation (at least 1).
    threads_per_actor: int = 0
    gpus_per_actor: float = 1.0
    # --device gpu: how long to wait for the autoscaler to bring up GPU nodes for min_actors
    # actors before giving up (GPU instances often take minutes to boot and set up).
    gpu_wait_seconds: float = 600.0
    # A second run on this output is refused while this run's lease is fresher than this (its
    # heartbeat renews it every ttl/4); a crashed driver's lease expires after it.
    lease_ttl_seconds: float = LEASE_TTL_SECONDS
    ray_address: str | None = None  # None: ray.init() default (the running cluster, else a local one)
    progress: bool = True
    # An earlier complete output of the same artifact: reuse its vectors for unchanged texts.
    previous: str | None = None
    # Which of the model's prompts the texts get. None: the document prompt by sentence-transformers'
    # encode_document rule (the first of "document", "passage", "corpus" the model has, else its
    # default prompt), because the corpus is what /match's queries are compared with.
    prompt_name: str | None = None

    def __post_init__(self) -> None:
        check_field(self, "device", self.device in ("cpu", "gpu"), "must be 'cpu' or 'gpu'")
        check_field(
            self, "too_long", self.too_long in TOO_LONG_POLICIES, f"must be one of {TOO_LONG_POLICIES}"
        )
        check_field(self, "min_actors", self.min_actors >= 1, "must be >= 1")
        check_field(
            self,
            "max_actors",
            self.max_actors >= self.min_actors,
            f"must be >= min_actors ({self.min_actors})",
        )
        for name in ("batch_tokens", "max_batch_size"):
            value = getattr(self, name)
            check_field(self, name, value is None or value >= 1, "must be >= 1 (or unset: device default)")
        check_field(
            self,
            "call_overhead_tokens",
            self.call_overhead_tokens is None or self.call_overhead_tokens >= 0,
            "must be >= 0 (or unset: device default)",
        )
        for name in ("shard_rows", "threads_per_actor", "shards_per_call"):
            check_field(self, name, getattr(self, name) >= 0, "must be >= 0 (0: automatic)")
        check_field(self, "gpu_wait_seconds", self.gpu_wait_seconds >= 0, "must be >= 0")
        check_field(self, "lease_ttl_seconds", self.lease_ttl_seconds > 0, "must be > 0")
        check_field(self, "backend", self.backend in (None, *BACKENDS), f"must be one of {list(BACKENDS)}")
        check_field(
            self,
            "precision",
            self.precision in (None, *RUNTIME_PRECISIONS),
            f"must be one of {list(RUNTIME_PRECISIONS)} (int8 is an exported artifact)",
        )
        self._check_providers()
        check_field(self, "gpus_per_actor", self.gpus_per_actor > 0, "must be > 0")
        if self.cpus_per_actor is not None:
            ok = self.cpus_per_actor > 0 or (self.device == "gpu" and self.cpus_per_actor == 0)
            check_field(self, "cpus_per_actor", ok, "must be > 0 (0 allowed with --device gpu)")

    def _check_providers(self) -> None:
        if self.providers is None:
            check_field(
                self,
                "cpu_stand_in_for_gpu",
                not self.cpu_stand_in_for_gpu,
                "needs providers without cuda (e.g. providers=('cpu',)) and device=gpu",
            )
            return
        check_field(self, "providers", len(self.providers) > 0, "must name at least one provider")
        for name in self.providers:
            check_field(
                self,
                "providers",
                name in PROVIDERS,
                f"unknown provider {name!r}; expected some of {PROVIDERS}",
            )
        if self.device == "gpu":
            check_field(
                self,
                "providers",
                "cuda" in self.providers or self.cpu_stand_in_for_gpu,
                "device=gpu reserves a GPU per actor, but these providers would run the model on the "
                "CPU; add 'cuda', or use device=cpu (cpu_stand_in_for_gpu=true only rehearses GPU "
                "scheduling on a fake cluster)",
            )
        else:
            check_field(
                self,
                "providers",
                "cuda" not in self.providers and "tensorrt" not in self.providers,
                "device=cpu reserves no GPU for the actors; a GPU provider needs device=gpu",
            )
            check_field(self, "cpu_stand_in_for_gpu", not self.cpu_stand_in_for_gpu, "only with device=gpu")

    @property
    def actor_providers(self) -> tuple[str, ...]:
        """The actors' onnxruntime providers after the device default."""
        if self.providers is not None:
            return self.providers
        return ("cuda",) if self.device == "gpu" else ("cpu",)

    @property
    def batch(self) -> BatchConfig:
        """Batching for the actors: the fields given, the device's defaults for the rest."""
        base = batch_defaults(self.device)
        return BatchConfig(
            batch_tokens=self.batch_tokens or base.batch_tokens,
            max_batch_size=self.max_batch_size or base.max_batch_size,
            call_overhead_tokens=(
                base.call_overhead_tokens if self.call_overhead_tokens is None else self.call_overhead_tokens
            ),
        )

    @property
    def shards_in_each_call(self) -> int:
        """map_batches batch_size after the device default."""
        return self.shards_per_call or (4 if self.device == "gpu" else 1)

    @property
    def actor_cpus(self) -> float:
        """The CPU reservation per actor after the device default."""
        if self.cpus_per_actor is not None:
            return self.cpus_per_actor
        return 0.0 if self.device == "gpu" else 1.0


def actor_threads(cfg: JobConfig) -> int:
    """onnxruntime threads each actor uses."""
    return cfg.threads_per_actor or max(1, int(cfg.actor_cpus))


def config_record(cfg: JobConfig) -> dict[str, Any]:
    """The settings as recorded in _RUN.json / _SUMMARY.json: device defaults resolved to what ran."""
    record = dataclasses.asdict(cfg)
    record.update(
        providers=list(cfg.actor_providers),
        shards_per_call=cfg.shards_in_each_call,
        cpus_per_actor=cfg.actor_cpus,
        **dataclasses.asdict(cfg.batch),
    )
    return record
