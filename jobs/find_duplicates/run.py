"""One duplicate-detection run over an embeddings directory (the command line: jobs/find_duplicates/cli.py).

Every file goes through storage (local paths or URIs). Stage 1 (driver): exact duplicates by
normalised-text hash (jobs/find_duplicates/dedup.py defines the normalisation). Stage 2 (Ray): a FAISS index over
the vectors (built here in a Ray task with index.faiss_index's factory choice, or an index version
loaded with --index whose fingerprint and ids match the embeddings) goes into the object store
once; `workers` actors (num_cpus=1 each) load it once and search query shards with k-NN, keeping
neighbours whose exact cosine is >= the threshold. Pairs are then merged, groups are the connected
components of the pair graph, and a Ray task measures pair recall / precision against brute-force
search on a sample. pairs.parquet, groups.parquet and, last, _SUMMARY.json (jobs/common/layout.py).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util import ActorPool

import storage
from embedder.errors import IndexInvalid, InvalidInput, ModelMismatch
from embedder.progress import QUIET, Progress
from index import store as index_store
from index.faiss_index import VectorIndex
from jobs.common.corpus import ColumnSpec, CorpusError, discover_inputs, inspect_inputs
from jobs.common.embeddings_filter import parse_filter_setting, write_filtered
from jobs.common.embeddings_io import EmbeddingsInfo, inspect_embeddings, read_embeddings
from jobs.common.layout import GROUPS_FILE, PAIRS_FILE, SUMMARY_FILE
from jobs.common.ray_errors import embedder_cause
from jobs.find_duplicates.dedup import (
    NORMALIZATION,
    Agreement,
    NearPairs,
    build_search_index,
    check_agreement,
    find_duplicates,
    hash_questions,
    id_order,
    near_pairs,
    unit_rows,
)
from settings.loader import check_field


@dataclass(frozen=True)
class DedupConfig:
    """Every setting of one run (recorded in _SUMMARY.json)."""

    embeddings: str
    output: str
    corpus: str | None = None  # the embed job's input, for the texts; None: a passthrough column
    text_column: str = "question"
    id_column: str = "id"  # "" : the corpus has no id column (the embed job then used row positions)
    exact: bool = True  # False: near stage only (no text needed)
    threshold: float = 0.9
    k: int = 20
    index: str | None = None  # index root whose version to use instead of building one
    index_version: str | None = None  # None: CURRENT
    factory: str = "auto"  # for the index built here: index.faiss_index.choose_factory, or a FAISS string
    workers: int = 2  # search actors (1 CPU each, one index copy each)
    build_cpus: int = 1  # CPUs (and FAISS threads) of the index-build task
    shard_rows: int = 4096  # query rows per actor call (progress and load-balance unit)
    check_sample: int = 1000  # query rows checked against brute force (0: no check)
    seed: int = 0
    ray_address: str | None = None
    progress: bool = True
    # Only rows this /match-style filter selects (jobs/common/embeddings_filter.py), e.g. one category;
    # from the command line or QM_DEDUP_FILTER as JSON text.
    filter: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        parse_filter_setting(self)
        check_field(self, "threshold", 0.0 < self.threshold <= 1.0, "must be in (0, 1] (a cosine similarity)")
        check_field(self, "k", self.k >= 1, "must be >= 1")
        for name in ("workers", "build_cpus", "shard_rows"):
            check_field(self, name, getattr(self, name) >= 1, "must be >= 1")
        check_field(self, "check_sample", self.check_sample >= 0, "must be >= 0 (0: no check)")


@dataclass
class Rows:
    """Every embeddings row in ascending id order: ids, unit vectors, texts (or None)."""

    ids: pa.Array
    vectors: np.ndarray
    texts: list[str | None] | None
    text_source: str  # "corpus" | "embeddings" | "none"
    texts_missing: int = 0  # rows whose id the corpus does not have


def text_source(cfg: DedupConfig, info: EmbeddingsInfo) -> tuple[str, list[str]]:
    """Where the exact stage's texts come from, checked before any data is read."""
    if not cfg.exact:
        return "none", []
    if cfg.corpus:
        files = discover_inputs(cfg.corpus)
        spec = ColumnSpec(text=cfg.text_column, id=cfg.id_column or None)
        inputs = inspect_inputs(files, spec)
        if cfg.id_column:
            for f in inputs:
                id_type = storage.parquet_file(f.path).schema_arrow.field(cfg.id_column).type
                is_int = pa.types.is_integer(id_type)
                if is_int != (info.id_type == "int64"):
                    raise CorpusError(
                        f"{f.path}: id column {cfg.id_column!r} is {id_type}, the embeddings' ids are {info.id_type}"
                    )
        elif info.id_type != "int64":
            raise CorpusError("--id-column '' means row positions, but the embeddings' ids are strings")
        return "corpus", files
    if cfg.text_column in info.passthrough:
        text_type = storage.parquet_file(info.files[0]).schema_arrow.field(cfg.text_column).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise CorpusError(
                f"embeddings column {cfg.text_column!r} must be a string column, is {text_type}"
            )
        return "embeddings", []
    raise CorpusError(
        f"no texts for the exact stage: the embeddings have no column {cfg.text_column!r} "
        f"(they have {list(info.passthrough)}); give --corpus <the embed job's input>, "
        "name a passthrough column with --text-column, or pass --no-exact"
    )


