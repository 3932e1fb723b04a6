"""Exact duplicates: questions whose normalised texts are equal (compared by a 128-bit BLAKE2b hash).

Normalisation (`normalize_question`), version NORMALIZATION:
  1. Unicode NFKC (full-width forms, ligatures, compatibility characters fold to plain ones),
  2. casefold (then NFKC again, as casefolding can leave un-normalised text),
  3. every run of whitespace becomes one space; leading and trailing whitespace is removed,
  4. trailing characters of Unicode category Po ("other punctuation": . , ! ? ; : … ¿ 。 ？ ！ and
     straight quotes) and whitespace are removed, repeatedly.
Two questions are exact duplicates when their normalised texts are equal (compared by a 128-bit
BLAKE2b hash). A text that normalises to "" (only punctuation or whitespace) takes no part.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMALIZATION = "nfkc-casefold-whitespace-trailing-po/1"
# Exact groups up to this size list every pair (64 members: 2,016 pairs); a bigger group of
# identical questions lists each member once, paired with the group's smallest id (a star), so
# 10,000 copies of "hi" give 9,999 pairs, not 50 million. Its group in groups.parquet is complete.
MAX_EXACT_CLIQUE = 64


def normalize_question(text: str) -> str:
    """The normalised form two exact duplicates share (see the module docstring)."""
    t = unicodedata.normalize("NFKC", text)
    t = unicodedata.normalize("NFKC", t.casefold())
    t = " ".join(t.split())
    end = len(t)
    while end and (t[end - 1].isspace() or unicodedata.category(t[end - 1]) == "Po"):
        end -= 1
    return t[:end]


def question_key(text: str) -> bytes | None:
    """128-bit hash of the normalised text; None when nothing is left after normalisation."""
    norm = normalize_question(text)
    if not norm:
        return None
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def hash_questions(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Keys (n,) of dtype S16 and a mask of rows that have one (text present and not empty)."""
    keys = np.zeros(len(texts), dtype="S16")
    valid = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if isinstance(text, str):
            key = question_key(text)
            if key is not None:
                keys[i], valid[i] = key, True
    return keys, valid


@dataclass(frozen=True)
class ExactPairs:
    """Row pairs (a < b) whose normalised texts are equal."""

    a: np.ndarray
    b: np.ndarray
    groups: int  # sets of rows sharing a normalised text (2+ rows)
    starred: int  # of those, groups bigger than MAX_EXACT_CLIQUE (listed as a star)

    @classmethod
    def empty(cls) -> ExactPairs:
        """No pairs."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0)


def exact_pairs(keys: np.ndarray, valid: np.ndarray, max_clique: int = MAX_EXACT_CLIQUE) -> ExactPairs:
    """Every pair of rows with the same key (a star to the smallest row for very large sets)."""
    rows = np.flatnonzero(valid)
    order = np.argsort(keys[rows], kind="stable")
    rows, sk = rows[order], keys[rows][order]
    if len(rows) < 2:
        return ExactPairs.empty()
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    ends = np.r_[starts[1:], len(sk)]
    a_parts, b_parts, groups, starred = [], [], 0, 0
    for s, e in zip(starts[ends - starts >= 2].tolist(), ends[ends - starts >= 2].tolist(), strict=True):
        members = np.sort(rows[s:e])
        groups += 1
        if len(members) <= max_clique:
            i, j = np.triu_indices(len(members), k=1)
            a_parts.append(members[i])
            b_parts.append(members[j])
        else:
            starred += 1
            a_parts.append(np.full(len(members) - 1, members[0]))
            b_parts.append(members[1:])
    if not a_parts:
        return ExactPairs.empty()
    return ExactPairs(
        np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64), groups, starred
    )
