"""Which prompt the stored vectors were embedded with, and the check that a server's model agrees.

A model with prompts (e5 "passage: ", bge, Qwen3) gives other vectors for the same text with
another prompt, under the same artifact fingerprint. So the embed job records the prompt it used
(name and text) in its summary and parquet metadata, the index build copies it into the index
manifest, and a server refuses an index whose documents got another prompt than the one its model
gives documents (sentence-transformers' encode_document rule): the same refusal as another model's
index. Runs and indexes written before prompts existed mean "no prompt".
"""

from __future__ import annotations

from dataclasses import dataclass

from embedder.errors import ModelMismatch
from embedder.prompts import Prompts


@dataclass(frozen=True)
class DocumentPrompt:
    """A prompt that made stored vectors: its name and text (None and "" for no prompt)."""

    name: str | None = None
    text: str = ""

    @classmethod
    def chosen(cls, prompts: Prompts, asked: str | None = None) -> DocumentPrompt:
        """The prompt named `asked` (InvalidInput naming the model's names if unknown), else the document rule's."""
        prompts.check(asked)
        name = asked if asked is not None else prompts.document_name()
        return cls(name, prompts.resolve(name))

    def describe(self) -> str:
        """'prompt 'document' ('passage: ')' or 'no prompt', for messages."""
        return f"prompt {self.name!r} ({self.text!r})" if self.text else "no prompt"

    def agrees(self, other: DocumentPrompt, what: str, served: str) -> None:
        """Raise ModelMismatch when `what` (made with self) was embedded with another prompt than `served` uses.

        The texts decide, not the names: the same text under two names gives the same vectors.
        """
        if self.text != other.text:
            raise ModelMismatch(
                f"{what} was embedded with {self.describe()}, {served} embeds documents with "
                f"{other.describe()}; vectors made with another prompt do not match its queries"
            )


NO_PROMPT = DocumentPrompt()
