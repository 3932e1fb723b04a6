"""The threshold job's library: labelled pairs read and scored, the report, the stored threshold.

Pairs are scored by their texts (the artifact's Encoder) or by their ids (stored vectors of an
embeddings run); the report is precision and recall over thresholds and the lowest threshold
reaching the target, which `run` can store as an index version's default min_score
(index/thresholds.py). The command line is jobs/threshold/cli.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import storage
from embedder.encoder import Encoder, cosine_rows
from embedder.errors import InvalidInput
from embedder.progress import QUIET, Progress
from index import store as index_store
from index.errors import IndexInvalid
from index.thresholds import Point, lowest_threshold, precision_recall, table, write_thresholds
from jobs.common.embeddings_filter import parse_filter_setting, row_mask
from jobs.common.embeddings_io import inspect_embeddings, read_embeddings
from settings.loader import check_field


@dataclass(frozen=True)
class Scored:
    """Labelled pairs with their cosine scores, and the model that produced them."""

    scores: np.ndarray
    labels: np.ndarray
    fingerprint: str
    source: str


def read_pairs(spec: str) -> pa.Table:
    """A labelled-pairs table from parquet, or CSV when the name ends in .csv."""
    loc = storage.resolve(spec)
    if not storage.is_file(loc):
        raise InvalidInput(f"labelled pairs {loc} not found", field="pairs")
    if loc.name.lower().endswith(".csv"):
        try:
            return pacsv.read_csv(io.BytesIO(storage.read_bytes(loc)))
        except pa.ArrowInvalid as exc:
            raise InvalidInput(
                f"{loc} is not readable CSV: {str(exc).splitlines()[0]}", field="pairs"
            ) from None
    return storage.read_parquet(loc)


def labels_of(pairs: pa.Table) -> np.ndarray:
    """The label column as bools; InvalidInput for nulls or values other than 0/1."""
    if "label" not in pairs.column_names:
        raise InvalidInput(
            f"the pairs need a 'label' column (1 match, 0 not); they have {pairs.column_names}"
        )
    col = pairs.column("label")
    if col.null_count:
        raise InvalidInput(f"{col.null_count} pair(s) without a label", field="label")
    if not (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
        raise InvalidInput(f"label must be 1/0 (integers or booleans), is {col.type}", field="label")
    values = col.to_numpy(zero_copy_only=False)
    if col.type != pa.bool_() and not np.isin(values, (0, 1)).all():
        raise InvalidInput("label must be 1 (a match) or 0 (not a match)", field="label")
    return values.astype(bool)


def texts_of(pairs: pa.Table, name: str) -> list[str]:
    """One text column; InvalidInput naming the first row with no usable text."""
    values = pairs.column(name).to_pylist()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise InvalidInput(f"row {i}: {name} is empty or not text", field=name)
    return values


def score_texts(pairs: pa.Table, artifact: str, threads: int) -> Scored:
    """Cosine of the two texts' vectors from the artifact's Encoder."""
    encoder = Encoder.load(artifact, threads=threads)
    a = encoder.encode(texts_of(pairs, "text_a"))
    b = encoder.encode(texts_of(pairs, "text_b"))
    return Scored(cosine_rows(a, b).astype(np.float32), labels_of(pairs), encoder.fingerprint, "texts")


def pairs_within(pairs: pa.Table, embeddings: str, spec: dict[str, Any]) -> pa.Table:
    """The pairs whose two ids are both rows the filter selects (the threshold of one category)."""
    info = inspect_embeddings(embeddings)
    mask = row_mask(info, spec)
    ids = pa.chunked_array(
        [b.table.column("id").combine_chunks() for b in read_embeddings(info, columns=["id"], vectors=False)]
    )
    chosen = pc.filter(ids, pa.array(mask))
    target = ids.type
    try:
        both = pc.and_(
            pc.is_in(pairs.column("id_a").cast(target), value_set=chosen.combine_chunks()),
            pc.is_in(pairs.column("id_b").cast(target), value_set=chosen.combine_chunks()),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"id_a / id_b do not convert to the embeddings' id type {target}: {exc}") from None
    kept = pairs.filter(both)
    if kept.num_rows == 0:
        raise InvalidInput(f"no labelled pair has both rows inside the filter {spec}", field="filter")
    return kept


def score_ids(pairs: pa.Table, embeddings: str) -> Scored:
    """Cosine of the two ids' stored vectors (one streaming pass over the embeddings)."""
    info = inspect_embeddings(embeddings)
    target = pa.int64() if info.id_type == "int64" else pa.string()
    try:
        id_a = pairs.column("id_a").cast(target).combine_chunks()
        id_b = pairs.column("id_b").cast(target).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"id_a / id_b do not convert to the embeddings' id type {target}: {exc}") from None
    wanted = pc.unique(pa.concat_arrays([id_a, id_b]).drop_null())
    vectors = np.zeros((len(wanted), info.dimension), dtype=np.float32)
    seen = np.zeros(len(wanted), dtype=bool)
    for batch in read_embeddings(info, columns=["id"]):
        assert batch.vectors is not None
        at = pc.index_in(batch.table.column("id"), value_set=wanted)
        rows = np.flatnonzero(pc.is_valid(at).to_numpy(zero_copy_only=False))
        where = pc.drop_null(at).to_numpy().astype(np.int64)
        vectors[where] = batch.vectors[rows]
        seen[where] = True
    pa_pos = pc.index_in(id_a, value_set=wanted)
    pb_pos = pc.index_in(id_b, value_set=wanted)
    missing = [wanted[i].as_py() for i in np.flatnonzero(~seen)[:5]]
    if pa_pos.null_count or pb_pos.null_count or missing:
        raise InvalidInput(
            f"ids not in the embeddings (or null), e.g. {missing or 'null ids'}: every pair needs both vectors",
            field="id_a",
        )
    a = vectors[pa_pos.to_numpy(zero_copy_only=False)]
    b = vectors[pb_pos.to_numpy(zero_copy_only=False)]
    return Scored(cosine_rows(a, b).astype(np.float32), labels_of(pairs), info.fingerprint, "ids")


