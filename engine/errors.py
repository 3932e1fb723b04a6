"""Errors of the engine's own: what a backend raises when it cannot take work right now."""

from __future__ import annotations

from embedder.errors import EmbedderError


class BackendUnavailable(EmbedderError):
    """A stage of the backend is overloaded, restarting or gone (HTTP 503 with Retry-After).

    The Serve-handle backends raise it in place of Ray's own exceptions (backpressure, a dead or
    unreachable replica), so nothing above deployments/ sees a Ray type.
    """


class UnknownModel(EmbedderError):
    """A request named a model this service does not serve (HTTP 404, OpenAI's `model_not_found`).

    A domain error, so the engine's model set stays free of HTTP; `field` names the request field.
    """

    def __init__(self, message: str, field: str = "model") -> None:
        super().__init__(message)
        self.field = field


class ModelMemoryRefused(BackendUnavailable):
    """Loading a model would take the replica past its memory budget (HTTP 503; the message, with
    the numbers and no path, is shown to the client)."""
