"""Versioned index directories: indexes/<name>/<version>/{index.faiss, metadata.parquet, manifest.json}.

A version is written under a hidden temp directory, verified, then renamed into place; only then
does `CURRENT` change (temp file + os.replace), so a reader never sees a half-written version and
a failed build leaves the live index untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from embedder.errors import IndexInvalid
from embedder.index import VectorIndex

INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.parquet"
MANIFEST_FILE = "manifest.json"
CURRENT = "CURRENT"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class IndexManifest:
    """manifest.json of one index version."""

    factory: str
    metric: str
    count: int
    dimension: int
    fingerprint: str
    recall_at_10: float
    bytes_per_vector: float
    build_seconds: float
    search_params: dict[str, int] = field(default_factory=dict)
    id_type: str = "int64"
    columns: tuple[str, ...] = ()
    source_summary: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    shards: int = 1
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Serialised manifest."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        """Parse a manifest, ignoring fields a newer writer added."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["columns"] = tuple(data.get("columns", ()))
        return cls(**data)


@dataclass
class LoadedIndex:
    """One opened index version: FAISS index, manifest, metadata table (row i = FAISS id i)."""

    version: str
    path: Path
    index: VectorIndex
    manifest: IndexManifest
    metadata: pa.Table


def new_version_name() -> str:
    """A sortable, unique version name: UTC time to the microsecond, then a random suffix.

    Microseconds matter: list_versions sorts by name and rollback goes to the previous one, so two
    builds within the same second must still sort in build order.
    """
    now = time.time_ns() // 1000
    stamp = time.strftime("v%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000)) + f"{now % 1_000_000:06d}"
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def staging_dir(root: str | os.PathLike[str], version: str) -> Path:
    """Hidden directory where a version is assembled before it is published."""
    path = Path(root) / f".staging-{version}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def list_versions(root: str | os.PathLike[str]) -> list[str]:
    """Published versions, oldest first (hidden staging directories are not versions)."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def current_version(root: str | os.PathLike[str]) -> str | None:
    """The live version named by CURRENT, or None if nothing was published yet."""
    path = Path(root) / CURRENT
    if not path.exists():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def verify_version(path: Path) -> IndexManifest:
    """Check a version directory is complete and self-consistent; returns its manifest."""
    missing = [f for f in (INDEX_FILE, METADATA_FILE, MANIFEST_FILE) if not (path / f).is_file()]
    if missing:
        raise IndexInvalid(f"index version {path} is incomplete: missing {missing}")
    try:
        manifest = IndexManifest.from_json((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise IndexInvalid(f"{path / MANIFEST_FILE} is unreadable: {exc}") from exc
    try:
        rows = pq.read_metadata(path / METADATA_FILE).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise IndexInvalid(f"{path / METADATA_FILE} is unreadable: {exc}") from exc
    if rows != manifest.count:
        raise IndexInvalid(f"{path}: metadata has {rows} rows, manifest says {manifest.count}")
    return manifest


def publish(root: str | os.PathLike[str], staged: Path, version: str, make_current: bool = True) -> Path:
    """Verify a staged version, rename it into place, then (optionally) point CURRENT at it."""
    manifest = verify_version(staged)
    loaded = _open(staged, version, manifest)  # the index file must load and agree with the manifest
    del loaded
    final = Path(root) / version
    os.replace(staged, final)
    _fsync_dir(Path(root))
    if make_current:
        set_current(root, version)
    return final


def set_current(root: str | os.PathLike[str], version: str) -> None:
    """Atomically point CURRENT at a complete version."""
    base = Path(root)
    verify_version(base / version)
    tmp = base / f".{CURRENT}.{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, base / CURRENT)
    _fsync_dir(base)


def rollback(root: str | os.PathLike[str]) -> str:
    """Point CURRENT at the newest complete version older than the live one; returns it."""
    live = current_version(root)
    if live is None:
        raise IndexInvalid(f"{root}: no CURRENT version to roll back from")
    for candidate in reversed([v for v in list_versions(root) if v < live]):
        try:
            verify_version(Path(root) / candidate)
        except IndexInvalid:
            continue  # skip a damaged old version rather than going live on it
        set_current(root, candidate)
        return candidate
    raise IndexInvalid(f"{root}: no complete version older than {live} to roll back to")


def discard(staged: Path) -> None:
    """Remove a staging directory after a failed build."""
    shutil.rmtree(staged, ignore_errors=True)


def open_version(root: str | os.PathLike[str], version: str) -> LoadedIndex:
    """Load one version (index, manifest, metadata), refusing missing or incomplete ones."""
    path = Path(root) / version
    if not path.is_dir():
        raise IndexInvalid(f"index version {path} does not exist")
    return _open(path, version, verify_version(path))


def open_current(root: str | os.PathLike[str]) -> LoadedIndex:
    """Load the version CURRENT points at."""
    version = current_version(root)
    if version is None:
        raise IndexInvalid(f"{root}: no CURRENT index version")
    return open_version(root, version)


def _open(path: Path, version: str, manifest: IndexManifest) -> LoadedIndex:
    index = VectorIndex.load(path / INDEX_FILE, manifest.factory, manifest.metric, manifest.search_params)
    if index.size != manifest.count or index.dimension != manifest.dimension:
        raise IndexInvalid(
            f"{path}: index holds {index.size} x {index.dimension}, "
            f"manifest says {manifest.count} x {manifest.dimension}"
        )
    metadata = pq.read_table(path / METADATA_FILE)
    return LoadedIndex(version=version, path=path, index=index, manifest=manifest, metadata=metadata)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is flushed.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
