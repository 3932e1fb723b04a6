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
from pathlib import Path
from typing import Any

import ray

import storage
from embedder.errors import InvalidInput
from embedder.progress import Progress
from index.faiss_index import VectorIndex
from jobs.common.embeddings_filter import write_filtered
from jobs.common.embeddings_io import inspect_embeddings
from jobs.common.layout import GROUPS_FILE, PAIRS_FILE, SUMMARY_FILE
from jobs.common.ray_errors import embedder_cause
from jobs.find_duplicates.config import DedupConfig
from jobs.find_duplicates.dedup import dedup_rows
from jobs.find_duplicates.exact import NORMALIZATION, hash_questions
from jobs.find_duplicates.near import NearPairs
from jobs.find_duplicates.search import built_index, check_index, checked, load_index, search_on_ray
from jobs.find_duplicates.texts import read_rows, text_source


def run(cfg: DedupConfig) -> dict[str, Any]:
    """Check the inputs, find the pairs and groups, write the outputs; returns the summary."""
    if cfg.filter is not None:
        return _run_filtered(cfg)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    embeddings, output = storage.resolve(cfg.embeddings), storage.resolve(cfg.output)  # once each
    info = inspect_embeddings(embeddings)
    if info.count == 0:
        raise InvalidInput(f"{cfg.embeddings}: the embeddings hold no rows", field="embeddings")
    if output.uri.rstrip("/") == embeddings.uri.rstrip("/"):
        raise InvalidInput("--output must not be the embeddings directory", field="output")
    storage.check_bucket(output)
    source, corpus_files = text_source(cfg, info)
    if cfg.group_by and cfg.group_by not in info.passthrough:
        raise InvalidInput(
            f"--group-by {cfg.group_by!r}: the embeddings have no such column (they have "
            f"{list(info.passthrough)}); keep it with the embed job's --keep-columns",
            field="group_by",
        )
    if cfg.factory != "auto":
        VectorIndex.create(info.dimension, cfg.factory)  # a bad factory string fails here, not in Ray
    index_root = storage.resolve(cfg.index) if cfg.index else None
    version = check_index(cfg, index_root, info) if index_root is not None else None

    progress = Progress("find_duplicates", enabled=cfg.progress)
    with progress.step(f"reading {info.count} rows ({source} texts)", seconds, "read"):
        rows = read_rows(cfg, info, source, corpus_files)
    blob = None
    if version is not None:
        with progress.step(f"loading index version {version}"):
            assert index_root is not None
            blob = load_index(cfg, index_root, version, rows.ids)
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
                    else built_index.options(num_cpus=cfg.build_cpus).remote(  # type: ignore[attr-defined]
                        vectors_ref, cfg.factory, cfg.build_cpus
                    )
                )
                described.update(ray.get(blob_ref).description)
            t1 = time.perf_counter()
            found = search_on_ray(cfg, vectors_ref, blob_ref, n, progress)
            seconds["near_search"] = time.perf_counter() - t1
            return found

        result = dedup_rows(rows.ids, rows.vectors, keys, cfg.threshold, cfg.k, search, rows.group_values)
        agreement = None
        if cfg.check_sample and n >= 2:
            with progress.step(
                f"checking against brute force on {min(cfg.check_sample, n)} rows", seconds, "check"
            ):
                agreement = ray.get(
                    checked.remote(vectors_ref, result.near, cfg.threshold, cfg.check_sample, cfg.seed)  # type: ignore[attr-defined]
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
        "embeddings": embeddings.uri,
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