def read_rows(cfg: DedupConfig, info: EmbeddingsInfo, source: str, corpus_files: list[str]) -> Rows:
    """Vectors (unit length) and texts in ascending id order; two passes keep one copy of the vectors."""
    id_parts = [b.table.column("id") for b in read_embeddings(info, columns=["id"], vectors=False)]
    ids_all = pa.chunked_array([c for col in id_parts for c in col.chunks], type=id_parts[0].type)
    order = id_order(ids_all)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    vectors = np.empty((info.count, info.dimension), dtype=np.float32)
    texts: list[str | None] | None = [None] * info.count if source == "embeddings" else None
    columns = [cfg.text_column] if source == "embeddings" else []
    for batch in read_embeddings(info, columns=columns):
        assert batch.vectors is not None
        at = position[batch.first_row : batch.first_row + batch.size]
        vectors[at] = batch.vectors
        if texts is not None:
            for p, t in zip(at.tolist(), batch.table.column(0).to_pylist(), strict=True):
                texts[p] = t if isinstance(t, str) else None
    if not info.normalized:
        unit_rows(vectors)  # cosine is what the threshold means
    ids = ids_all.take(pa.array(order)).combine_chunks()
    rows = Rows(ids=ids, vectors=vectors, texts=texts, text_source=source)
    if source == "corpus":
        rows.texts, rows.texts_missing = corpus_texts(cfg, corpus_files, ids)
    return rows


def corpus_texts(cfg: DedupConfig, files: list[str], ids: pa.Array) -> tuple[list[str | None], int]:
    """Each id's text from the original input (first occurrence of an id wins, as in the embed job)."""
    id_chunks, text_chunks, offset = [], [], 0
    for f in files:
        cols = [cfg.text_column] + ([cfg.id_column] if cfg.id_column else [])
        table = storage.read_parquet(f, columns=cols)
        if cfg.id_column:
            col = table.column(cfg.id_column)
            id_chunks.append(col.cast(pa.int64()) if pa.types.is_integer(col.type) else col.cast(pa.string()))
        else:
            id_chunks.append(pa.chunked_array([pa.array(np.arange(offset, offset + table.num_rows))]))
        offset += table.num_rows
        text_chunks.append(table.column(cfg.text_column).cast(pa.string()))
    corpus_ids = pa.chunked_array(
        [c for col in id_chunks for c in col.chunks], type=ids.type
    ).combine_chunks()
    corpus_text = pa.chunked_array([c for col in text_chunks for c in col.chunks], type=pa.string())
    where = pc.index_in(ids, value_set=corpus_ids)
    missing = where.null_count
    texts = corpus_text.take(where).to_pylist()
    return texts, int(missing)


@dataclass(frozen=True)
class IndexBlob:
    """A serialised index and how to use it: what crosses the object store to the search actors."""

    data: np.ndarray  # faiss.serialize_index bytes (uint8)
    factory: str
    metric: str
    search_params: dict[str, int]
    # Index row -> our row (ascending id order); None when the index numbers rows as we do.
    index_rows: np.ndarray | None
    description: dict[str, Any]


def check_index(cfg: DedupConfig, info: EmbeddingsInfo) -> str:
    """The --index version to use, from its manifest alone: refused if made from another model."""
    assert cfg.index is not None
    version = cfg.index_version or index_store.current_version(cfg.index)
    if version is None:
        raise IndexInvalid(f"{cfg.index}: no CURRENT index version (build one or pass --index-version)")
    manifest = index_store.verify_version(storage.resolve(cfg.index).child(version))
    if manifest.fingerprint != info.fingerprint:
        raise ModelMismatch(
            f"index {cfg.index} version {version} was built from model {manifest.fingerprint or '<none>'}, "
            f"the embeddings come from {info.fingerprint or '<none>'}"
        )
    if manifest.dimension != info.dimension or manifest.count != info.count:
        raise IndexInvalid(
            f"index {cfg.index} version {version} holds {manifest.count} x {manifest.dimension} vectors, "
            f"the embeddings {info.count} x {info.dimension}: rebuild it from these embeddings or omit --index"
        )
    return version


