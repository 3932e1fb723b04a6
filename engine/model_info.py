"""What the service knows about the model it serves: built from the artifact's Manifest, not copied.

/info, /v1/models and the readiness probe read the Manifest through this one object, so a field
added to the Manifest is exposed here once (`describe`) instead of being copied field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import storage
from embedder.artifact import Artifact, Manifest
from embedder.prompts import Prompts


@dataclass(frozen=True)
class ModelInfo:
    """The served model: its name, fingerprint, tokenizer vocabulary and the artifact's Manifest."""

    name: str
    fingerprint: str
    manifest: Manifest
    vocab_size: int
    # Vectors of embedder.probe.PROBE_TEXTS stored in the artifact; /ready compares against them
    # within the tolerance of the precision the model replicas run (embedder.probe.probe_floor).
    probe_vectors: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def from_artifact(cls, artifact: Artifact, vocab_size: int, name: str = "") -> ModelInfo:
        """The model of an artifact; `name` defaults to the artifact directory's name."""
        return cls(
            name or cls.default_name(artifact),
            artifact.fingerprint,
            artifact.manifest,
            vocab_size,
            artifact.probe_vectors,
        )

    @staticmethod
    def default_name(artifact: Artifact) -> str:
        """The name a model gets when none is given: its artifact directory's."""
        # The manifest's source_model is often a local path; the artifact directory names the model.
        return storage.resolve(artifact.origin).name if artifact.origin else artifact.path.name

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        return self.manifest.dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens the model accepts per text."""
        return self.manifest.max_seq_length

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised by default."""
        return self.manifest.normalize

    @property
    def pooling(self) -> str:
        """The pooling mode (mean / cls / max / last-token)."""
        return self.manifest.pooling

    @property
    def pooling_in_graph(self) -> bool:
        """True when the ONNX graph pools (and maybe normalises) itself."""
        return self.manifest.pooling_in_graph

    def prompt_set(self) -> Prompts:
        """The prompts (only those with text, as the encoder applies them) with sentence-transformers' rules."""
        return self.manifest.prompt_set()

    @property
    def prompts(self) -> dict[str, str]:
        """Prompt name -> text: what a request's prompt_name may be."""
        return dict(self.prompt_set().prompts)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt used when a request names none (None: no prompt)."""
        return self.prompt_set().default_name

    def describe(self) -> dict[str, Any]:
        """The model's fields of GET /info (service.contract.InfoResponse), in one place."""
        prompts = self.prompt_set()
        return {
            "model": self.name,
            "model_fingerprint": self.fingerprint,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "precision": self.manifest.precision,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            # The prompts /match gives questions (encode_query rule) and an index's documents
            # must have had (encode_document rule).
            "query_prompt_name": prompts.query_name(),
            "document_prompt_name": prompts.document_name(),
        }
