"""Deterministic benchmark sentences of realistic, varied length (questions of 5 to ~120 tokens)."""

from __future__ import annotations

import random

_SUBJECTS = [
    "my order",
    "the invoice",
    "a refund",
    "my password",
    "the mobile app",
    "international shipping",
    "the premium plan",
    "a student discount",
    "my account",
    "the warranty",
    "two-factor login",
    "the delivery address",
    "gift cards",
    "a late payment",
    "the API rate limit",
]
_VERBS = ["change", "cancel", "track", "reset", "upgrade", "transfer", "dispute", "renew", "verify", "export"]
_TAILS = [
    "after it has shipped",
    "from another country",
    "without the original receipt",
    "on an Android phone",
    "before the end of the month",
    "if I signed up through a partner",
    "when the page keeps timing out",
    "for a business with several locations",
    "while travelling abroad",
    "using the command line tool",
]
_CONTEXT = (
    "I have already tried restarting everything and contacting support by email, but nobody replied "
    "and the help page only covers the basic case, which does not match my situation at all. "
)


def make_sentences(n: int, seed: int = 7) -> list[str]:
    """n questions; about one in five carries extra context so lengths spread like real traffic."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = f"How do I {rng.choice(_VERBS)} {rng.choice(_SUBJECTS)} {rng.choice(_TAILS)}?"
        if rng.random() < 0.2:
            text = _CONTEXT * rng.randint(1, 3) + text
        out.append(text)
    return out
