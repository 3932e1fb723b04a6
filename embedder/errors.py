"""Domain exceptions. Adapters (HTTP ingress, jobs) map these to status codes / quarantine reasons."""

from __future__ import annotations


class EmbedderError(Exception):
    """Base class: every error the core raises on purpose."""


class ArtifactError(EmbedderError):
    """The artifact directory is missing, incomplete or unreadable."""


class ModelMismatch(EmbedderError):
    """Vectors or files do not match the fingerprint they claim (drift, corruption, wrong model)."""


class ProviderUnavailable(EmbedderError):
    """A requested backend or execution provider (OpenVINO, CUDA) is not installed or did not load."""


class InvalidInput(EmbedderError):
    """A client's input is unusable; `field` names what was wrong."""

    def __init__(self, message: str, field: str = "input") -> None:
        super().__init__(message)
        self.field = field


class EmptyInput(InvalidInput):
    """An empty or whitespace-only text (it has no meaning to embed)."""


class InputTooLong(InvalidInput):
    """A text has more tokens than the model's max length and truncation was not allowed."""

    def __init__(self, message: str, token_count: int, max_tokens: int, field: str = "input") -> None:
        super().__init__(message, field)
        self.token_count = token_count
        self.max_tokens = max_tokens


class PlacementError(ProviderUnavailable):
    """Compute nodes of the graph run on another device than the one asked for (e.g. CPU under CUDA)."""
