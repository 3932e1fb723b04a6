"""Incremental embedding: reuse an earlier run's vectors for rows whose text did not change.

    python -m jobs.embed_corpus --artifact A --input I --output runs/day2 --previous runs/day1

The reuse key of a row is `qm_text_hash` (jobs.common.embeddings_io.TEXT_HASH): BLAKE2b-128 over the
artifact fingerprint, a NUL byte and the text as the job read it from the input, UTF-8 encoded.
That string is exactly what the job hands to the tokenizer, after the run's prompt (--prompt-name,
else the model's document prompt), so equal keys mean equal model input and, with the same
artifact and prompt, the same vector: a previous run embedded with another prompt is refused
(`open_previous`), like one of another artifact. No normalisation is applied (not even the casefold
and whitespace folding of jobs/find_duplicates/dedup.py, nor the tokenizer's own lower-casing): two texts that
differ only in case or spacing can tokenize differently (cased models, whitespace-sensitive
vocabularies), and the key must never depend on tokenizer internals. Every run writes the column,
so any complete run can be the --previous of the next one.

Driver side (`open_previous`): before any work the previous output is checked (a complete run of
the same artifact, nothing running on it, readable, same id type) and its `id` and `qm_text_hash`
columns are read; vectors stay where they are. The driver builds a `ReuseIndex` (sorted keys ->
previous part file and row, 24 bytes per previous row), puts it in the Ray object store once,
and each shard actor looks its rows up there: hits are copied from the previous part files (only
the row groups holding them are read, and their stored keys are checked again), misses go
through the model. After the run the driver compares ids and keys of the two outputs for the
summary: rows removed, changed (same id, new text) and added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import storage
from embedder.errors import EmbedderError, ModelMismatch
from index.prompt import NO_PROMPT, DocumentPrompt
from jobs.common.embeddings_io import (
    EMBEDDING,
    HASH_BYTES,
    TEXT_HASH,
    hashes_from_arrow,
    inspect_embeddings,
    to_matrix,
)
from jobs.common.layout import RUN_FILE, SUMMARY_FILE, is_part_file, part_name
from jobs.embed_corpus.run_state import live_lease, read_markers

KEY_DTYPE = f"S{HASH_BYTES}"


class PreviousRunError(EmbedderError):
    """The --previous output cannot be reused (in progress, unreadable, another id type)."""


def text_hashes(texts: Sequence[str], fingerprint: str) -> np.ndarray:
    """(n,) S16 reuse keys: BLAKE2b-128(fingerprint, NUL, text as UTF-8) per text."""
    base = hashlib.blake2b(fingerprint.encode("utf-8") + b"\0", digest_size=HASH_BYTES)
    out = np.empty(len(texts), dtype=KEY_DTYPE)
    for i, text in enumerate(texts):
        h = base.copy()
        h.update(text.encode("utf-8"))
        out[i] = h.digest()
    return out


@dataclass(frozen=True)
class ReuseIndex:
    """Reuse key -> (previous part file, row), sorted by key; what every shard actor gets."""

    files: tuple[str, ...]  # previous part files (paths or URIs)
    keys: np.ndarray  # (m,) S16, sorted, unique
    file: np.ndarray  # (m,) int32 index into files
    row: np.ndarray  # (m,) int64 row within that file
    dimension: int

    @classmethod
    def build(cls, files: Sequence[str], keys_per_file: Sequence[np.ndarray], dimension: int) -> ReuseIndex:
        """From each previous file's keys in row order; a text present twice keeps its first row."""
        if not keys_per_file:
            empty = np.zeros(0, KEY_DTYPE)
            return cls(tuple(files), empty, np.zeros(0, np.int32), np.zeros(0, np.int64), dimension)
        keys = np.concatenate(keys_per_file)
        file = np.repeat(np.arange(len(keys_per_file), dtype=np.int32), [len(k) for k in keys_per_file])
        row = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys_per_file])
        order = np.argsort(keys, kind="stable")
        keys, file, row = keys[order], file[order], row[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        return cls(tuple(files), keys[first], file[first], row[first], dimension)

    @property
    def size(self) -> int:
        """Distinct reusable texts."""
        return len(self.keys)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key: found?, previous file index and row (meaningless where not found)."""
        if not self.size or not len(keys):
            zero = np.zeros(len(keys), dtype=np.int64)
            return np.zeros(len(keys), dtype=bool), zero, zero
        at = np.minimum(np.searchsorted(self.keys, keys), self.size - 1)
        found = self.keys[at] == keys
        return found, self.file[at].astype(np.int64), self.row[at]

    def read_vectors(self, file: np.ndarray, row: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The stored vectors at (file, row), one previous file at a time (its needed row groups only).

        The stored key of every row taken is compared with the key asked for, so a previous run
        rewritten while this one runs fails the shard rather than reusing a wrong vector.
        """
        out = np.empty((len(row), self.dimension), dtype=np.float32)
        for f in np.unique(file).tolist():
            sel = np.flatnonzero(file == f)
            uri = self.files[f]
            pf = storage.parquet_file(uri)
            sizes = np.array(
                [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)], np.int64
            )
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            wanted = row[sel]
            group_of = np.searchsorted(starts, wanted, side="right") - 1
            groups = np.unique(group_of)
            with storage.errors_named(uri, "read previous vectors from"):
                table = pf.read_row_groups(groups.tolist(), columns=[EMBEDDING, TEXT_HASH])
            # Position of each wanted row inside the concatenation of the groups read.
            read_start = np.concatenate([[0], np.cumsum(sizes[groups])[:-1]])
            local = read_start[np.searchsorted(groups, group_of)] + (wanted - starts[group_of])
            stored = hashes_from_arrow(table.column(TEXT_HASH))[local]
            if not np.array_equal(stored, keys[sel]):
                raise PreviousRunError(
                    f"previous run file {uri} changed while this run was reading it (stored text "
                    "hashes differ); rerun once the previous output is stable"
                )
            out[sel] = to_matrix(table.column(EMBEDDING))[local]
        return out


