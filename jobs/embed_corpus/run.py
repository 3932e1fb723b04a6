"""One embedding run (the command line: jobs/embed_corpus/cli.py; settings: JobConfig).

Streaming over deterministic shards (file, row range): an actor pool whose actors each hold one
Encoder reads a shard, quarantines bad rows, embeds the rest and writes the shard's part file
under a name fixed by the shard (one all-or-nothing write); the driver then commits the shard
with a marker object (jobs/embed_corpus/run_state.py). Rerunning the same
command resumes; a retried shard rewrites the same file, so every good row lands in the output
exactly once. A lease on the output refuses a second run on it while the first is alive.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
from tqdm import tqdm

import storage
from embedder.artifact import Artifact
from embedder.errors import EmbedderError
from index.prompt import NO_PROMPT, DocumentPrompt
from jobs.common.corpus import (
    ColumnSpec,
    Shard,
    attach_duplicates,
    auto_shard_rows,
    discover_inputs,
    find_duplicate_ids,
    inspect_inputs,
    plan_shards,
    resolve_columns,
)
from jobs.common.embeddings_io import RESERVED_COLUMNS
from jobs.common.layout import QUARANTINE_DIR, RUN_FILE, SUMMARY_FILE, is_part_file, part_name
from jobs.common.ray_errors import embedder_cause
from jobs.common.records import from_record
from jobs.embed_corpus.config import JobConfig, actor_threads, config_record
from jobs.embed_corpus.gpu_capacity import actor_bundle, gpu_capacity
from jobs.embed_corpus.incremental import PreviousRun, open_previous, read_ids_and_keys
from jobs.embed_corpus.output import remove_temp_files
from jobs.embed_corpus.run_state import Lease, RunState, ShardStats
from jobs.embed_corpus.udfs import ERROR_FIELD, TOO_LONG_POLICIES, EmbedShards, ShardTask, shard_to_json


def map_batches_kwargs(
    cfg: JobConfig, fingerprint: str, task: ShardTask, reuse: Any = None
) -> dict[str, Any]:
    """map_batches arguments for the encode stage: actor pool, resources, providers per device."""
    gpu = cfg.device == "gpu"
    kwargs: dict[str, Any] = {
        "compute": ray.data.ActorPoolStrategy(
            min_size=cfg.min_actors,
            max_size=cfg.max_actors,
            # Two, not the default four: shards take seconds, so a deep queue per actor leaves others
            # idle at the end of the run; one would keep the pool from ever scaling past min_size
            # (Ray Data scales up when queued work exceeds 175% of the pool's slots).
            max_tasks_in_flight_per_actor=2,
        ),
        "batch_size": cfg.shards_in_each_call,
        "batch_format": "numpy",
        "num_cpus": cfg.actor_cpus,
        "fn_constructor_kwargs": {
            "artifact": artifact_ref(cfg.artifact),
            "fingerprint": fingerprint,
            "task": task,
            # A GPU provider that fails to load is an error in the session factory, never a silent CPU run.
            "providers": cfg.actor_providers,
            "threads": actor_threads(cfg),
            "batch": cfg.batch,
            "reuse": reuse,  # incremental runs: object ref of the ReuseIndex
            "backend": cfg.backend,
            "precision": cfg.precision,
            "cuda_tf32": cfg.cuda_tf32 or None,
        },
    }
    if gpu:
        kwargs["num_gpus"] = cfg.gpus_per_actor
    return kwargs


class ShardsFailed(EmbedderError):
    """Some shards met an error (unreadable input, storage fault); the others were committed."""


def artifact_ref(spec: str) -> str:
    """How workers name the artifact: a URI as given, a local path made absolute."""
    return storage.resolve(spec).uri


@dataclass
class Prepared:
    """What the driver knows before any work: artifact, columns, run state, shards to do."""

    fingerprint: str
    columns: ColumnSpec
    state: RunState
    normalized: bool
    previous: PreviousRun | None = None
    prompt: DocumentPrompt = NO_PROMPT


def prepare(cfg: JobConfig, output: storage.Location | None = None, lease: Lease | None = None) -> Prepared:
    """All fail-fast checks (artifact, inputs, columns, output) without Ray, then the run state.

    Nothing is written to the output until every check passed; then the lease is taken (when
    given) and the run state opened. The config's paths and URIs are resolved here, once each.
    """
    output = output or storage.resolve(cfg.output)
    storage.check_bucket(output)
    if cfg.too_long not in TOO_LONG_POLICIES:
        raise EmbedderError(f"--too-long must be one of {TOO_LONG_POLICIES}, got {cfg.too_long!r}")
    if cfg.device not in ("cpu", "gpu"):
        raise EmbedderError(f"--device must be cpu or gpu, got {cfg.device!r}")
    artifact = Artifact.load(cfg.artifact)  # verifies file hashes against the manifest fingerprint
    prompt = choose_prompt(cfg, artifact)
    artifact_uri = artifact_ref(cfg.artifact)
    files = discover_inputs(storage.resolve(cfg.input))
    columns = resolve_columns(files[0], cfg.text_column, cfg.id_column, cfg.keep_columns)
    reserved = [c for c in columns.keep if c in RESERVED_COLUMNS]
    if reserved:
        raise EmbedderError(f"--keep-columns {reserved} clash with output columns {list(RESERVED_COLUMNS)}")
    inputs = inspect_inputs(files, columns)
    previous, previous_identity = None, None
    if cfg.previous:
        previous_loc = storage.resolve(cfg.previous)
        previous_identity = finished_with(output, previous_loc)
        if previous_identity is None:
            # Checked and read (ids and text hashes only) before anything is written to the output.
            previous = open_previous(
                previous_loc,
                output,
                artifact.fingerprint,
                artifact_uri,
                id_type(files[0], columns),
                columns.id,
                prompt,
            )
            previous_identity = previous.identity()
    total = sum(f.rows for f in inputs)
    shards = plan_shards(inputs, cfg.shard_rows or auto_shard_rows(total, cfg.max_actors))
    run = {
        "artifact": artifact_uri,
        "fingerprint": artifact.fingerprint,
        "inputs": [f.signature() for f in inputs],
        "text_column": columns.text,
        "id_column": columns.id,
        "keep_columns": list(columns.keep),
        "too_long": cfg.too_long,
        "shards": [dataclasses.asdict(s) for s in shards],
        "config": config_record(cfg),
        "previous": previous_identity,
        "prompt_name": prompt.name,
        "prompt": prompt.text,
    }
    if lease is not None:
        lease.acquire()  # a second run on this output stops here, before touching anything
    state = RunState.open(output, run)
    return Prepared(artifact.fingerprint, columns, state, artifact.manifest.normalize, previous, prompt)


def choose_prompt(cfg: JobConfig, artifact: Artifact) -> DocumentPrompt:
    """The prompt the texts get: --prompt-name, else the model's document prompt; an unknown name is refused."""
    prompts = artifact.manifest.prompt_set()
    if cfg.prompt_name is not None and cfg.prompt_name not in prompts.names:
        raise EmbedderError(
            f"--prompt-name {cfg.prompt_name!r}: artifact {cfg.artifact} has no such prompt; its prompt "
            f"names: {', '.join(prompts.names) or 'none (it takes texts as they are)'}"
        )
    return DocumentPrompt.chosen(prompts, cfg.prompt_name)