def load_index(cfg: DedupConfig, version: str, ids: pa.Array) -> IndexBlob:
    """The checked index version, refused unless it holds exactly these embeddings' ids."""
    assert cfg.index is not None
    loaded = index_store.open_version(cfg.index, version)
    index_ids = loaded.metadata.column("id")
    if index_ids.type != ids.type:
        raise IndexInvalid(f"index ids are {index_ids.type}, the embeddings' ids are {ids.type}")
    rows = pc.index_in(index_ids, value_set=ids)
    if rows.null_count or len(index_ids) != len(ids):
        raise IndexInvalid(
            f"index {cfg.index} version {version} holds other rows than the embeddings "
            f"({len(index_ids)} ids, {rows.null_count} not in the embeddings; embeddings have {len(ids)}): "
            "rebuild it from these embeddings or omit --index"
        )
    mapping = rows.to_numpy(zero_copy_only=False).astype(np.int64)
    same = bool(np.array_equal(mapping, np.arange(len(mapping))))
    index = loaded.index
    return IndexBlob(
        data=index.to_bytes(),
        factory=index.factory,
        metric=index.metric,
        search_params=dict(index.search_params),
        index_rows=None if same else mapping,
        description={
            "source": "loaded",
            "root": storage.resolve(cfg.index).uri,
            "version": version,
            "factory": index.factory,
            "metric": index.metric,
            "search_params": dict(index.search_params),
            "recall_at_10": loaded.manifest.recall_at_10,
        },
    )


@ray.remote(num_cpus=1)
def _build_index(vectors: np.ndarray, factory: str, threads: int) -> IndexBlob:
    """Build and tune an inner-product index over all rows (a Ray task: off the driver's node)."""
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index, recall = build_search_index(vectors, factory)
    return IndexBlob(
        data=index.to_bytes(),
        factory=index.factory,
        metric=index.metric,
        search_params=dict(index.search_params),
        index_rows=None,
        description={
            "source": "built",
            "factory": index.factory,
            "metric": index.metric,
            "search_params": dict(index.search_params),
            "recall_at_10": round(recall, 4),
            "build_seconds": round(time.perf_counter() - started, 3),
        },
    )


@ray.remote(num_cpus=1)
class NearSearcher:
    """One search actor: deserialises the index once, then answers query shards."""

    def __init__(self, blob: IndexBlob, vectors: np.ndarray, k: int, threshold: float) -> None:
        faiss.omp_set_num_threads(1)  # one CPU reserved, one thread
        self.index = VectorIndex.from_bytes(blob.data, blob.factory, blob.metric, blob.search_params)
        self.index_rows = blob.index_rows
        self.vectors = vectors  # read-only view of the object store copy
        self.k, self.threshold = k, threshold

    def search(self, start: int, stop: int) -> NearPairs:
        """Near pairs of query rows [start, stop)."""
        return near_pairs(self.index, self.vectors, start, stop, self.k, self.threshold, self.index_rows)


@ray.remote(num_cpus=1)
def _check(vectors: np.ndarray, near: NearPairs, threshold: float, sample: int, seed: int) -> Agreement:
    faiss.omp_set_num_threads(1)
    return check_agreement(vectors, near, threshold, sample, seed)


def search_on_ray(
    cfg: DedupConfig, vectors_ref: ray.ObjectRef, blob_ref: ray.ObjectRef, n: int, progress: Progress = QUIET
) -> NearPairs:
    """Query shards over a pool of search actors; a row bar on stderr."""
    shards = [(lo, min(n, lo + cfg.shard_rows)) for lo in range(0, n, cfg.shard_rows)]
    actors = [
        NearSearcher.remote(blob_ref, vectors_ref, cfg.k, cfg.threshold)  # type: ignore[attr-defined]
        for _ in range(min(cfg.workers, max(len(shards), 1)))
    ]
    parts: list[NearPairs] = []
    try:
        pool = ActorPool(actors)
        with progress.rows(n, f"near search ({len(actors)} actors, k={cfg.k})") as bar:
            for part, (lo, hi) in zip(
                pool.map(lambda actor, s: actor.search.remote(*s), shards), shards, strict=True
            ):
                parts.append(part)
                bar.update(hi - lo)
    finally:
        for actor in actors:
            ray.kill(actor)  # each holds an index copy: free it before the check
    return NearPairs.concat(parts, n)


