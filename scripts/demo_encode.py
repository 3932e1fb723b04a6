"""Demo step: embed a few sample questions with the exported artifact and print nearest neighbours."""

from __future__ import annotations

import sys

import numpy as np

from embedder import Encoder

QUESTIONS = [
    "How do I reset my password?",
    "I forgot my login credentials, what now?",
    "How long does delivery take?",
    "When will my package arrive?",
    "Can I get my money back?",
    "How do I request a refund?",
    "如何重置我的密码？",
    "Do you ship to Canada?",
]


def main(artifact: str) -> None:
    """Print, for each question, the most similar other question and the cosine score."""
    encoder = Encoder.load(artifact)
    vectors = encoder.encode(QUESTIONS)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -1.0)
    print(f"artifact {artifact}: dim={encoder.dimension} fingerprint={encoder.fingerprint}")
    for i, question in enumerate(QUESTIONS):
        j = int(scores[i].argmax())
        print(f"  {question!r:45} -> {QUESTIONS[j]!r} ({scores[i, j]:.3f})")


if __name__ == "__main__":
    main(sys.argv[1])
