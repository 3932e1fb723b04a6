"""Incremental embedding and index updates vs full runs, same corpus, same machine, one script.

    ../shared/bin/loopback-only .venv/bin/python -m bench.incremental [--rows 20000] [--changed 0.01]
        [--artifact artifacts/minilm-fp32] [--rounds 2]

Day one: `--rows` generated FAQ rows (bench.corpus_gen), embedded in full. Day two: the same rows
with `--changed` of the texts edited (plus optional `--added` / `--deleted` fractions). Day two
is then embedded twice per round, in alternating order: a full run, and an incremental run with
--previous day one. Both outputs are compared (same ids, max abs vector difference). Then the
index, on synthetic clustered vectors with the same edits: day one is built into an IVF index,
and day two goes in once as `build_index --update` from it and once as a full build.

Without --artifact a tiny random BERT is exported (needs the export extra), so the model's share
of the work is small and the ratio understates what a real model gains; with a real model the
full run's time grows with the corpus while the incremental run's model time grows with the edits.
Writes bench/results/incremental.json with machine info and the load before and after.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from bench.corpus_gen import write_corpus
from bench.load import load_snapshot, warn_if_busy
from bench.machine import machine_info
from index import store as index_store
from index.faiss_index import IndexConfig, choose_factory
from jobs import index_build
from jobs.embed_run import JobConfig, run
from jobs.embeddings_io import inspect_embeddings, read_embeddings, write_embeddings_parquet
from jobs.index_update import update
from testkit.vectors import clustered_vectors

RESULTS = Path(__file__).parent / "results"


def edit_corpus(
    src: Path, dst: Path, changed: float, added: float, deleted: float, seed: int
) -> dict[str, int]:
    """Day two: edit a fraction of texts, drop and append rows; returns what was done."""
    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.parquet"))
    next_id = sum(pq.read_metadata(f).num_rows for f in files) + 10_000_000
    counts = {"changed": 0, "added": 0, "deleted": 0}
    for f in files:
        t = pq.read_table(f)
        n = t.num_rows
        questions = t.column("question").to_pylist()
        for i in rng.choice(n, size=round(changed * n), replace=False).tolist():
            questions[i] = f"{questions[i]} (updated {seed})"
            counts["changed"] += 1
        t = t.set_column(t.schema.get_field_index("question"), "question", pa.array(questions, pa.string()))
        keep = np.ones(n, dtype=bool)
        keep[rng.choice(n, size=round(deleted * n), replace=False)] = False
        counts["deleted"] += int((~keep).sum())
        t = t.filter(pa.array(keep))
        extra = round(added * n)
        if extra:
            new = t.slice(0, extra)
            ids = pa.array(range(next_id, next_id + extra), t.schema.field("id").type)
            new = new.set_column(t.schema.get_field_index("id"), "id", ids)
            new = new.set_column(
                new.schema.get_field_index("question"),
                "question",
                pa.array(
                    [f"new question {i} about {q}" for i, q in enumerate(new.column("question").to_pylist())]
                ),
            )
            t = pa.concat_tables([t, new])
            next_id += extra
            counts["added"] += extra
        pq.write_table(t, dst / f.name, row_group_size=2_000)
    return counts


def vectors_by_id(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an embeddings output, sorted by id."""
    info = inspect_embeddings(str(out))
    ids, vecs = [], []
    for batch in read_embeddings(info, columns=["id"]):
        ids.append(batch.table.column("id").to_numpy())
        assert batch.vectors is not None
        vecs.append(batch.vectors)
    all_ids, all_vecs = np.concatenate(ids), np.concatenate(vecs)
    order = np.argsort(all_ids)
    return all_ids[order], all_vecs[order]


def embed(artifact: str, corpus: Path, out: Path, previous: Path | None) -> dict[str, Any]:
    """One embed job; wall time measured around the whole call (prepare, shards, summary)."""
    cfg = JobConfig(
        artifact=artifact,
        input=str(corpus),
        output=str(out),
        keep_columns=("answer",),
        min_actors=2,
        max_actors=2,
        threads_per_actor=1,
        progress=False,
        previous=str(previous) if previous else None,
    )
    t0 = time.perf_counter()
    s = run(cfg)
    wall = time.perf_counter() - t0
    keys = ("rows_embedded", "rows_reused", "rows_embedded_new", "rows_removed", "rows_changed", "rows_added")
    return {k: s[k] for k in keys} | {
        "wall_seconds": round(wall, 2),
        "encode_seconds": s["encode_seconds"],
        "reuse_seconds": s["reuse_seconds"],
    }


def export_tiny_artifact(work: Path) -> str:
    """A tiny random BERT artifact (the builder lives with the tests; needs torch)."""
    tiny = importlib.import_module("testkit.tiny_model")
    return str(tiny.export_tiny(tiny.make_tiny_st_model(work / "tiny-model"), work / "tiny-artifact"))