def finished_with(output: storage.Location, previous: storage.Location) -> dict[str, Any] | None:
    """The recorded --previous identity when `output` already holds a complete run made from it.

    Rerunning a finished incremental run is a no-op that says so, even after its previous output
    was deleted (the new output is self-contained); the rest of the identity is still checked.
    """
    run_file = output.child(RUN_FILE)
    if not (storage.is_file(run_file) and storage.is_file(output.child(SUMMARY_FILE))):
        return None
    recorded = storage.read_json(run_file).get("previous")
    if isinstance(recorded, dict) and recorded.get("output") == previous.uri:
        return recorded
    return None


def id_type(first_file: storage.Location, columns: ColumnSpec) -> str:
    """The output's id type, as jobs.common.embeddings_io names it: generated row positions are int64."""
    if columns.id is None:
        return "int64"
    field = storage.parquet_file(first_file).schema_arrow.field(columns.id)
    return "int64" if pa.types.is_integer(field.type) else "string"


def run(cfg: JobConfig) -> dict[str, Any]:
    """Run (or resume, or confirm) an embedding job; returns the summary dict."""
    started = time.perf_counter()
    output = storage.resolve(cfg.output)
    lease = Lease(output, ttl=cfg.lease_ttl_seconds)
    try:
        return _run_leased(cfg, output, lease, started)
    finally:
        lease.release()


