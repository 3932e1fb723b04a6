"""Tokenizer deployment: texts -> compact TokenPack (ids of real tokens, counts before truncation)."""

from __future__ import annotations

from ray import serve

from embedder.artifact import Artifact
from embedder.serving import TokenPack, pack_tokens
from embedder.tokenize import TextTokenizer


@serve.deployment
class Tokenizer:
    """Holds the artifact's tokenizer; always truncates (the ingress refuses over-long texts itself)."""

    def __init__(self, artifact_dir: str) -> None:
        self.tokenizer = TextTokenizer.from_artifact(Artifact.load(artifact_dir, verify_files=False))

    def __call__(self, texts: list[str]) -> TokenPack:
        """Token ids for texts the ingress already validated."""
        return pack_tokens(self.tokenizer.tokenize(texts, truncate=True))
