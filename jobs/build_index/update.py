"""`python -m jobs.build_index --embeddings E --out indexes/faq --update`: the next version from CURRENT.

The input is a complete embeddings run (e.g. an incremental one, jobs/embed_corpus/incremental.py). Rows are
diffed against the live version by id and vector: every version's metadata.parquet carries a
hidden `qm_vector_hash` column (BLAKE2b-128 of the row's float32 bytes), so a row is unchanged
when its id is there with the same hash, changed when the hash differs, new when its id is not
there; ids of the live version missing from the input are removed.

How FAISS ids stay aligned with metadata (row i of metadata.parquet is FAISS id i): the new
metadata.parquet is written exactly as a full build writes it, in the input's row order (so it
is the same file a rebuild would produce). The FAISS index is the live one, copied: the rows of
removed and changed ids are taken out (`remove_ids`), every surviving entry's id is relabelled
from its old row to its new row (one pass over the inverted lists: ids are labels stored beside
the codes, so this is exact and needs no vectors), and the new and changed vectors are added with
their new rows as ids. The trained coarse quantizer (and OPQ/PQ codebooks) are reused as they are.

Recall@10 is then measured exactly as a build measures it (1,000 held-out rows of the input,
exact neighbours from a full pass over the input's vectors). Search starts at the live version's
nprobe / efSearch and may widen it up to `IndexConfig.update_max_widen` times (QM_INDEX_UPDATE_MAX_WIDEN);
if the target is still missed the quantizer no longer fits the data, and the job retrains from
scratch (a full build with the same factory) and says so in its output line.

Falls back to a full build, saying why, when nothing can be reused: no CURRENT yet, another model
or prompt, dimension, id type, factory or metric, a version built before vector hashes existed, a Flat index
(nothing trained: the build is the update) and indexes whose ids cannot be removed or relabelled
(HNSW graphs). Publishing is the build's: a staging directory, verified, then CURRENT flips
(index_store.publish); a failure leaves CURRENT alone, and `--rollback` returns to the version
the update started from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import storage
from index import store as index_store
from index.faiss_index import IndexConfig, VectorIndex, choose_factory
from index.filter_columns import Kind
from index.store import LoadedIndex
from index.tuning import ExactKnn, sample_rows, search_knob, tune_search
from jobs.build_index.build import (
    BuildResult,
    K,
    build,
    filter_kinds,
    lexical_choice,
    pass_one,
    save_version,
)
from jobs.common.embeddings_io import EmbeddingsInfo, hashes_from_arrow, inspect_embeddings, read_embeddings


@dataclass(frozen=True)
class RowDiff:
    """The input's rows against the live version's."""

    new_row_of_old: np.ndarray  # (old n,) int64: new row of each surviving old row, -1 if removed/changed
    to_add: np.ndarray  # sorted new rows whose vectors must be added (new ids and changed rows)
    added: int
    changed: int
    removed: int
    unchanged: int

    def counts(self) -> dict[str, int]:
        """Row counts for the manifest and the output line."""
        return {f"rows_{kind}": getattr(self, kind) for kind in ("added", "changed", "removed", "unchanged")}


def diff_rows(old: pa.Table, new_ids: pa.ChunkedArray, new_hashes: np.ndarray) -> RowDiff:
    """Match rows by id (unique on both sides), compare vector hashes."""
    old_hashes = hashes_from_arrow(old.column(index_store.VECTOR_HASH))
    at = pc.index_in(new_ids.combine_chunks(), value_set=old.column("id").combine_chunks())
    matched = at.is_valid().to_numpy(zero_copy_only=False)
    old_row = at.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    same = matched & (old_hashes[old_row] == new_hashes) if len(old_hashes) else np.zeros_like(matched)
    new_row_of_old = np.full(len(old_hashes), -1, dtype=np.int64)
    new_row_of_old[old_row[same]] = np.flatnonzero(same)
    return RowDiff(
        new_row_of_old=new_row_of_old,
        to_add=np.flatnonzero(~same),
        added=int((~matched).sum()),
        changed=int((matched & ~same).sum()),
        removed=len(old_hashes) - int(matched.sum()),
        unchanged=int(same.sum()),
    )


def relabel(index: VectorIndex, new_row_of_old: np.ndarray) -> None:
    """Rewrite every stored id of an IVF index through the map (after the removed ones are gone)."""
    ivf = index.ivf
    assert ivf is not None
    lists: Any = ivf.invlists  # faiss' stubs lack release_ids / release_codes
    for list_no in range(ivf.nlist):
        n = lists.list_size(list_no)
        if not n:
            continue
        ids_ptr = lists.get_ids(list_no)
        codes_ptr = lists.get_codes(list_no)
        old = faiss.rev_swig_ptr(ids_ptr, n).copy()
        codes = faiss.rev_swig_ptr(codes_ptr, n * lists.code_size).copy()
        lists.release_ids(list_no, ids_ptr)
        lists.release_codes(list_no, codes_ptr)
        new = new_row_of_old[old]
        if (new < 0).any():
            raise AssertionError("a removed row is still in the index")
        lists.update_entries(list_no, 0, n, faiss.swig_ptr(np.ascontiguousarray(new)), faiss.swig_ptr(codes))


@dataclass(frozen=True)
class UpdateResult:
    """What --update did: "update" (live index reused), "rebuild" (fallback) or "retrain" (drift)."""

    mode: str
    reason: str
    built: BuildResult
    from_version: str | None
    counts: dict[str, int] | None

    def summary(self) -> str:
        """The output line."""
        if self.mode == "update":
            c = self.counts or {}
            head = (
                f"updated {self.from_version}: +{c['rows_added']} new, {c['rows_changed']} changed, "
                f"-{c['rows_removed']} removed, {c['rows_unchanged']} kept"
            )
        elif self.mode == "retrain":
            head = f"retrained from scratch ({self.reason})"
        else:
            head = f"full rebuild ({self.reason})"
        return f"{head}; {self.built.summary()}"


def cannot_update(loaded: LoadedIndex, info: EmbeddingsInfo, factory: str, metric: str) -> str | None:
    """Why the live version cannot be the base of this update (None: it can)."""
    m = loaded.manifest
    if info.fingerprint != m.fingerprint:
        return f"embeddings come from model {info.fingerprint}, version {loaded.version} from {m.fingerprint}"
    if info.prompt.text != m.document_prompt:
        return f"embeddings were embedded with {info.prompt.describe()}, version {loaded.version} with {m.prompt.describe()}"
    if info.dimension != m.dimension:
        return f"dimension {info.dimension} != {m.dimension}"
    if info.id_type != m.id_type:
        return f"id type {info.id_type} != {m.id_type}"
    if factory != m.factory or metric != m.metric:
        return f"factory/metric {factory} {metric} asked for, {loaded.version} is {m.factory} {m.metric}"
    ivf = loaded.index.ivf
    if ivf is None:
        if m.factory == "Flat":
            return "Flat has nothing trained to reuse: every vector is added again"
        return f"{m.factory} cannot remove or relabel ids (graph index)"
    if not ivf.direct_map.no():
        return f"{m.factory} keeps a direct map"
    return None


def update(
    embeddings: str | Path | storage.Location,
    out: str | Path | storage.Location,
    factory: str | None = None,
    metric: str | None = None,
    shards: int = 0,
    cfg: IndexConfig | None = None,
    filter_columns: Sequence[str] | None = None,
    lexical: bool = True,
    lexical_column: str | None = None,
) -> UpdateResult:
    """Make the next version from CURRENT and the new embeddings (see the module docstring).

    `filter_columns`: None keeps the live version's filter columns.
    """
    cfg = cfg or IndexConfig()
    # The public entry: paths and URIs become Locations here, once; everything below takes those.
    embeddings, out = storage.resolve(embeddings), storage.resolve(out)
    live = index_store.current_version(out)
    if live is None:
        return _rebuild(
            "no CURRENT version to update", None, embeddings, out, factory, metric, shards, cfg,
            columns=filter_columns or (),
        )  # fmt: skip
    loaded = index_store.open_version(out, live)
    info = inspect_embeddings(embeddings)
    columns = list(loaded.manifest.filters) if filter_columns is None else list(filter_columns)
    filters = filter_kinds(info, columns)
    text_column = lexical_choice(lexical, lexical_column, info)  # refuse a bad column before any work
    factory = factory or loaded.manifest.factory
    if factory == "auto":
        factory = choose_factory(info.count, info.dimension, cfg)
    metric = metric or loaded.manifest.metric
    reason = cannot_update(loaded, info, factory, metric)
    old = index_store.read_vector_hashes(loaded)
    if reason is None and old is None:
        reason = f"version {live} was built before vector hashes were recorded"
    if reason is not None or old is None:
        return _rebuild(str(reason), live, embeddings, out, factory, metric, shards, cfg, columns=columns)
    return _update(loaded, old, info, embeddings, out, shards, cfg, filters, text_column)


def _rebuild(
    reason: str,
    live: str | None,
    embeddings: storage.Location,
    out: storage.Location,
    factory: str | None,
    metric: str | None,
    shards: int,
    cfg: IndexConfig,
    mode: str = "rebuild",
    counts: dict[str, int] | None = None,
    columns: Sequence[str] = (),
) -> UpdateResult:
    note: dict[str, Any] = {"mode": mode, "reason": reason, "from_version": live, **(counts or {})}
    built = build(
        embeddings,
        out,
        factory or "auto",
        metric or "ip",
        shards,
        cfg,
        update_note=note,
        filter_columns=columns,
    )
    return UpdateResult(mode, reason, built, live, counts)


def _update(
    loaded: LoadedIndex,
    old: pa.Table,
    info: EmbeddingsInfo,
    embeddings: storage.Location,
    out: storage.Location,
    shards: int,
    cfg: IndexConfig,
    filters: dict[str, Kind],
    text_column: str | None = None,
) -> UpdateResult:
    started = time.perf_counter()
    m = loaded.manifest
    index = loaded.index  # loaded from its file for us alone: changed in place
    version = index_store.new_version_name()
    staged = index_store.staging_dir(out, version)
    try:
        query_rows = sample_rows(info.count, cfg.recall_sample, cfg.seed + 1)
        samples = pass_one(info, staged / index_store.METADATA_FILE, np.zeros(0, np.int64), query_rows, cfg)
        diff = diff_rows(old, samples.ids, samples.vector_hashes)
        gone = np.flatnonzero(diff.new_row_of_old < 0)
        if len(gone):
            gone = np.ascontiguousarray(gone, dtype=np.int64)
            removed = index.index.remove_ids(faiss.IDSelectorBatch(len(gone), faiss.swig_ptr(gone)))
            if removed != len(gone):
                raise AssertionError(f"removed {removed} of {len(gone)} rows")
        relabel(index, diff.new_row_of_old)
        exact = ExactKnn(samples.queries, K + 1, index.metric)
        for batch in read_embeddings(info, columns=[], batch_rows=cfg.add_batch_rows):
            assert batch.vectors is not None
            lo, hi = np.searchsorted(diff.to_add, [batch.first_row, batch.first_row + batch.size])
            rows = diff.to_add[lo:hi]
            if len(rows):
                index.add(batch.vectors[rows - batch.first_row], rows)
            exact.update(batch.vectors, batch.first_row)
        if index.size != info.count:
            raise AssertionError(f"updated index holds {index.size} vectors, the input {info.count}")
        knob = search_knob(index)
        live_value = int(m.search_params.get(knob, 1)) if knob else None
        stop = live_value * max(cfg.update_max_widen, 1) if live_value else None
        recall = tune_search(index, samples.queries, query_rows, exact.ids, cfg, live_value, stop)
        if recall < cfg.target_recall:
            reason = (
                f"updated {loaded.version} reached recall@10 {recall:.4f} < target {cfg.target_recall} at "
                f"{index.search_params} (at most {cfg.update_max_widen}x the live {knob}={live_value})"
            )
            index_store.discard(staged)
            return _rebuild(
                reason,
                loaded.version,
                embeddings,
                out,
                m.factory,
                m.metric,
                shards,
                cfg,
                "retrain",
                diff.counts(),
                list(filters),
            )
        note = {"mode": "update", "reason": "", "from_version": loaded.version, **diff.counts()}
        manifest = save_version(
            staged,
            index,
            info,
            factory=m.factory,
            metric=m.metric,
            recall=recall,
            started=started,
            embeddings=embeddings,
            cfg=cfg,
            shards=m.shards,
            update=note,
            filters=filters,
            lexical_column=text_column,
        )
        path = index_store.publish(out, staged, version).uri
    except BaseException:
        index_store.discard(staged)
        raise
    built = BuildResult(version=version, path=path, manifest=manifest)
    return UpdateResult("update", "", built, loaded.version, diff.counts())
