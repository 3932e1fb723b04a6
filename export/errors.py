"""The export's one error: refused or failed, with the reason (exit 2, one line, no traceback)."""

from __future__ import annotations

from embedder.errors import EmbedderError


class ExportError(EmbedderError):
    """Export refused or failed (not a sentence-transformers dir, unsupported architecture, parity)."""
