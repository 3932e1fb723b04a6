"""Synthetic QA corpora of any size from paraphrase templates (text written for this project, CC0).

Each row is a customer-support question, its answer, an intent (`category`) and a `group`: rows
of one group are paraphrases of the same question with the same answer, so a matcher's quality
can be measured (a question should find others of its group). 1M rows take a few seconds.

    python -m testkit.faq_corpus --rows 1000000 --files 8 --out runs/corpus-1m
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PRODUCTS = [
    "Nimbus Notes",
    "Orbit Mail",
    "Pebble Pay",
    "Lantern Photos",
    "Harbor Drive",
    "Juniper Chat",
    "Quartz Calendar",
    "Maple Music",
    "Falcon VPN",
    "Cedar Budget",
    "Tidal Tasks",
    "Ember Reader",
    "Atlas Maps",
    "Willow Health",
    "Comet Cloud",
    "Birch Bank",
    "Meadow Fitness",
    "Summit Docs",
    "Coral Video",
    "Aurora Home",
]
PLACES = [
    "Canada",
    "Mexico",
    "Brazil",
    "Argentina",
    "Chile",
    "Peru",
    "Ireland",
    "Portugal",
    "Spain",
    "France",
    "Germany",
    "Italy",
    "Poland",
    "Norway",
    "Sweden",
    "Finland",
    "Greece",
    "Turkey",
    "Egypt",
    "Kenya",
    "Nigeria",
    "South Africa",
    "India",
    "Japan",
    "South Korea",
    "Vietnam",
    "Thailand",
    "Indonesia",
    "Australia",
    "New Zealand",
    "Toronto",
    "Lisbon",
    "Berlin",
    "Osaka",
    "Nairobi",
    "Lima",
    "Oslo",
    "Athens",
    "Seoul",
    "Melbourne",
]
ITEMS = [
    "running shoes",
    "winter jacket",
    "coffee grinder",
    "desk lamp",
    "yoga mat",
    "backpack",
    "water bottle",
    "phone case",
    "wireless earbuds",
    "rain boots",
    "wool scarf",
    "cast iron pan",
    "kettle",
    "office chair",
    "bicycle helmet",
    "sunglasses",
    "notebook",
    "board game",
    "tent",
    "sleeping bag",
    "blender",
    "hoodie",
    "watch",
    "camera strap",
    "travel mug",
]

# intent -> (slot kind, paraphrase templates, answer template). {x} is the slot value.
INTENTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "password": (
        "product",
        (
            "How do I reset my {x} password?",
            "I forgot my {x} password, what should I do?",
            "Can't log in to {x}, how can I recover my password",
            "What are the steps to change the password on {x}?",
            "Is there a way to get a new {x} password",
        ),
        "Open {x}, go to Settings > Security and choose Reset password; a link arrives by email.",
    ),
    "cancel": (
        "product",
        (
            "How can I cancel my {x} subscription?",
            "I want to stop paying for {x}",
            "Where do I turn off auto-renewal for {x}?",
            "Cancel {x} plan please",
            "What happens if I unsubscribe from {x}?",
        ),
        "In {x}, open Account > Subscription and choose Cancel; you keep access until the period ends.",
    ),
    "two_factor": (
        "product",
        (
            "How do I turn on two-factor authentication in {x}?",
            "Does {x} support 2FA?",
            "I lost my phone, how do I get past the {x} security code?",
            "Set up an authenticator app for {x}",
        ),
        "{x} supports authenticator apps and SMS codes under Settings > Security; keep the backup codes.",
    ),
    "export": (
        "product",
        (
            "Can I export all my data from {x}?",
            "How do I download a copy of my {x} account?",
            "Is there a backup option in {x}",
            "Move my stuff out of {x} to another app",
        ),
        "Use Settings > Privacy > Export in {x}; you get a zip archive by email within a day.",
    ),
    "delete_account": (
        "product",
        (
            "How do I delete my {x} account?",
            "Remove my {x} profile permanently",
            "I want {x} to erase everything about me",
            "Close my {x} account for good",
        ),
        "Deleting a {x} account is under Settings > Account > Delete; it is final after 30 days.",
    ),
    "shipping_time": (
        "place",
        (
            "How long does shipping to {x} take?",
            "When will my order arrive in {x}?",
            "What is the delivery time for {x}?",
            "Do you ship to {x} and how fast",
            "Shipping estimate to {x}?",
        ),
        "Standard delivery to {x} takes {n} business days; express takes about half that.",
    ),
    "store_hours": (
        "place",
        (
            "What time does your store in {x} open?",
            "Opening hours {x} shop",
            "Is the {x} store open on Sundays?",
            "When does the {x} location close today",
        ),
        "Our {x} store opens 9:00-19:00 Monday to Saturday and {n}:00-17:00 on Sunday.",
    ),
    "payment": (
        "place",
        (
            "Which payment methods can I use in {x}?",
            "Can I pay with a credit card from {x}?",
            "Do you accept local bank transfers in {x}",
            "Is cash on delivery available in {x}?",
        ),
        "In {x} we accept cards, PayPal and {n} local payment options shown at checkout.",
    ),
    "returns": (
        "item",
        (
            "How do I return a {x}?",
            "Can I send back the {x} I bought?",
            "What is the return policy for a {x}",
            "The {x} does not fit, can I return it?",
            "Return label for my {x}",
        ),
        "You can return a {x} within {n} days in its original packaging; print the label from Orders.",
    ),
    "warranty": (
        "item",
        (
            "How long is the warranty on the {x}?",
            "My {x} broke, is it covered?",
            "Does the {x} come with a guarantee",
            "Warranty claim for a {x}",
        ),
        "The {x} has a {n}-month warranty against defects; start a claim from your order page.",
    ),
    "size": (
        "item",
        (
            "What size {x} should I get?",
            "Is there a size guide for the {x}?",
            "Does the {x} run small or large",
            "Help me choose the right {x} size",
        ),
        "The {x} size guide is on the product page; between sizes, choose the larger one.",
    ),
    "stock": (
        "item",
        (
            "When will the {x} be back in stock?",
            "Is the {x} available?",
            "The {x} says sold out, will you restock",
            "Notify me when the {x} is available again",
        ),
        "The {x} is restocked about every {n} weeks; press Notify me on its page for an email.",
    ),
}
PREFIXES = ("", "", "", "Hi, ", "Hello! ", "Quick question: ", "Please help: ", "Hey there, ")
SUFFIXES = ("", "", "", " Thanks!", " Thank you.", " I need this today.", " Any advice?", " Cheers")
SLOTS = {"product": PRODUCTS, "place": PLACES, "item": ITEMS}


def groups() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(category, slot value, answer, paraphrases) for every intent x slot value."""
    out = []
    for category, (kind, templates, answer) in INTENTS.items():
        for j, value in enumerate(SLOTS[kind]):
            n = 2 + (j * 7 + len(category)) % 12  # a stable per-group number so answers differ
            out.append(
                (category, value, answer.format(x=value, n=n), tuple(t.format(x=value) for t in templates))
            )
    return out


