"""Small real indexes for the Serve tests, written with the core index code (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedder.encoder import Encoder
from index import store as index_store
from index.faiss_index import VectorIndex
from index.filter_columns import FILTERS_FILE, column_kind, write_filters
from index.lexical import write_lexical
from index.prompt import DocumentPrompt
from index.store import IndexManifest
from index.tuning import build_in_memory

FAQ: list[tuple[str, str]] = [
    ("How do I reset my password?", "Use 'Forgot password' on the sign-in page."),
    ("How can I change my delivery address?", "Edit it under Orders before the parcel ships."),
    ("What payment methods do you accept?", "Cards, PayPal and bank transfer."),
    ("How long does shipping take?", "Two to five working days."),
    ("Can I return an item?", "Yes, within 30 days, unused."),
    ("How do I delete my account?", "Settings > Privacy > Delete account."),
    ("Where is my order?", "Track it from the link in your confirmation email."),
    ("Do you ship internationally?", "We ship to 40 countries."),
    ("How do I contact support?", "Chat with us or write to support@example.com."),
    ("Is my data shared with third parties?", "No, we never sell your data."),
    ("How do I apply a discount code?", "Enter it at checkout before paying."),
    ("Can I change my order after placing it?", "Within one hour, from the Orders page."),
]


def publish_index(
    root: Path,
    encoder: Encoder,
    rows: list[tuple[str, str]] = FAQ,
    fingerprint: str | None = None,
    tag: str = "",
    make_current: bool = True,
    filters: dict[str, list] | None = None,
    prompt_name: str | None = None,
) -> str:
    """Embed the questions, write one Flat index version under `root`, publish it; returns the version.

    `filters`: extra metadata columns (one value per row) stored as filter columns too.
    `prompt_name`: the prompt the questions get (default: the model's document prompt, as the embed job).
    """
    # Stored questions are documents: the model's document prompt, recorded as the embed job does.
    prompt = DocumentPrompt.chosen(encoder.prompts, prompt_name)
    vectors = encoder.encode([q for q, _ in rows], prompt_name=prompt.name)
    table = pa.table(
        {
            "id": pa.array(np.arange(1000, 1000 + len(rows)), pa.int64()),
            "question": [q for q, _ in rows],
            "answer": [a for _, a in rows],
            **(filters or {}),
        }
    )
    return publish_table(
        root,
        vectors,
        table,
        fingerprint or encoder.fingerprint,
        prompt,
        tag=tag,
        make_current=make_current,
        filter_columns=tuple(filters or {}),
    )


def publish_table(
    root: Path,
    vectors: np.ndarray,
    table: pa.Table,
    fingerprint: str,
    prompt: DocumentPrompt,
    factory: str = "Flat",
    tag: str = "",
    make_current: bool = True,
    filter_columns: tuple[str, ...] = (),
    lexical_column: str | None = "question",
) -> str:
    """Publish one index version of `vectors` (row i = `table` row i, which holds `id`); returns it.

    `factory`: "Flat", or any factory / "auto" built and tuned by the project's own index code
    (index.tuning.build_in_memory: IVF trained, nprobe / efSearch tuned to the recall target).
    """
    if factory == "Flat":
        index = VectorIndex.create(vectors.shape[1], "Flat", "ip")
        index.add(vectors)
        recall = 1.0
    else:
        index, report = build_in_memory(vectors, factory, "ip")
        recall = report.recall_at_10
    version = index_store.new_version_name() + tag
    staged = index_store.staging_dir(root, version)
    index.save(staged / index_store.INDEX_FILE)
    pq.write_table(table, staged / index_store.METADATA_FILE)
    described = {}
    if filter_columns:
        kinds = {name: column_kind(name, table.schema.field(name).type) for name in filter_columns}
        described = write_filters(table, kinds, staged / FILTERS_FILE)
    # BM25 over the question text, as jobs.build_index builds it (None or no such column: none).
    lexical = None
    if lexical_column is not None and lexical_column in table.column_names:
        lexical = write_lexical(staged, index_store.METADATA_FILE, lexical_column)
    manifest = IndexManifest(
        factory=index.factory,
        metric="ip",
        count=len(table),
        dimension=int(vectors.shape[1]),
        fingerprint=fingerprint,
        recall_at_10=recall,
        bytes_per_vector=4.0 * vectors.shape[1],
        build_seconds=0.0,
        search_params=dict(index.search_params),
        columns=tuple(n for n in table.column_names if n != "id"),
        filters=described,
        document_prompt_name=prompt.name,
        document_prompt=prompt.text,
        lexical=lexical,
    )
    (staged / index_store.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    index_store.publish(root, staged, version, make_current=make_current)
    return version
