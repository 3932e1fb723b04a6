"""Per-call model batches: TokenBatch (padded inputs) -> HiddenStates -> Vectors, with input positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    """Padded model inputs for one onnxruntime call.

    `positions[i]` is the index, in the caller's list, of the text in row i, so results can be
    put back in input order after length-sorted batching.
    """

    input_ids: np.ndarray  # int64 (b, L)
    attention_mask: np.ndarray  # int64 (b, L)
    token_type_ids: np.ndarray  # int64 (b, L)
    positions: np.ndarray  # int64 (b,)

    @property
    def size(self) -> int:
        """Number of texts in the batch."""
        return int(self.input_ids.shape[0])

    @property
    def padded_tokens(self) -> int:
        """Tokens the model computes, padding included (the cost of the batch)."""
        return int(self.input_ids.size)

    def feeds(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's inputs by name (an artifact lists the ones its graph takes)."""
        available = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        return {name: available[name] for name in input_names}


@dataclass(frozen=True)
class HiddenStates:
    """Backbone output: per-token vectors and the mask saying which tokens are real."""

    token_embeddings: np.ndarray  # float32 (b, L, d)
    attention_mask: np.ndarray  # int64 (b, L)
    positions: np.ndarray  # int64 (b,)


@dataclass(frozen=True)
class Vectors:
    """Final sentence vectors for a batch, with where each row belongs in the caller's list."""

    embeddings: np.ndarray  # float32 (b, d)
    positions: np.ndarray  # int64 (b,)