def index_phase(
    rows: int, changed: float, added: float, deleted: float, dim: int, work: Path
) -> dict[str, Any]:
    """IVF index: day two as an --update from day one's version vs a full build of day two.

    On synthetic clustered vectors (bench.index), not the model's: the tiny model maps the
    generated corpus to a few dozen distinct vectors, where recall only measures tie-breaking.
    """
    rng = np.random.default_rng(11)
    v1 = clustered_vectors(rows, dim, seed=5)
    ids = np.arange(rows, dtype=np.int64)
    write_embeddings_parquet(work / "vec-day1" / "part-00000.parquet", ids, v1, fingerprint="sha256:bench")
    order = rng.permutation(rows)
    n_changed, n_deleted, n_added = round(changed * rows), round(deleted * rows), round(added * rows)
    v2 = v1.copy()
    # Edited and added rows from the same distribution (same seed: same centres, drawn first).
    fresh = clustered_vectors(rows + n_changed + n_added, dim, seed=5)[rows:]
    v2[order[:n_changed]] = fresh[:n_changed]
    keep = np.ones(rows, dtype=bool)
    keep[order[n_changed : n_changed + n_deleted]] = False
    ids2 = np.concatenate([ids[keep], np.arange(rows, rows + n_added)])
    vectors2 = np.concatenate([v2[keep], fresh[n_changed:]])
    write_embeddings_parquet(
        work / "vec-day2" / "part-00000.parquet", ids2, vectors2, fingerprint="sha256:bench"
    )
    factory = choose_factory(rows, dim, IndexConfig(), "ivf")
    root, fresh_root = work / "idx", work / "idx-full"
    base = index_build.build(work / "vec-day1", root, factory)
    t0 = time.perf_counter()
    updated = update(work / "vec-day2", root)
    t_update = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = index_build.build(work / "vec-day2", fresh_root, factory)
    t_full = time.perf_counter() - t0
    return {
        "vectors": f"bench.index.clustered_vectors, dim {dim}",
        "factory": factory,
        "day_one_version": {
            "build_seconds": base.manifest.build_seconds,
            "recall_at_10": base.manifest.recall_at_10,
            "search_params": base.manifest.search_params,
        },
        "update": {
            "mode": updated.mode,
            "reason": updated.reason,
            "counts": updated.counts,
            "wall_seconds": round(t_update, 2),
            "recall_at_10": updated.built.manifest.recall_at_10,
            "search_params": updated.built.manifest.search_params,
            "current_flipped": index_store.current_version(root) == updated.built.version,
        },
        "full_build": {
            "wall_seconds": round(t_full, 2),
            "recall_at_10": full.manifest.recall_at_10,
            "search_params": full.manifest.search_params,
        },
        "full_over_update": round(t_full / t_update, 2) if t_update > 0 else None,
    }


def main() -> None:
    """Run both days, both ways, and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--changed", type=float, default=0.01, help="fraction of texts edited on day two")
    p.add_argument("--added", type=float, default=0.0, help="fraction of rows added on day two")
    p.add_argument("--deleted", type=float, default=0.0, help="fraction of rows deleted on day two")
    p.add_argument("--artifact", help="default: a tiny random BERT exported here")
    p.add_argument("--rounds", type=int, default=2, help="full/incremental pairs, alternating order")
    p.add_argument("--index-dim", type=int, default=384, help="dimension of the index phase's vectors")
    p.add_argument("--out", type=Path, default=RESULTS / "incremental.json")
    a = p.parse_args()
    results: dict[str, Any] = {"machine": machine_info(), "rows": a.rows, "load_at_start": load_snapshot()}
    warn_if_busy(results["load_at_start"], "start")
    with tempfile.TemporaryDirectory(prefix="incremental-") as tmp:
        work = Path(tmp)
        artifact = a.artifact or export_tiny_artifact(work)
        results["artifact"] = a.artifact or "tiny random BERT (testkit.tiny_model, dim 32)"
        write_corpus(work / "day1-in", a.rows, files=4, seed=3, row_group_rows=2_000)
        results["edits"] = edit_corpus(work / "day1-in", work / "day2-in", a.changed, a.added, a.deleted, 1)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        results["day_one_full"] = embed(artifact, work / "day1-in", work / "day1", None)
        rounds = []
        for r in range(a.rounds):
            pair: dict[str, Any] = {}
            order = ("incremental", "full") if r % 2 == 0 else ("full", "incremental")
            for kind in order:
                out = work / f"day2-{kind}"
                shutil.rmtree(out, ignore_errors=True)
                previous = work / "day1" if kind == "incremental" else None
                pair[kind] = embed(artifact, work / "day2-in", out, previous)
                print(f"[incremental] round {r} {kind}: {json.dumps(pair[kind])}", flush=True)
            pair["full_over_incremental"] = round(
                pair["full"]["wall_seconds"] / pair["incremental"]["wall_seconds"], 2
            )
            rounds.append(pair)
        results["rounds"] = rounds
        ids_f, vec_f = vectors_by_id(work / "day2-full")
        ids_i, vec_i = vectors_by_id(work / "day2-incremental")
        results["outputs_equal"] = {
            "same_ids": bool(np.array_equal(ids_f, ids_i)),
            "max_abs_vector_difference": float(np.abs(vec_f - vec_i).max())
            if len(ids_f) == len(ids_i)
            else None,
        }
        ray.shutdown()
        results["index"] = index_phase(a.rows, a.changed, a.added, a.deleted, a.index_dim, work)
    results["load_at_end"] = load_snapshot(own_load=2.0)
    warn_if_busy(results["load_at_end"], "end")
    results["busy"] = results["load_at_start"]["busy"] or results["load_at_end"]["busy"]
    ratios = [r["full_over_incremental"] for r in rounds]
    results["full_over_incremental_median"] = float(np.median(ratios))
    results["note"] = (
        "full and incremental runs alternate within each round on the same machine; compare the ratio, "
        "not absolute seconds" + ("; the machine was busy (shared 2-core VM)" if results["busy"] else "")
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"[incremental] wrote {a.out}: full/incremental embed = {ratios}, "
        f"full build/update = {results['index']['full_over_update']}, "
        f"max |diff| = {results['outputs_equal']['max_abs_vector_difference']}"
    )


if __name__ == "__main__":
    main()
