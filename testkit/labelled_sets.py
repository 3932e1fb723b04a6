"""Labelled query sets the project ships for hybrid search (tests, jobs.evaluate, jobs.fit_hybrid).

Two kinds, each as (corpus table, labelled queries table with `query` and `answer`):

- rephrased: the sample FAQ corpus' own paraphrase templates drawn again (testkit/faq_corpus.py):
  wording varies, meaning is the signal; dense models are strong here.
- rare tokens: many stored questions share their wording and differ only by an error code, a SKU
  or a version number, and every query names its code in other words. Only the token carries the
  answer, which a sentence embedding blurs (E-1042 and E-1043 embed almost alike) and BM25 keeps.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from testkit.faq_corpus import generate

DEVICES = ("router", "printer", "thermostat", "camera", "speaker", "doorbell")
CAUSES = (
    "the firmware is out of date",
    "the power supply is too weak",
    "the network password changed",
    "the memory card is full",
    "the sensor needs cleaning",
    "the cloud account expired",
    "the clock is out of sync",
    "a cable is loose",
)
STORED = (
    "What does error {code} mean on my {device}?",
    "My {device} shows error {code}, what does it mean?",
)
ASKED = (
    "I keep getting {code} on the {device}. What is wrong?",
    "{device} error {code} - how do I fix it?",
    "Why does {code} appear on my {device}?",
    "Help, {code} again on my {device}",
)
SKU_STORED = ("Is {code} in stock?", "When will {code} be back in stock?")
SKU_ASKED = ("Do you have {code} available?", "Can I still order {code}?", "{code} availability?")
VERSION_STORED = ("What changed in version {code}?", "Release notes for version {code}?")
VERSION_ASKED = ("What is new in {code}?", "Changelog of {code} please", "What did {code} fix?")


def _codes() -> list[tuple[str, str, tuple[str, ...], tuple[str, ...], str]]:
    """(kind, code, stored templates, asked templates, answer) for every code."""
    out = []
    for i in range(60):
        code, device = f"E-{1000 + 7 * i}", DEVICES[i % len(DEVICES)]
        answer = f"Error {code} on the {device}: {CAUSES[i % len(CAUSES)]}."
        out.append(("error", code, _fill(STORED, code, device), _fill(ASKED, code, device), answer))
    for i in range(30):
        code = f"SKU_{880 + 3 * i}"
        answer = f"{code}: {'in stock' if i % 2 else 'back in stock in ' + str(2 + i % 5) + ' weeks'}."
        out.append(("sku", code, _fill(SKU_STORED, code), _fill(SKU_ASKED, code), answer))
    for i in range(30):
        code = f"v{2 + i // 10}.{i % 10}.{(3 * i) % 7}"
        answer = f"Version {code} fixed issue #{400 + i}."
        out.append(("version", code, _fill(VERSION_STORED, code), _fill(VERSION_ASKED, code), answer))
    return out


def _fill(templates: tuple[str, ...], code: str, device: str = "") -> tuple[str, ...]:
    return tuple(t.format(code=code, device=device) for t in templates)


def rare_token_corpus() -> pa.Table:
    """id, question, answer, category: every code's stored phrasings (240 rows, 120 answers)."""
    rows = [(kind, q, a) for kind, _, stored, _, a in _codes() for q in stored]
    return pa.table(
        {
            "id": pa.array(np.arange(len(rows), dtype=np.int64)),
            "question": [q for _, q, _ in rows],
            "answer": [a for _, _, a in rows],
            "category": [k for k, _, _ in rows],
        }
    )


def rare_token_queries(n: int, seed: int) -> pa.Table:
    """`n` labelled queries (query, answer): a random code asked in a random other wording."""
    rng = np.random.default_rng(seed)
    codes = _codes()
    picks = rng.integers(0, len(codes), n)
    forms = rng.integers(0, 1 << 20, n)
    queries = [codes[c][3][f % len(codes[c][3])] for c, f in zip(picks.tolist(), forms.tolist(), strict=True)]
    return pa.table({"query": queries, "answer": [codes[c][4] for c in picks.tolist()]})


def rephrased_queries(n: int, seed: int) -> pa.Table:
    """`n` labelled queries (query, answer) drawn from the sample corpus' templates (data/sample_qa.parquet)."""
    drawn = generate(n, seed=seed)
    return pa.table({"query": drawn.column("question"), "answer": drawn.column("answer")})
