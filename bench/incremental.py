"""Incremental embedding and index updates vs full runs, same corpus, same machine, one script.

    ../shared/bin/loopback-only .venv/bin/python -m bench.incremental [--rows 20000] [--changed 0.01]
        [--artifact artifacts/minilm-fp32] [--rounds 3]

Day one: `--rows` generated FAQ rows (testkit.faq_corpus), embedded in full. Day two: the same rows
with `--changed` of the texts edited (plus optional `--added` / `--deleted` fractions). Day two
is then embedded twice per round, the order rotating each round (bench.runner.run_rounds): a
full run, and an incremental run with --previous day one. The last round's outputs are compared
(same ids, max abs vector difference). Then the index, on synthetic clustered vectors with the
same edits: day one is built into an IVF index, and day two goes in, again alternating for
`--rounds` rounds, once as `build_index --update` from day one's version and once as a full build.

Wall seconds are reported as median, min and max over the rounds; full / incremental and full
build / update are per-round ratios (both runs of a round ran back to back), as median and spread
(bench.runner.ratios); the old keys (`full_over_incremental_median`, `index.full_over_update`)
hold the medians.

Without --artifact a tiny random BERT is exported (needs the export extra), so the model's share
of the work is small and the ratio understates what a real model gains; with a real model the
full run's time grows with the corpus while the incremental run's model time grows with the edits.
Writes bench/results/incremental.json.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from bench.runner import RESULTS, Benchmark, median_spread, ratios, rotations, run_rounds
from index import store as index_store
from index.faiss_index import IndexConfig, choose_factory
from jobs.build_index.build import build
from jobs.build_index.update import update
from jobs.common.embeddings_io import inspect_embeddings, read_embeddings, write_embeddings_parquet
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import run
from testkit.faq_corpus import write_corpus
from testkit.vectors import clustered_vectors

EMBED_RUNS = ("full", "incremental")  # run_rounds order: round 1 runs the full embed first


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
    rows: int, changed: float, added: float, deleted: float, dim: int, work: Path, rounds: int
) -> dict[str, Any]:
    """IVF index: day two as an --update from day one's version vs a full build of day two,
    alternating for `rounds` rounds (order rotating).

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
    base = build(work / "vec-day1", root, factory)

    def run_update(_: int) -> dict[str, Any]:
        # Every round updates from day one's version (an update publishes day two and flips
        # CURRENT; pointing it back is one small write, outside the timed call).
        index_store.set_current(root, base.version)
        t0 = time.perf_counter()
        updated = update(work / "vec-day2", root)
        wall = time.perf_counter() - t0
        return {
            "mode": updated.mode,
            "reason": updated.reason,
            "counts": updated.counts,
            "wall_seconds": round(wall, 3),  # ms matter: a small index updates in tens of them
            "recall_at_10": updated.built.manifest.recall_at_10,
            "search_params": updated.built.manifest.search_params,
            "current_flipped": index_store.current_version(root) == updated.built.version,
        }

    def run_full(_: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        full = build(work / "vec-day2", fresh_root, factory)
        wall = time.perf_counter() - t0
        return {
            "wall_seconds": round(wall, 3),
            "recall_at_10": full.manifest.recall_at_10,
            "search_params": full.manifest.search_params,
        }

    runs = run_rounds({"update": run_update, "full_build": run_full}, rounds, log=_log)
    return {
        "vectors": f"bench.index.clustered_vectors, dim {dim}",
        "factory": factory,
        "day_one_version": {
            "build_seconds": base.manifest.build_seconds,
            "recall_at_10": base.manifest.recall_at_10,
            "search_params": base.manifest.search_params,
        },
        **summarise_index(runs, round_orders(list(runs), rounds)),
    }


def _log(line: str) -> None:
    print(f"[incremental] {line}", flush=True)


def round_orders(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order the runs went in, per round (what bench.runner.run_rounds does with `names`)."""
    return [order for _, order in rotations(list(names), rounds)]


def summarise_embed(runs: dict[str, list[dict[str, Any]]], orders: list[list[str]]) -> dict[str, Any]:
    """Day two's embeds over the rounds: each round's pair (the `rounds` list earlier files hold),
    wall seconds of each kind as median/min/max, and full/incremental per round as median/spread.

    `runs`: run_rounds' result, {"full": [...], "incremental": [...]}, embed() summaries in round order.
    """
    full = [r["wall_seconds"] for r in runs["full"]]
    incremental = [r["wall_seconds"] for r in runs["incremental"]]
    pairs = [
        {
            "order": order,
            "incremental": i,
            "full": f,
            "full_over_incremental": round(f["wall_seconds"] / i["wall_seconds"], 2),
        }
        for order, f, i in zip(orders, runs["full"], runs["incremental"], strict=True)
    ]
    full_over = ratios(full, incremental)
    return {
        "rounds": pairs,
        "full_wall_seconds": median_spread(full, 2),
        "incremental_wall_seconds": median_spread(incremental, 2),
        "full_over_incremental": full_over,
        # docs/benchmarks.md quotes the incremental run as a share of the full one.
        "incremental_over_full": ratios(incremental, full),
        "full_over_incremental_median": full_over["median"],  # the key earlier files and docs read
    }


def summarise_index(runs: dict[str, list[dict[str, Any]]], orders: list[list[str]]) -> dict[str, Any]:
    """The index phase over the rounds: `update` and `full_build` as earlier files hold them (the
    first round's details, `wall_seconds` the median over rounds, min/max in `wall_seconds_spread`),
    `full_over_update` the median per-round ratio (spread beside it) and every round's figures.

    `runs`: run_rounds' result, {"update": [...], "full_build": [...]} in round order.
    """
    upd = [r["wall_seconds"] for r in runs["update"]]
    full = [r["wall_seconds"] for r in runs["full_build"]]
    ratio = ratios(full, upd, digits=2)
    upd_spread, full_spread = median_spread(upd), median_spread(full)
    return {
        "update": {
            **runs["update"][0],
            "wall_seconds": upd_spread["median"],
            "wall_seconds_spread": upd_spread,
        },
        "full_build": {
            **runs["full_build"][0],
            "wall_seconds": full_spread["median"],
            "wall_seconds_spread": full_spread,
        },
        "full_over_update": ratio["median"],
        "full_over_update_spread": ratio,
        "rounds": [
            {
                "order": order,
                "update": u,
                "full_build": f,
                "full_over_update": round(f["wall_seconds"] / u["wall_seconds"], 2),
            }
            for order, u, f in zip(orders, runs["update"], runs["full_build"], strict=True)
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run both days, both ways, in alternating rounds, and write the JSON."""
    bench = Benchmark("incremental", __doc__)
    p = bench.flags(rounds=3, out=RESULTS / "incremental.json")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--changed", type=float, default=0.01, help="fraction of texts edited on day two")
    p.add_argument("--added", type=float, default=0.0, help="fraction of rows added on day two")
    p.add_argument("--deleted", type=float, default=0.0, help="fraction of rows deleted on day two")
    p.add_argument("--artifact", help="default: a tiny random BERT exported here")
    p.add_argument("--index-dim", type=int, default=384, help="dimension of the index phase's vectors")
    a = bench.start(argv)
    results: dict[str, Any] = {
        "rows": a.rows,
        "config": {k: v for k, v in vars(a).items() if k != "out"},
    }
    with tempfile.TemporaryDirectory(prefix="incremental-") as tmp:
        work = Path(tmp)
        artifact = a.artifact or export_tiny_artifact(work)
        results["artifact"] = a.artifact or "tiny random BERT (testkit.tiny_model, dim 32)"
        write_corpus(work / "day1-in", a.rows, files=4, seed=3, row_group_rows=2_000)
        results["edits"] = edit_corpus(work / "day1-in", work / "day2-in", a.changed, a.added, a.deleted, 1)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        results["day_one_full"] = embed(artifact, work / "day1-in", work / "day1", None)

        def day_two(kind: str) -> Callable[[int], dict[str, Any]]:
            def one(r: int) -> dict[str, Any]:
                out = work / f"day2-{kind}"
                shutil.rmtree(out, ignore_errors=True)  # each round writes afresh; the last is compared
                previous = work / "day1" if kind == "incremental" else None
                summary = embed(artifact, work / "day2-in", out, previous)
                _log(f"round {r + 1} {kind}: {json.dumps(summary)}")
                return summary

            return one

        runs = run_rounds({kind: day_two(kind) for kind in EMBED_RUNS}, a.rounds, log=_log)
        results.update(summarise_embed(runs, round_orders(list(runs), a.rounds)))
        ids_f, vec_f = vectors_by_id(work / "day2-full")
        ids_i, vec_i = vectors_by_id(work / "day2-incremental")
        results["outputs_equal"] = {
            "same_ids": bool(np.array_equal(ids_f, ids_i)),
            "max_abs_vector_difference": float(np.abs(vec_f - vec_i).max())
            if len(ids_f) == len(ids_i)
            else None,
        }
        ray.shutdown()
        results["index"] = index_phase(a.rows, a.changed, a.added, a.deleted, a.index_dim, work, a.rounds)
    # The index phase's FAISS threads kept both cores busy to the end: that load is the run's own.
    bench.finish(own_load=2.0)
    results["note"] = (
        "full and incremental runs alternate within each round (order rotating) on the same machine; "
        "*_over_* are per-round ratios, median with min/max; compare the ratio, not absolute seconds"
        + ("; the machine was busy (shared 2-core VM)" if bench.busy() else "")
    )
    bench.report(results, a.out)  # `busy`: docs/benchmarks.md cites it
    _log(
        f"full/incremental embed = {results['full_over_incremental']}, "
        f"full build/update = {results['index']['full_over_update_spread']}, "
        f"max |diff| = {results['outputs_equal']['max_abs_vector_difference']}"
    )


if __name__ == "__main__":
    main()
