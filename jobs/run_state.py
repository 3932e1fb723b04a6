"""Resumable run state beside the output: what the run is, and which shards are finished.

`_RUN.json` names the artifact fingerprint, the inputs (path, size, mtime, rows), the column
roles and the shard plan. `_DONE.jsonl` gets one line per finished shard, appended and fsynced
by the driver after the shard's files were renamed into place; it is the commit record. A rerun
with the same command skips the shards listed there; a shard that was running when the driver
died is simply done again and rewrites the same file names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedder.corpus import Shard, shard_from_dict
from embedder.errors import EmbedderError

RUN_FILE = "_RUN.json"
DONE_FILE = "_DONE.jsonl"
SUMMARY_FILE = "_SUMMARY.json"
# Fields of _RUN.json that must match for a rerun to resume rather than refuse.
IDENTITY_FIELDS = ("fingerprint", "inputs", "text_column", "id_column", "keep_columns", "too_long")


class RunConflict(EmbedderError):
    """The output directory holds something other than an earlier attempt of this same run."""


@dataclass(frozen=True)
class ShardStats:
    """What one shard produced (a line of _DONE.jsonl)."""

    shard_id: str
    rows_read: int
    rows_embedded: int
    rows_quarantined: int
    rows_truncated: int
    tokens: int
    seconds: float = 0.0
    tokenize_seconds: float = 0.0
    encode_seconds: float = 0.0


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and rename, so a killed process never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class RunState:
    """The run description plus the journal of finished shards for one output directory."""

    def __init__(self, output: Path, run: dict[str, Any], done: dict[str, ShardStats]) -> None:
        self.output = output
        self.run = run
        self.done = done

    @property
    def shards(self) -> list[Shard]:
        """The shard plan fixed when the run first started (duplicates are re-attached by the caller)."""
        return [shard_from_dict(s) for s in self.run["shards"]]

    @property
    def pending(self) -> list[Shard]:
        """Shards not yet committed to the journal."""
        return [s for s in self.shards if s.shard_id not in self.done]

    @property
    def summary_path(self) -> Path:
        """Where _SUMMARY.json goes."""
        return self.output / SUMMARY_FILE

    @property
    def complete(self) -> bool:
        """Every shard is done and the summary was written."""
        return not self.pending and self.summary_path.is_file()

    @classmethod
    def open(cls, output: Path, run: dict[str, Any]) -> RunState:
        """Start a new run in an empty/new directory or resume a matching one; raise RunConflict otherwise."""
        run_file = output / RUN_FILE
        if run_file.is_file():
            stored = json.loads(run_file.read_text(encoding="utf-8"))
            check_same_run(output, stored, run)
            journal = output / DONE_FILE
            if journal.is_file() and not journal.read_bytes().endswith(b"\n") and journal.stat().st_size:
                with open(
                    journal, "a", encoding="utf-8"
                ) as fh:  # close a torn line so appends stay parseable
                    fh.write("\n")
            return cls(output, stored, read_journal(journal))
        if output.exists() and any(output.iterdir()):
            raise RunConflict(
                f"output directory {output} is not empty and holds no {RUN_FILE}: it is not a run of this "
                "job. Choose a new --output (or empty this one)."
            )
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, run)
        return cls(output, run, {})

    def record(self, stats: ShardStats) -> None:
        """Append a finished shard to the journal (fsynced: the driver may be killed right after)."""
        if stats.shard_id in self.done:
            return  # a retried task reported twice; the files were rewritten in place, nothing to add
        with open(self.output / DONE_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(stats), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[stats.shard_id] = stats


def check_same_run(output: Path, stored: dict[str, Any], run: dict[str, Any]) -> None:
    """Refuse to mix runs: another artifact, other inputs or other column roles."""
    if stored.get("fingerprint") != run["fingerprint"]:
        raise RunConflict(
            f"output directory {output} holds a run made with artifact {stored.get('artifact')} "
            f"(fingerprint {stored.get('fingerprint')}); this run uses {run['artifact']} "
            f"(fingerprint {run['fingerprint']}). Embeddings of two models cannot share an output: "
            "choose a new --output."
        )
    differing = [f for f in IDENTITY_FIELDS if stored.get(f) != run.get(f)]
    if differing:
        raise RunConflict(
            f"output directory {output} holds a run with different {', '.join(differing)}; "
            "rerun the original command to resume it, or choose a new --output."
        )


def read_journal(path: Path) -> dict[str, ShardStats]:
    """Finished shards; a torn last line (driver killed mid-append) is ignored, so that shard reruns."""
    done: dict[str, ShardStats] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            stats = ShardStats(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        done[stats.shard_id] = stats
    return done
