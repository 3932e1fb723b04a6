"""Encoder: texts -> float32 vectors, identical to the source sentence-transformers model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedder.artifact import Artifact
from embedder.config import BatchConfig, EncoderConfig, session_config
from embedder.errors import InvalidInput, ModelMismatch
from embedder.graph_runner import GraphRunner
from embedder.pooling import Pooler, truncate_dims
from embedder.probe import PROBE_TEXTS, probe_floor, probe_plan
from embedder.prompts import Prompts
from embedder.session import RuntimeInfo
from embedder.tokenize import TextTokenizer, Tokenized, plan_batches


@dataclass(frozen=True)
class Encoded:
    """Vectors in input order plus what the tokenizer saw (for usage counts and job summaries)."""

    vectors: np.ndarray  # float32 (n, d)
    token_counts: np.ndarray  # int64 (n,), before truncation
    truncated: np.ndarray  # bool (n,)


class Encoder:
    """Tokenizer + GraphRunner + Pooler for one artifact, with fingerprint verification at load."""

    def __init__(
        self, artifact: Artifact, config: EncoderConfig, backbone: GraphRunner | None = None
    ) -> None:
        self.artifact = artifact
        self.config = config
        self.tokenizer = TextTokenizer.from_artifact(artifact)
        # A given backbone: a Serve model replica verifying the probe through its own session.
        self.backbone = backbone or GraphRunner.from_artifact(artifact, config.session)
        self.pooler = Pooler.from_artifact(artifact)
        if config.verify_fingerprint:
            verify_probe(self)

    @classmethod
    def load(
        cls,
        artifact_dir: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        batch: BatchConfig | None = None,
        config: EncoderConfig | None = None,
        backend: str | None = None,
        precision: str | None = None,
    ) -> Encoder:
        """Load an artifact directory; raises ArtifactError / ModelMismatch / ProviderUnavailable.

        backend: "auto" | "onnxruntime" | "openvino"; precision: "auto" | "fp32" | "bf16" | "fp16"
        (None keeps the config's, whose default is auto). int8 stays an artifact: load the int8 one.
        """
        # No config: the session settings come from QM_SESSION_* (so a job or script can be switched
        # to a backend or precision without code), else the defaults.
        cfg = config or EncoderConfig(session=session_config())
        session = cfg.session
        if backend is not None:
            session = dataclasses.replace(session, backend=backend)
        if precision is not None:
            session = dataclasses.replace(session, precision=precision)
        if providers is not None:
            session = dataclasses.replace(session, providers=tuple(providers))
        if threads is not None:
            session = dataclasses.replace(session, threads=threads)
        cfg = dataclasses.replace(cfg, batch=batch or cfg.batch, session=session)
        return cls(Artifact.load(artifact_dir), cfg)

    @property
    def runtime(self) -> RuntimeInfo:
        """Which backend, precision, device and CPU units produce this encoder's vectors."""
        return self.backbone.runtime

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        return self.artifact.manifest.dimension

    @property
    def fingerprint(self) -> str:
        """The artifact's fingerprint (verified at load)."""
        return self.artifact.fingerprint

    @property
    def max_seq_length(self) -> int:
        """Tokens per text the model sees; longer texts are truncated or refused."""
        return self.artifact.manifest.max_seq_length

    @property
    def prompts(self) -> Prompts:
        """The model's prompts and sentence-transformers' rules for choosing one."""
        return self.artifact.manifest.prompt_set()

    def encode(
        self,
        texts: Sequence[str],
        truncate: bool = True,
        normalize: bool | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> np.ndarray:
        """(n, dim) float32 vectors in input order.

        prompt_name means what it means to sentence-transformers' `encode`: a key of the model's
        prompts, or None for the model's default prompt (no prompt when it has none).
        """
        return self.encode_detailed(texts, truncate, normalize, dimensions, prompt_name).vectors

    def encode_query(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        """Vectors by sentence-transformers' `encode_query` rule (the "query" prompt when the model has one)."""
        return self.encode(texts, prompt_name=self.prompts.query_name(), **options)

    def encode_document(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        """Vectors by `encode_document`'s rule (the first of "document", "passage", "corpus" it has)."""
        return self.encode(texts, prompt_name=self.prompts.document_name(), **options)

    def encode_detailed(
        self,
        texts: Sequence[str],
        truncate: bool = True,
        normalize: bool | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> Encoded:
        """Vectors plus token counts (prompt included) and truncation flags."""
        if isinstance(texts, str):
            raise InvalidInput("encode() takes a list of texts, not a single string", field="input")
        dim = dimensions or self.dimension
        if not texts:
            return Encoded(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        fused = self.artifact.manifest.pooling_in_graph
        if fused and normalize is False and self.artifact.manifest.normalize:
            raise InvalidInput(
                "normalize=false is not available: this artifact normalises inside the graph", "normalize"
            )
        prompt = self.prompts.resolve(prompt_name)
        tokenized = self.tokenizer.tokenize(texts, truncate=truncate, prompt=prompt)
        return self.encode_tokenized(tokenized, normalize, dimensions)

    def encode_tokenized(
        self, tokenized: Tokenized, normalize: bool | None = None, dimensions: int | None = None
    ) -> Encoded:
        """Vectors for texts already tokenized by `self.tokenizer` (lets a job tokenize ahead of the model)."""
        if not tokenized.ids:
            dim = dimensions or self.dimension
            return Encoded(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        fused = self.artifact.manifest.pooling_in_graph
        out = np.empty((len(tokenized.ids), self.dimension), dtype=np.float32)
        for indices in plan_batches(tokenized.lengths, self.config.batch):
            batch = tokenized.batch(indices)
            if fused:
                vectors = self.backbone.run_pooled(batch)
            else:
                vectors = self.pooler(self.backbone.run(batch), normalize=normalize)
            out[vectors.positions] = vectors.embeddings
        if dimensions is not None:
            norm = self.artifact.manifest.normalize if normalize is None else normalize
            out = truncate_dims(out, dimensions, norm)
        return Encoded(out, tokenized.token_counts, tokenized.truncated)


def probe_cosines(encoder: Encoder) -> np.ndarray:
    """Cosine of each freshly embedded probe text to the vector stored in the artifact."""
    stored = encoder.artifact.probe_vectors
    fresh = embed_probe(encoder)
    if stored.shape != fresh.shape:
        raise ModelMismatch(f"probe vectors have shape {stored.shape}, the model gives {fresh.shape}")
    return cosine_rows(stored, fresh)


def embed_probe(encoder: Encoder) -> np.ndarray:
    """The probe rows an artifact stores: the probe texts as `encode` gives them, then a few per prompt."""
    rows = [
        encoder.encode(list(texts), prompt_name=name)
        for name, texts in probe_plan(encoder.prompts.names, PROBE_TEXTS)
    ]
    return np.concatenate(rows)


def verify_probe(encoder: Encoder) -> None:
    """Re-embed the probe set and refuse a model whose vectors drifted past its precision's tolerance."""
    cos = probe_cosines(encoder)
    runtime = encoder.runtime
    floor = probe_floor(runtime.tolerance_key)
    if float(cos.min()) < floor:
        worst = int(cos.argmin())
        worst_text = [t for _, texts in probe_plan(encoder.prompts.names, PROBE_TEXTS) for t in texts][worst]
        raise ModelMismatch(
            f"artifact {encoder.artifact.path} ({encoder.fingerprint}): probe text {worst} "
            f"({worst_text[:40]!r}) embeds with cosine {cos.min():.6f} to the stored vector "
            f"(minimum {floor} for {runtime.tolerance_key} on {runtime.backend}/{runtime.device}). The "
            "runtime, tokenizer or model differs from the one that exported this artifact; refusing to "
            "serve drifting vectors."
        )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", an, bn)
