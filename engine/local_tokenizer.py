"""The artifact's tokenizer as an async stage: the part every topology runs the same way.

Every topology tokenizes here (inline and fused in the ingress, graph in the Tokenizer
deployment), so a prompt reaches the model the same way in all of them.
"""

from __future__ import annotations

import asyncio

from embedder.handoff import TokenPack, pack_tokens
from embedder.tokenize import TextTokenizer
from engine.backend import TokenSpan

# Tokenizing this many texts takes long enough (~0.1 ms a text) to move off the event loop.
THREAD_TOKENIZE_AT = 64


class LocalTokenizer:
    """Tokenize and explain texts with the artifact's tokenizer, in this process."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    async def tokenize(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Token ids truncated to max length, counts before truncation; the prompt counts toward both."""
        if len(texts) >= THREAD_TOKENIZE_AT:
            return await asyncio.to_thread(self._pack, texts, prompt)
        return self._pack(texts, prompt)

    def _pack(self, texts: list[str], prompt: str) -> TokenPack:
        return pack_tokens(self.tokenizer.tokenize(texts, truncate=True, prompt=prompt))

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with offsets."""
        rows = self.tokenizer.explain(texts, add_special_tokens)
        return [[TokenSpan(*t) for t in row] for row in rows]
