"""Resumable run state beside the output: what the run is, which shards are finished, who runs it.

Files (local directory or object-store prefix, all through storage):

- `_RUN.json`: the artifact fingerprint, the inputs (path/URI, size, mtime, rows), the column roles,
  the prompt and the shard plan. A rerun must match it to resume.
- `_done/<shard_id>.json`: one small marker per finished shard, written by the driver after the
  shard's part files are in place. It is the commit record. One object per shard, not an appended
  journal, because object stores cannot append; each marker is one all-or-nothing write.
- `_LEASE.json`: the run id, host and pid of the driver working on this output, with a heartbeat.
  A second run on the same output is refused while the lease is fresh, so two drivers never
  interleave their work. A lease whose heartbeat is older than its ttl (a killed driver) is taken
  over; on the same host, a lease whose pid is gone is taken over at once.

A rerun with the same command skips the shards with markers; a shard that was running when the
driver died is simply done again and rewrites the same object names.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import storage
from embedder.errors import EmbedderError
from jobs.common.corpus import Shard, shard_from_dict
from jobs.common.layout import DONE_DIR, LEASE_FILE, RUN_FILE, SUMMARY_FILE
from jobs.common.records import from_record

# Fields of _RUN.json that must match for a rerun to resume rather than refuse.
# "previous" (the --previous output an incremental run reuses vectors from) is absent/None in full runs.
IDENTITY_FIELDS = (
    "fingerprint",
    "inputs",
    "text_column",
    "id_column",
    "keep_columns",
    "too_long",
    "previous",
    "prompt",
)
# What an identity field means when a _RUN.json written before it existed lacks it.
IDENTITY_DEFAULTS: dict[str, Any] = {"prompt": ""}  # no prompt
# How long a lease outlives its last heartbeat (sent every ttl/4). Set per run with JobConfig's
# lease_ttl_seconds (QM_JOB_LEASE_TTL_SECONDS); this is its default.
LEASE_TTL_SECONDS = 60.0


class RunConflict(EmbedderError):
    """The output holds something other than an earlier attempt of this same run, or a live run."""


@dataclass(frozen=True)
class ShardStats:
    """What one shard produced (the content of its _done/ marker)."""

    shard_id: str
    rows_read: int
    rows_embedded: int
    rows_quarantined: int
    rows_truncated: int
    tokens: int
    seconds: float = 0.0
    tokenize_seconds: float = 0.0
    encode_seconds: float = 0.0
    # Incremental runs: embedded rows whose vector was copied from the previous run, and the time
    # spent looking them up and reading them (markers written before these existed read as 0).
    rows_reused: int = 0
    reuse_seconds: float = 0.0
    # What embedded the shard: "backend/precision/device" plus the CPU's matrix units, e.g.
    # "openvino/bf16/cpu amx_bf16,amx_int8" (markers written before this existed read as "").
    runtime: str = ""


def done_marker(output: storage.Location, shard_id: str) -> storage.Location:
    """Where a shard's commit marker lives."""
    return output.child(DONE_DIR, f"{shard_id}.json")


class RunState:
    """The run description plus the finished-shard markers of one output."""

    def __init__(self, output: storage.Location, run: dict[str, Any], done: dict[str, ShardStats]) -> None:
        self.output = output
        self.run = run
        self.done = done

    @property
    def shards(self) -> list[Shard]:
        """The shard plan fixed when the run first started (duplicates are re-attached by the caller)."""
        return [shard_from_dict(s) for s in self.run["shards"]]

    @property
    def pending(self) -> list[Shard]:
        """Shards not yet committed."""
        return [s for s in self.shards if s.shard_id not in self.done]

    @property
    def summary_path(self) -> storage.Location:
        """Where _SUMMARY.json goes."""
        return self.output.child(SUMMARY_FILE)

    @property
    def complete(self) -> bool:
        """Every shard is done and the summary was written."""
        return not self.pending and storage.is_file(self.summary_path)

    @classmethod
    def open(cls, output: storage.Location, run: dict[str, Any]) -> RunState:
        """Start a new run in an empty/new output or resume a matching one; raise RunConflict otherwise."""
        run_file = output.child(RUN_FILE)
        if storage.is_file(run_file):
            stored = storage.read_json(run_file)
            check_same_run(output, stored, run)
            return cls(output, stored, read_markers(output))
        if any(f.base_name != LEASE_FILE for f in storage.list_files(output)):
            raise RunConflict(
                f"output {output} is not empty and holds no {RUN_FILE}: it is not a run of this "
                "job. Choose a new --output (or empty this one)."
            )
        storage.write_json(run_file, run)
        return cls(output, run, {})

    def record(self, stats: ShardStats) -> None:
        """Commit a finished shard: one marker object (all-or-nothing; the driver may die right after)."""
        if stats.shard_id in self.done:
            return  # a retried task reported twice; the files were rewritten in place, nothing to add
        storage.write_json(done_marker(self.output, stats.shard_id), asdict(stats))
        self.done[stats.shard_id] = stats