def run(cfg: DedupConfig) -> dict[str, Any]:
    """Check the inputs, find the pairs and groups, write the outputs; returns the summary."""
    if cfg.filter is not None:
        return _run_filtered(cfg)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    info = inspect_embeddings(cfg.embeddings)
    if info.count == 0:
        raise InvalidInput(f"{cfg.embeddings}: the embeddings hold no rows", field="embeddings")
    output = storage.resolve(cfg.output)
    if output.uri.rstrip("/") == storage.resolve(cfg.embeddings).uri.rstrip("/"):
        raise InvalidInput("--output must not be the embeddings directory", field="output")
    storage.check_bucket(output)
    source, corpus_files = text_source(cfg, info)
    if cfg.factory != "auto":
        VectorIndex.create(info.dimension, cfg.factory)  # a bad factory string fails here, not in Ray
    version = check_index(cfg, info) if cfg.index else None

    progress = Progress("find_duplicates", enabled=cfg.progress)
    with progress.step(f"reading {info.count} rows ({source} texts)", seconds, "read"):
        rows = read_rows(cfg, info, source, corpus_files)
    blob = None
    if version is not None:
        with progress.step(f"loading index version {version}"):
            blob = load_index(cfg, version, rows.ids)
    keys = None
    if rows.texts is not None:
        with progress.step("exact stage: hashing normalised texts", seconds, "hash_texts"):
            keys = hash_questions(rows.texts)

    n = info.count
    started_ray = False
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False)
        started_ray = True
    try:
        vectors_ref = ray.put(rows.vectors)
        rows.vectors = ray.get(vectors_ref)  # the driver keeps only the object store's copy
        described: dict[str, Any] = {}

        def search() -> NearPairs:
            if n < 2:
                return NearPairs.empty()
            label = "index to the object store" if blob is not None else f"building an index of {n} vectors"
            with progress.step(label, seconds, "index"):
                blob_ref = (
                    ray.put(blob)
                    if blob is not None
                    else _build_index.options(num_cpus=cfg.build_cpus).remote(  # type: ignore[attr-defined]
                        vectors_ref, cfg.factory, cfg.build_cpus
                    )
                )
                described.update(ray.get(blob_ref).description)
            t1 = time.perf_counter()
            found = search_on_ray(cfg, vectors_ref, blob_ref, n, progress)
            seconds["near_search"] = time.perf_counter() - t1
            return found

        result = find_duplicates(rows.ids, rows.vectors, keys, cfg.threshold, cfg.k, search)
        agreement = None
        if cfg.check_sample and n >= 2:
            with progress.step(
                f"checking against brute force on {min(cfg.check_sample, n)} rows", seconds, "check"
            ):
                agreement = ray.get(
                    _check.remote(vectors_ref, result.near, cfg.threshold, cfg.check_sample, cfg.seed)  # type: ignore[attr-defined]
                )
    except Exception as exc:
        cause = embedder_cause(exc)
        if cause is None or cause is exc:
            raise
        raise cause from None
    finally:
        if started_ray:
            ray.shutdown()

    t = time.perf_counter()
    summary_path = output.child(SUMMARY_FILE)
    storage.make_dirs(output)
    storage.delete_file(summary_path)  # a summary only ever describes the files beside it
    storage.write_parquet(output.child(PAIRS_FILE), result.pairs)
    storage.write_parquet(output.child(GROUPS_FILE), result.groups)
    seconds["write"] = time.perf_counter() - t
    stage = {**result.stats.pop("stage_seconds"), **seconds}
    summary = {
        **result.stats,
        "threshold": cfg.threshold,
        "k": cfg.k,
        "fingerprint": info.fingerprint,
        "dimension": info.dimension,
        "embeddings": storage.resolve(cfg.embeddings).uri,
        "output": output.uri,
        "normalization": NORMALIZATION,
        "texts": {
            "source": rows.text_source,
            # no text, or nothing left after normalisation
            "rows_without_text": n if keys is None else int(n - keys[1].sum()),
            "ids_not_in_corpus": rows.texts_missing,
        },
        "index": described or None,
        "check": (agreement.as_dict() if agreement is not None else None),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "stage_seconds": {name: round(v, 3) for name, v in stage.items()},
        "config": dataclasses.asdict(cfg),
    }
    storage.write_json(summary_path, summary)  # last: its presence means the outputs are complete
    return summary


def _run_filtered(cfg: DedupConfig) -> dict[str, Any]:
    """Duplicates among the rows the filter selects: the run over a filtered copy of the embeddings."""
    assert cfg.filter is not None
    if cfg.index:
        # An existing index holds every row: its neighbours would cross the filter's boundary.
        raise InvalidInput(
            "--filter cannot use --index; the run builds an index of the selected rows", field="filter"
        )
    with tempfile.TemporaryDirectory(prefix="qm-filtered-") as tmp:
        path, selected, total = write_filtered(cfg.embeddings, cfg.filter, Path(tmp))
        summary = run(dataclasses.replace(cfg, embeddings=path, filter=None))
    summary.update(
        embeddings=storage.resolve(cfg.embeddings).uri,
        filter=cfg.filter,
        filter_selected=selected,
        rows_before_filter=total,
    )
    storage.write_json(storage.resolve(cfg.output).child(SUMMARY_FILE), summary)
    return summary