def generate(rows: int, seed: int = 0, start_id: int = 0) -> pa.Table:
    """`rows` rows: id, question, answer, category, group (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    table = groups()
    g = rng.integers(0, len(table), rows)
    para = rng.integers(0, 1 << 30, rows)
    pre = rng.integers(0, len(PREFIXES), rows)
    suf = rng.integers(0, len(SUFFIXES), rows)
    questions = []
    for gi, pi, a, b in zip(g.tolist(), para.tolist(), pre.tolist(), suf.tolist(), strict=True):
        paraphrases = table[gi][3]
        questions.append(PREFIXES[a] + paraphrases[pi % len(paraphrases)] + SUFFIXES[b])
    return pa.table(
        {
            "id": pa.array(np.arange(start_id, start_id + rows, dtype=np.int64)),
            "question": pa.array(questions, pa.string()),
            "answer": pa.array([table[i][2] for i in g.tolist()], pa.string()),
            "category": pa.array([table[i][0] for i in g.tolist()], pa.string()),
            "group": pa.array(g.astype(np.int64)),
        }
    )


def chunks(rows: int, files: int) -> Iterator[tuple[int, int]]:
    """(start, count) of each file's rows."""
    per = -(-rows // max(1, files))
    for start in range(0, rows, per):
        yield start, min(per, rows - start)


def write_corpus(
    out: Path, rows: int, files: int = 1, seed: int = 0, row_group_rows: int = 10_000
) -> list[Path]:
    """Write `rows` rows over `files` parquet files under `out` (a directory); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (start, count) in enumerate(chunks(rows, files)):
        path = out / f"corpus-{k:04d}.parquet"
        pq.write_table(generate(count, seed=seed + k, start_id=start), path, row_group_size=row_group_rows)
        paths.append(path)
    return paths


def main() -> None:
    """CLI: write a corpus directory."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--row-group-rows", type=int, default=10_000)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    paths = write_corpus(a.out, a.rows, a.files, a.seed, a.row_group_rows)
    print(f"wrote {a.rows} rows in {len(paths)} files under {a.out}")


if __name__ == "__main__":
    main()