def _run_leased(cfg: JobConfig, output: storage.Location, lease: Lease, started: float) -> dict[str, Any]:
    prep = prepare(cfg, output, lease)
    state = prep.state
    if state.complete:
        summary: dict[str, Any] = storage.read_json(state.summary_path)
        summary["already_complete"] = True
        return summary
    pending = state.pending
    resumed = len(pending) < len(state.shards)
    remove_temp_files(state.output)
    if pending:
        if prep.columns.id is not None:
            # Duplicates are judged over the whole corpus, so resumed shards agree with finished ones.
            inputs = [str(p[0]) for p in state.run["inputs"]]
            positions, first = find_duplicate_ids(inspect_inputs(inputs, prep.columns), prep.columns.id)
            pending = attach_duplicates(pending, positions, first)
        run_shards(cfg, prep, pending, lease)
    verify_output(state)
    ran_now = {s.shard_id for s in pending}
    summary = make_summary(cfg, state, time.perf_counter() - started, ran_now, resumed)
    if prep.previous is not None:
        summary.update(changes_since(prep.previous, state))
    storage.write_json(state.summary_path, summary)
    return summary


def run_shards(cfg: JobConfig, prep: Prepared, shards: list[Shard], lease: Lease) -> None:
    """Stream the pending shards through the actor pool, journaling each as it finishes."""
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False)
    if cfg.device == "gpu":
        # cluster_resources() counts live nodes only: GPU node types at min_workers 0 exist only
        # once asked for, so ask the autoscaler for the pool's bundles and wait (bounded).
        bundle = actor_bundle(cfg.gpus_per_actor, cfg.actor_cpus)
        with gpu_capacity(bundle, cfg.min_actors, cfg.gpu_wait_seconds):
            _stream_shards(cfg, prep, shards, lease)
    else:
        _stream_shards(cfg, prep, shards, lease)


def _stream_shards(cfg: JobConfig, prep: Prepared, shards: list[Shard], lease: Lease) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts rows, Ray's would count shards
    ctx.print_on_execution_start = False  # no plan dump on the driver: the job's step lines say what runs
    task = ShardTask(
        output=prep.state.output.uri, columns=prep.columns, too_long=cfg.too_long, prompt=prep.prompt
    )
    # One copy of the lookup in the object store, shared by every actor on a node (24 B/previous row).
    reuse = ray.put(prep.previous.reuse_index()) if prep.previous is not None else None
    items = ray.data.from_items([{"spec": shard_to_json(s)} for s in shards], override_num_blocks=len(shards))
    ds = items.map_batches(EmbedShards, **map_batches_kwargs(cfg, prep.fingerprint, task, reuse))
    with tqdm(
        total=sum(s.rows for s in shards), unit="rows", disable=not cfg.progress, file=sys.stderr
    ) as bar:
        failures: list[str] = []
        try:
            for row in ds.iter_rows():
                stats = stats_from_row(row)
                bar.update(stats.rows_read)
                if row[ERROR_FIELD]:
                    failures.append(f"shard {stats.shard_id}: {row[ERROR_FIELD]}")
                    continue  # not committed: a rerun does it again
                lease.check()  # never commit after another run took the output over
                prep.state.record(stats)
        except Exception as exc:
            # A worker's clear error (unreadable shard, disk full, missing bucket) arrives wrapped
            # in Ray's task errors; surface the original one line, not the remote traceback.
            cause = embedder_cause(exc)
            if cause is None or cause is exc:
                raise
            raise cause from None
    if failures:
        more = f" (and {len(failures) - 1} more failed shard(s))" if len(failures) > 1 else ""
        raise ShardsFailed(
            f"{failures[0]}{more}; the {len(prep.state.done)} finished shards are kept: rerun the same "
            "command to resume once the cause is fixed"
        )


