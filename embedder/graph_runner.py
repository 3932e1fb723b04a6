"""The ONNX graph as a stage (the backbone of the pipeline): TokenBatch in, HiddenStates (or pooled vectors) out."""

from __future__ import annotations

import numpy as np

from embedder.artifact import Artifact
from embedder.batches import HiddenStates, TokenBatch, Vectors
from embedder.config import SessionConfig, session_config
from embedder.session import create_session


class GraphRunner:
    """Holds one InferenceSession for an artifact."""

    def __init__(self, artifact: Artifact, config: SessionConfig) -> None:
        self.artifact = artifact
        self.config = config
        # Which runtime runs the graph is the factory's business; above it everything is one code path.
        self.session, self.runtime = create_session(artifact.model_path, config, artifact.manifest.precision)
        self.input_names = artifact.manifest.input_names
        self.output_name = artifact.manifest.output_name
        self.pooling_in_graph = artifact.manifest.pooling_in_graph

    @classmethod
    def from_artifact(cls, artifact: Artifact, config: SessionConfig | None = None) -> GraphRunner:
        """Build the session for an artifact."""
        return cls(artifact, config or session_config())

    def _feeds(self, batch: TokenBatch) -> dict[str, np.ndarray]:
        return batch.feeds(self.input_names)

    def _run(self, batch: TokenBatch) -> np.ndarray:
        (out,) = self.session.run([self.output_name], self._feeds(batch))
        # fp16 graphs keep fp32 I/O, but be safe: downstream numpy code expects float32.
        return np.asarray(out, dtype=np.float32)

    def run(self, batch: TokenBatch) -> HiddenStates:
        """Per-token vectors for a batch (artifacts without pooling in the graph)."""
        if self.pooling_in_graph:
            raise ValueError("this artifact pools inside the graph; call run_pooled()")
        return HiddenStates(self._run(batch), batch.attention_mask, batch.positions)

    def run_pooled(self, batch: TokenBatch) -> Vectors:
        """Final vectors for a batch (artifacts exported with --pooling-in-graph)."""
        if not self.pooling_in_graph:
            raise ValueError("this artifact has no pooling in the graph; call run() and pool")
        return Vectors(self._run(batch), batch.positions)
