"""The ONNX graph as a stage (the backbone of the pipeline): TokenBatch in, HiddenStates (or pooled vectors) out."""

from __future__ import annotations

import numpy as np

from embedder.artifact import Artifact
from embedder.batches import HiddenStates, TokenBatch, Vectors
from embedder.config import SessionConfig, session_config
from embedder.session import create_session


def bucket_width(width: int, multiple: int, limit: int) -> int:
    """`width` rounded up to a multiple of `multiple` (<= 1: unchanged), never past `limit` (the
    model's max_seq_length) unless the batch is already longer."""
    if multiple <= 1:
        return width
    return max(width, min(-(-width // multiple) * multiple, limit))


def pad_batch(batch: TokenBatch, width: int, pad_token_id: int) -> TokenBatch:
    """The batch with columns of padding (id pad_token_id, mask 0) up to `width`."""
    extra = width - batch.input_ids.shape[1]
    if extra <= 0:
        return batch
    cols = ((0, 0), (0, extra))
    return TokenBatch(
        input_ids=np.pad(batch.input_ids, cols, constant_values=pad_token_id),
        attention_mask=np.pad(batch.attention_mask, cols),
        token_type_ids=np.pad(batch.token_type_ids, cols),
        positions=batch.positions,
    )


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
        # Every (batch, length) fed to the session: what per-shape caches grow with. Bounded by
        # max_batch_size x max_seq_length, so keeping it costs little; bench.memory reads it.
        self.shapes: set[tuple[int, int]] = set()

    @classmethod
    def from_artifact(cls, artifact: Artifact, config: SessionConfig | None = None) -> GraphRunner:
        """Build the session for an artifact."""
        return cls(artifact, config or session_config())

    def _run(self, batch: TokenBatch) -> np.ndarray:
        manifest = self.artifact.manifest
        width = batch.input_ids.shape[1]
        fed = pad_batch(
            batch,
            bucket_width(width, self.config.pad_to_multiple, manifest.max_seq_length),
            manifest.pad_token_id,
        )
        self.shapes.add((fed.size, fed.input_ids.shape[1]))
        (out,) = self.session.run([self.output_name], fed.feeds(self.input_names))
        # fp16 graphs keep fp32 I/O, but be safe: downstream numpy code expects float32.
        out = np.asarray(out, dtype=np.float32)
        # Per-token outputs lose the bucket's padding columns again: callers see their batch's width.
        return out[:, :width] if out.ndim == 3 else out

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