def check_same_run(output: storage.Location, stored: dict[str, Any], run: dict[str, Any]) -> None:
    """Refuse to mix runs: another artifact, other inputs or other column roles."""
    if stored.get("fingerprint") != run["fingerprint"]:
        raise RunConflict(
            f"output {output} holds a run made with artifact {stored.get('artifact')} "
            f"(fingerprint {stored.get('fingerprint')}); this run uses {run['artifact']} "
            f"(fingerprint {run['fingerprint']}). Embeddings of two models cannot share an output: "
            "choose a new --output."
        )
    differing = [
        f
        for f in IDENTITY_FIELDS
        if stored.get(f, IDENTITY_DEFAULTS.get(f)) != run.get(f, IDENTITY_DEFAULTS.get(f))
    ]
    if differing:
        raise RunConflict(
            f"output {output} holds a run with different {', '.join(differing)}; "
            "rerun the original command to resume it, or choose a new --output."
        )


def read_markers(output: storage.Location) -> dict[str, ShardStats]:
    """Finished shards from their markers; an unreadable marker is ignored, so that shard reruns."""
    done: dict[str, ShardStats] = {}
    for f in storage.list_files(output.child(DONE_DIR), recursive=False):
        if not f.base_name.endswith(".json"):
            continue  # a local temp file left by a killed driver
        try:
            stats = from_record(ShardStats, storage.read_json(storage.located(output, f.path)))
        except (storage.StorageError, TypeError):
            continue
        done[stats.shard_id] = stats
    return done


class Lease:
    """Exclusive use of one output by one driver, kept alive by a heartbeat thread.

    Object stores offer no lock, so this is a lease with last-writer-wins semantics: after writing
    its lease a driver reads it back, and before committing each shard it checks the lease is still
    its own (`check`). Two drivers started within the same instant could both pass the read-back;
    the later writer then wins the lease and the other one stops at its next commit, so work is
    never committed twice (and a shard written twice has identical content at the same name).
    """

    def __init__(self, output: storage.Location, ttl: float = LEASE_TTL_SECONDS) -> None:
        self.output = output
        self.path = output.child(LEASE_FILE)
        self.ttl = ttl
        self.run_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "ttl_seconds": self.ttl,
        }

    def acquire(self) -> None:
        """Take the lease or raise RunConflict naming the run that holds it."""
        if storage.is_file(self.path):
            held = _read_lease(self.path)
            if held is not None and held.get("run_id") != self.run_id and _alive(held):
                age = time.time() - float(held.get("heartbeat", 0))
                raise RunConflict(
                    f"output {self.output} is being written by another run (run id {held.get('run_id')}, "
                    f"host {held.get('host')}, pid {held.get('pid')}, heartbeat {age:.0f} s ago). Wait for "
                    f"it to finish, or for its lease to expire ({self.ttl:.0f} s after its last heartbeat)."
                )
        storage.write_json(self.path, self._record())
        self.check()
        self._thread = threading.Thread(target=self._beat, name="output-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise RunConflict when another run has taken the lease over."""
        held = _read_lease(self.path)
        if held is None or held.get("run_id") != self.run_id:
            other = held.get("run_id") if held else None
            self.lost = f"output {self.output}: lease taken over by run {other}; this run stops"
        if self.lost:
            raise RunConflict(self.lost)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.check()
                storage.write_json(self.path, self._record())
            except EmbedderError as exc:  # lost, or storage trouble: the next check() reports it
                self.lost = self.lost or f"output {self.output}: lease heartbeat failed: {exc}"

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours (nothing if never acquired)."""
        if self._thread is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = _read_lease(self.path)
        if held is not None and held.get("run_id") == self.run_id:
            storage.delete_file(self.path)


def live_lease(output: storage.Location) -> dict[str, Any] | None:
    """The lease record of a run still working on `output`, or None (no lease, or an expired one)."""
    path = output.child(LEASE_FILE)
    if not storage.is_file(path):
        return None
    held = _read_lease(path)
    return held if held is not None and _alive(held) else None


def _read_lease(path: storage.Location) -> dict[str, Any] | None:
    try:
        data = storage.read_json(path)
    except storage.StorageError:
        return None
    return data if isinstance(data, dict) else None


def _alive(lease: dict[str, Any]) -> bool:
    """A lease is live while its heartbeat is recent; on this host, only while its process exists."""
    if time.time() - float(lease.get("heartbeat", 0)) > float(lease.get("ttl_seconds", LEASE_TTL_SECONDS)):
        return False
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease.get("pid", -1)), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
    return True