def stats_from_row(row: dict[str, Any]) -> ShardStats:
    """A result row (numpy scalars) -> ShardStats with plain Python values."""
    return from_record(ShardStats, row)


def verify_output(state: RunState) -> None:
    """Every shard done; part files are exactly the shards with embedded rows, with their row counts."""
    if state.pending:
        raise EmbedderError(
            f"{len(state.pending)} shard(s) did not finish: {[s.shard_id for s in state.pending][:5]}"
        )
    expected = {part_name(s.shard_id): s.rows_embedded for s in state.done.values() if s.rows_embedded}
    found = {
        f.base_name: storage.parquet_file(storage.located(state.output, f.path)).metadata.num_rows
        for f in storage.list_files(state.output, recursive=False)
        if is_part_file(f.base_name)
    }
    if found != expected:
        extra = sorted(set(found) - set(expected))[:5]
        missing = sorted(set(expected) - set(found))[:5]
        wrong = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])[:5]
        raise EmbedderError(
            f"output does not match the journal: extra {extra}, missing {missing}, row counts {wrong}"
        )


def changes_since(previous: PreviousRun, state: RunState) -> dict[str, Any]:
    """Summary fields of an incremental run: ids removed / changed / added since the previous run."""
    files = [
        storage.located(state.output, f.path).uri
        for f in storage.list_files(state.output, recursive=False)
        if is_part_file(f.base_name)
    ]
    current, _ = read_ids_and_keys(files, f"output {state.output}")
    return {"previous": previous.location.uri, "previous_rows": previous.rows, **previous.diff(current)}


def make_summary(
    cfg: JobConfig, state: RunState, wall: float, ran_now: set[str], resumed: bool
) -> dict[str, Any]:
    """_SUMMARY.json content: totals over all attempts, speed of this attempt."""
    done = list(state.done.values())
    ran = [s for s in done if s.shard_id in ran_now]
    embedded_now = sum(s.rows_embedded for s in ran)
    reused = sum(s.rows_reused for s in done)
    return {
        "rows_read": sum(s.rows_read for s in done),
        "rows_embedded": sum(s.rows_embedded for s in done),
        # Of rows_embedded: vectors copied from --previous, and rows that went through the model.
        "rows_reused": reused,
        "rows_embedded_new": sum(s.rows_embedded for s in done) - reused,
        # Set by changes_since for incremental runs (ids compared with the previous output).
        "previous": None,
        "previous_rows": None,
        "rows_removed": None,
        "rows_changed": None,
        "rows_added": None,
        "rows_quarantined": sum(s.rows_quarantined for s in done),
        "rows_truncated": sum(s.rows_truncated for s in done),
        "tokens": sum(s.tokens for s in done),
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(embedded_now / wall, 1) if wall > 0 else 0.0,
        "rows_embedded_this_run": embedded_now,
        "encode_seconds": round(sum(s.encode_seconds for s in ran), 3),
        "reuse_seconds": round(sum(s.reuse_seconds for s in ran), 3),
        "shard_seconds": round(sum(s.seconds for s in ran), 3),
        "shards": len(state.shards),
        "shards_this_run": len(ran_now),
        "resumed": resumed,
        "fingerprint": state.run["fingerprint"],
        "artifact": state.run["artifact"],
        # The prompt every vector was embedded with (None / "": none).
        "prompt_name": state.run.get("prompt_name"),
        "prompt": state.run.get("prompt", ""),
        "output": state.output.uri,
        "quarantine": state.output.child(QUARANTINE_DIR).uri,
        "config": config_record(cfg),
        # Which backend / precision / CPU units made the vectors, with the shards each made.
        "runtimes": runtime_counts(done),
    }


def runtime_counts(done: list[ShardStats]) -> dict[str, int]:
    """Shards per runtime label (more than one when nodes differ, e.g. AMX and AVX2 workers under auto)."""
    counts: dict[str, int] = {}
    for s in done:
        label = s.runtime or "unrecorded"
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
