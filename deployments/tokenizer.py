"""Tokenizer deployment: texts -> compact TokenPack (ids of real tokens, counts before truncation)."""

from __future__ import annotations

from ray import serve

from embedder.artifact import Artifact
from embedder.handoff import TokenPack
from embedder.tokenize import TextTokenizer
from engine.backend import TokenSpan
from engine.local_tokenizer import LocalTokenizer


@serve.deployment
class Tokenizer:
    """Holds the artifact's tokenizer; always truncates (the service refuses over-long texts itself)."""

    def __init__(self, artifact_dir: str) -> None:
        self.local = LocalTokenizer(
            TextTokenizer.from_artifact(Artifact.load(artifact_dir, verify_files=False))
        )

    async def __call__(self, texts: list[str], prompt: str = "") -> TokenPack:
        """Token ids for texts the service already validated, with the prompt the service resolved."""
        return await self.local.tokenize(texts, prompt)

    async def explain(self, texts: list[str], add_special_tokens: bool) -> list[list[TokenSpan]]:
        """Tokens with offsets (POST /tokenize)."""
        return await self.local.explain(texts, add_special_tokens)
