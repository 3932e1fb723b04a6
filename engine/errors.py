"""Errors of the engine's own: what a backend raises when it cannot take work right now."""

from __future__ import annotations

from embedder.errors import EmbedderError


class BackendUnavailable(EmbedderError):
    """A stage of the backend is overloaded, restarting or gone (HTTP 503 with Retry-After).

    The Serve-handle backends raise it in place of Ray's own exceptions (backpressure, a dead or
    unreachable replica), so nothing above deployments/ sees a Ray type.
    """