def resolve_reuse(reuse: Any) -> ReuseIndex | None:
    """Inside an actor: the ReuseIndex itself, or fetched from the Ray object store by its ref."""
    if reuse is None or isinstance(reuse, ReuseIndex):
        return reuse
    import ray  # only when a ref was handed over, i.e. inside a Ray worker

    got = ray.get(reuse)
    if not isinstance(got, ReuseIndex):
        raise TypeError(f"expected a ReuseIndex in the object store, got {type(got).__name__}")
    return got


@dataclass
class PreviousRun:
    """A checked, complete earlier output: its part files and each row's id and reuse key."""

    location: storage.Location
    fingerprint: str
    files: tuple[str, ...]
    ids_and_keys: pa.Table  # columns id, qm_text_hash, in part-file order
    keys_per_file: list[np.ndarray]
    dimension: int

    @property
    def rows(self) -> int:
        """Rows in the previous output."""
        return self.ids_and_keys.num_rows

    def identity(self) -> dict[str, Any]:
        """What _RUN.json records, so a resume with another --previous is refused."""
        return {
            "output": self.location.uri,
            "fingerprint": self.fingerprint,
            "parts": [[_base(f), len(k)] for f, k in zip(self.files, self.keys_per_file, strict=True)],
        }

    def reuse_index(self) -> ReuseIndex:
        """The lookup the shard actors use."""
        return ReuseIndex.build(self.files, self.keys_per_file, self.dimension)

    def diff(self, current: pa.Table) -> dict[str, int]:
        """Ids removed since the previous run, ids whose text changed, ids added (both tables unique ids)."""
        prev_ids = self.ids_and_keys.column("id").combine_chunks()
        cur_ids = current.column("id").combine_chunks()
        at = pc.index_in(cur_ids, value_set=prev_ids)
        matched = at.is_valid().to_numpy(zero_copy_only=False)
        prev_rows = at.filter(at.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
        prev_keys = hashes_from_arrow(self.ids_and_keys.column(TEXT_HASH))
        cur_keys = hashes_from_arrow(current.column(TEXT_HASH))
        changed = int((prev_keys[prev_rows] != cur_keys[matched]).sum())
        return {
            "rows_removed": self.rows - len(prev_rows),
            "rows_changed": changed,
            "rows_added": int((~matched).sum()),
        }


def _base(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


def read_ids_and_keys(files: Sequence[str], what: str) -> tuple[pa.Table, list[np.ndarray]]:
    """The id and qm_text_hash columns of part files (no vectors), with each file's keys."""
    tables, keys = [], []
    for f in files:
        try:
            t = storage.read_parquet(f, columns=["id", TEXT_HASH])
            keys.append(hashes_from_arrow(t.column(TEXT_HASH)))
        except EmbedderError as exc:
            raise PreviousRunError(f"{what} is unreadable: {exc}") from exc
        tables.append(t.replace_schema_metadata(None))
    if not tables:
        empty = pa.table({"id": pa.array([], pa.int64()), TEXT_HASH: pa.array([], pa.binary(HASH_BYTES))})
        return empty, []
    return pa.concat_tables(tables), keys


def open_previous(
    loc: storage.Location,
    output: storage.Location,
    fingerprint: str,
    artifact: str,
    id_type: str,
    id_column: str | None = None,
    prompt: DocumentPrompt = NO_PROMPT,
) -> PreviousRun:
    """Check the --previous output can be reused and read its ids and keys; nothing is written.

    Refused with one clear line: the same place as --output, not a run of this job, a run still in
    progress (live lease, unfinished shards, no summary), another artifact, part files that
    disagree with its journal or cannot be read, ids of another type or kind (an id column on one
    side, generated row positions on the other), no reuse keys.
    """
    if loc.uri.rstrip("/") == output.uri.rstrip("/"):
        raise PreviousRunError(
            f"--previous {loc} is this run's --output; name the earlier run's output directory"
        )
    storage.check_bucket(loc)
    run_file = loc.child(RUN_FILE)
    if not storage.is_file(run_file):
        raise PreviousRunError(
            f"previous run {loc}: no {RUN_FILE} there, so it is not an output of jobs.embed_corpus "
            "(or it does not exist)"
        )
    try:
        run = storage.read_json(run_file)
        summary_exists = storage.is_file(loc.child(SUMMARY_FILE))
        markers = read_markers(loc)
        shard_ids = [str(s["shard_id"]) for s in run["shards"]]
    except (EmbedderError, KeyError, TypeError) as exc:
        raise PreviousRunError(f"previous run {loc} is unreadable: {exc}") from exc
    if run.get("fingerprint") != fingerprint:
        raise ModelMismatch(
            f"previous run {loc} was made with artifact {run.get('artifact')} (fingerprint "
            f"{run.get('fingerprint')}); this run uses {artifact} (fingerprint {fingerprint}). Vectors "
            "of another model are never reused: drop --previous for a full run."
        )
    # Same artifact, another prompt: other vectors for the same text, so none of them is reused.
    _same_prompt(loc, DocumentPrompt(run.get("prompt_name"), run.get("prompt") or ""), prompt)
    held = live_lease(loc)
    if held is not None:
        raise PreviousRunError(
            f"previous run {loc} is still being written (lease of run {held.get('run_id')} on host "
            f"{held.get('host')}, pid {held.get('pid')}); wait for it to finish"
        )
    if (run.get("id_column") is None) != (id_column is None):

        def kind(col: str | None) -> str:
            return f"column {col!r}" if col else "row positions"

        raise PreviousRunError(
            f"previous run {loc} took its ids from {kind(run.get('id_column'))}, this run from "
            f"{kind(id_column)}: the rows cannot be matched across runs. Drop --previous for a full run."
        )
    pending = [s for s in shard_ids if s not in markers]
    if pending or not summary_exists:
        raise PreviousRunError(
            f"previous run {loc} is not complete ({len(shard_ids) - len(pending)} of {len(shard_ids)} "
            f"shards done, {SUMMARY_FILE} {'present' if summary_exists else 'missing'}); finish it by "
            "rerunning its command first"
        )
    expected = {part_name(s): markers[s].rows_embedded for s in shard_ids if markers[s].rows_embedded}
    listed = {
        f.base_name: storage.located(loc, f.path).uri
        for f in storage.list_files(loc, recursive=False)
        if is_part_file(f.base_name)
    }
    if set(listed) != set(expected):
        raise PreviousRunError(
            f"previous run {loc}: part files do not match its journal (missing "
            f"{sorted(set(expected) - set(listed))[:3]}, extra {sorted(set(listed) - set(expected))[:3]})"
        )
    files = tuple(listed[name] for name in sorted(listed))
    dimension = 0
    if files:
        try:
            info = inspect_embeddings(loc)
        except EmbedderError as exc:
            raise PreviousRunError(f"previous run {loc} is unreadable: {exc}") from exc
        if info.fingerprint != fingerprint:
            raise ModelMismatch(
                f"previous run {loc}: its part files carry fingerprint {info.fingerprint}, this run "
                f"uses {fingerprint}; vectors of another model are never reused"
            )
        _same_prompt(loc, info.prompt, prompt)
        if info.id_type != id_type:
            raise PreviousRunError(
                f"previous run {loc} has {info.id_type} ids, this input gives {id_type} ids: the "
                "rows cannot be matched across runs. Drop --previous for a full run."
            )
        if not info.text_hash:
            raise PreviousRunError(
                f"previous run {loc} has no {TEXT_HASH} column (written by an older embed_corpus "
                "or another tool); run one full embed without --previous first"
            )
        wrong = [f.uri for f, n in zip(info.files, info.rows_per_file, strict=True) if n != expected[f.name]]
        if wrong:
            raise PreviousRunError(f"previous run {loc}: row counts differ from its journal in {wrong[:3]}")
        dimension = info.dimension
    table, keys = read_ids_and_keys(files, f"previous run {loc}")
    return PreviousRun(loc, fingerprint, files, table, keys, dimension)


def _same_prompt(loc: storage.Location, previous: DocumentPrompt, current: DocumentPrompt) -> None:
    """Refuse a previous run embedded with another prompt, as one of another model."""
    if previous.text != current.text:
        raise ModelMismatch(
            f"previous run {loc} was embedded with {previous.describe()}; this run uses "
            f"{current.describe()}. Vectors made with another prompt are never reused: drop "
            "--previous for a full run (or give the previous run's --prompt-name)."
        )
