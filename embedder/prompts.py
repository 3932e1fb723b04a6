"""A model's prompts (e5 "query: ", bge instructions, Qwen3 "Instruct: ..."): which one applies, by name.

The rules are sentence-transformers' own, so a vector made here and one made by its `encode`,
`encode_query` and `encode_document` with the same arguments are the same vector:
- `encode(texts, prompt_name=None)` uses the model's default prompt name, if it has one;
- the query rule uses the prompt named "query" when the model has one;
- the document rule uses the first of "document", "passage", "corpus" the model has.
An artifact keeps only prompts with text (sentence-transformers 6 fills in empty "query" and
"document" entries; an empty prompt means no prompt, so it is dropped at export).
"""

from __future__ import annotations

from collections.abc import Mapping

from embedder.errors import InvalidInput

QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


class Prompts:
    """The prompts an artifact carries and the default prompt name."""

    def __init__(self, prompts: Mapping[str, str], default_name: str | None) -> None:
        self.prompts = {k: v for k, v in prompts.items() if v}
        self.default_name = default_name if default_name in self.prompts else None

    @property
    def names(self) -> list[str]:
        """The prompt names this model knows, sorted."""
        return sorted(self.prompts)

    def check(self, prompt_name: str | None, field: str = "prompt_name") -> None:
        """Raise InvalidInput (a 422) naming the model's prompt names when the name is unknown."""
        if prompt_name is not None and prompt_name not in self.prompts:
            known = ", ".join(repr(n) for n in self.names) or "none"
            raise InvalidInput(
                f"unknown prompt_name {prompt_name!r}; this model's prompt names: {known}", field=field
            )

    def resolve(self, prompt_name: str | None) -> str:
        """The prompt text for a name (None: the default prompt, else no prompt)."""
        self.check(prompt_name)
        name = prompt_name if prompt_name is not None else self.default_name
        return self.prompts[name] if name is not None else ""

    def effective_name(self, prompt_name: str | None) -> str | None:
        """Which prompt name a call with this prompt_name really uses (None: no prompt)."""
        self.check(prompt_name)
        return prompt_name if prompt_name is not None else self.default_name

    def _first(self, candidates: tuple[str, ...]) -> str | None:
        return next((n for n in candidates if n in self.prompts), None)

    def query_name(self) -> str | None:
        """The prompt name sentence-transformers' `encode_query` would use (None: the default's)."""
        return self.effective_name(self._first(QUERY_PROMPT_NAMES))

    def document_name(self) -> str | None:
        """The prompt name sentence-transformers' `encode_document` would use (None: the default's)."""
        return self.effective_name(self._first(DOCUMENT_PROMPT_NAMES))

    def apply(self, texts: list[str], prompt_name: str | None) -> list[str]:
        """Texts with the prompt prepended, as sentence-transformers does (the prompt counts toward truncation)."""
        prompt = self.resolve(prompt_name)
        return [prompt + t for t in texts] if prompt else texts