def grid(step: float) -> list[float]:
    """Table thresholds: step, 2*step, ... up to 1.0 (rounded to avoid 0.30000000000000004)."""
    return [round(t, 6) for t in np.arange(step, 1.0 + step / 2, step).tolist()]


def report(scored: Scored, target: float, step: float) -> dict[str, Any]:
    """Everything printed and written: the table, the chosen threshold, the counts."""
    chosen = lowest_threshold(scored.scores, scored.labels, target)
    thresholds = grid(step) + ([chosen.threshold] if chosen is not None else [])
    curve = precision_recall(scored.scores, scored.labels)
    return {
        "pairs": len(scored.scores),
        "positives": int(scored.labels.sum()),
        "fingerprint": scored.fingerprint,
        "scored_from": scored.source,
        "target_precision": target,
        "chosen": chosen.as_dict() if chosen is not None else None,
        "best_precision": max((p.precision or 0.0) for p in curve),
        "table": [p.as_dict() for p in table(scored.scores, scored.labels, thresholds)],
    }


def format_table(rep: dict[str, Any]) -> str:
    """The report as text."""
    lines = [
        f"{'threshold':>10} {'precision':>9} {'recall':>7} {'predicted':>9} {'tp':>6} {'fp':>6} {'fn':>6}"
    ]
    for p in rep["table"]:
        precision = "-" if p["precision"] is None else f"{p['precision']:.4f}"
        lines.append(
            f"{p['threshold']:>10.4f} {precision:>9} {p['recall']:>7.4f} {p['predicted']:>9} "
            f"{p['true_positives']:>6} {p['false_positives']:>6} {p['false_negatives']:>6}"
        )
    chosen = rep["chosen"]
    if chosen is None:
        lines.append(
            f"no threshold reaches precision {rep['target_precision']} "
            f"(best {rep['best_precision']:.4f}) over {rep['pairs']} pairs"
        )
    else:
        lines.append(
            f"lowest threshold with precision >= {rep['target_precision']}: {chosen['threshold']:.6f} "
            f"(precision {chosen['precision']:.4f}, recall {chosen['recall']:.4f}, {rep['pairs']} pairs)"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ThresholdConfig:
    """Every setting of one run: from flags, else QM_THRESHOLD_<FIELD>, else these defaults."""

    pairs: str  # labelled pairs: parquet, or CSV (a name ending in .csv)
    artifact: str | None = None  # score text_a / text_b with this model artifact
    embeddings: str | None = None  # score id_a / id_b from this embeddings directory
    target_precision: float = 0.95
    step: float = 0.05  # the table's thresholds: step, 2 x step, ... 1.0
    index: str | None = None  # store the threshold as this index version's default min_score
    index_version: str | None = None  # None: CURRENT
    output: str | None = None  # the report as JSON (path or URI)
    threads: int = 0  # encoder threads (0: one per core)
    progress: bool = True
    # With --embeddings: only pairs whose two rows this /match filter selects; from the command
    # line or QM_THRESHOLD_FILTER as JSON text.
    filter: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        parse_filter_setting(self)
        check_field(self, "target_precision", 0.0 < self.target_precision <= 1.0, "must be in (0, 1]")
        check_field(self, "step", 0.0 < self.step <= 1.0, "must be in (0, 1]")
        check_field(self, "threads", self.threads >= 0, "must be >= 0 (0: one per core)")


def score(cfg: ThresholdConfig, progress: Progress = QUIET) -> Scored:
    """Scores by texts (with --artifact) or by ids (with --embeddings), whichever the file has."""
    pairs = read_pairs(cfg.pairs)
    names = set(pairs.column_names)
    if {"text_a", "text_b"} <= names and cfg.artifact:
        # The one long step (the model embeds both sides of every pair); inputs are checked by now.
        with progress.step(f"embedding both texts of {len(pairs)} pairs"):
            return score_texts(pairs, cfg.artifact, cfg.threads)
    if {"id_a", "id_b"} <= names and cfg.embeddings:
        if cfg.filter is not None:
            pairs = pairs_within(pairs, cfg.embeddings, cfg.filter)
        return score_ids(pairs, cfg.embeddings)
    if cfg.filter is not None:
        raise InvalidInput("--filter needs --embeddings and pairs by id (id_a, id_b)", field="filter")
    raise InvalidInput(
        f"need text_a, text_b, label with --artifact, or id_a, id_b, label with --embeddings; "
        f"the pairs have {sorted(names)}"
    )


def run(cfg: ThresholdConfig) -> dict[str, Any]:
    """Score the pairs, choose the threshold, store it with --index, write --output; the report."""
    version = None
    if cfg.index:  # checked before scoring: a missing index should not cost a model run
        version = cfg.index_version or index_store.current_version(cfg.index)
        if version is None:
            raise IndexInvalid(f"{cfg.index}: no CURRENT index version (pass --index-version)")
        index_store.verify_version(storage.resolve(cfg.index).child(version))
    scored = score(cfg, Progress("threshold", enabled=cfg.progress))
    rep = report(scored, cfg.target_precision, cfg.step)
    if cfg.filter is not None:
        rep["filter"] = cfg.filter  # the pairs it scored are the filter's
    chosen = rep["chosen"]
    if chosen is not None and cfg.index and version is not None:
        rep["stored"] = write_thresholds(
            cfg.index,
            version,
            Point(**chosen),
            cfg.target_precision,
            scored.fingerprint,
            storage.resolve(cfg.pairs).uri,
            rep["pairs"],
        )
    if cfg.output:
        storage.write_json(cfg.output, rep)
    return rep
