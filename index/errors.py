"""Errors of the index and its collections, which the adapters map to a status of their own."""

from __future__ import annotations

from embedder.errors import EmbedderError


class UnknownCollection(EmbedderError):
    """/match or a status route named a collection this service does not have (HTTP 404).

    A domain error, not an HTTP one, so the collections stay free of the service; `field` names
    the request field, as InvalidInput's does.
    """

    def __init__(self, message: str, field: str = "collection") -> None:
        super().__init__(message)
        self.field = field


class IndexInvalid(EmbedderError):
    """An index directory is missing, incomplete or inconsistent."""


class IndexUnavailable(EmbedderError):
    """No index version is loaded (none published yet, or every candidate was refused)."""
