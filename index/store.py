"""Versioned index directories: <root>/<version>/{index.faiss, metadata.parquet, manifest.json}.

The root is a local path or a URI (s3://, gs://, ...); all file access goes through storage.
A version is assembled and verified in a local staging directory first. Publishing it:

- local disk: the staging directory (a hidden sibling) is renamed into place in one step;
- object store (no rename): the files are uploaded with manifest.json LAST; a version without its
  manifest is not a version (`list_versions` and `open_version` ignore / refuse it), so readers
  never see half of one.

Only then does `CURRENT` change: one small file replaced atomically (local: temp + os.replace;
object store: a single PUT). The manifest records every file's size and sha256, so a node-local
cached copy of a remote version (storage.cache) that is truncated or corrupt is detected and
fetched again. A failed build leaves the live index untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import storage
from index.errors import IndexInvalid
from index.faiss_index import VectorIndex
from index.filter_columns import EMPTY, FILTERS_FILE, FilterTable, load_filters
from index.lexical import LEXICAL_FILE, LexicalIndex
from index.prompt import DocumentPrompt
from storage.cache import fetch_dir, file_digest, root_key

INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.parquet"
MANIFEST_FILE = "manifest.json"
CURRENT = "CURRENT"
FORMAT_VERSION = 1
# Hidden metadata.parquet column: a 16-byte hash of each row's vector, so `build_index --update`
# can tell unchanged rows from changed ones without the vectors. Never returned by searches.
VECTOR_HASH = "qm_vector_hash"


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
    # name -> {"size": bytes, "sha256": hex}, filled in by publish(); {} in versions built before it.
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How `build_index --update` made this version: {"mode": "update" | "rebuild" | "retrain",
    # "reason", "from_version", row counts}; None for a plain build.
    update: dict[str, Any] | None = None
    # Filter columns stored in filters.parquet (index/filter_columns.py): name -> {"type":
    # "string" | "int" | "timestamp", "dtype", "values" (distinct strings), "unit"}; {} = none.
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The prompt the indexed vectors were embedded with (jobs.embed_corpus --prompt-name, from the
    # embeddings' metadata); None / "" = no prompt, also for versions built before prompts existed.
    document_prompt_name: str | None = None
    document_prompt: str = ""
    # The lexical (BM25) index in lexical.npz (index/lexical.py): {"column", "tokenizer", "k1", "b",
    # "terms", "build_seconds"}; None = none (built with --no-lexical, or before lexical indexes).
    lexical: dict[str, Any] | None = None

    @property
    def prompt(self) -> DocumentPrompt:
        """The document prompt of this version's vectors."""
        return DocumentPrompt(self.document_prompt_name, self.document_prompt)

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
    path: Path  # local directory (a node-local cached copy for remote roots)
    index: VectorIndex
    manifest: IndexManifest
    metadata: pa.Table
    filters: FilterTable = EMPTY
    lexical: LexicalIndex | None = None  # None: the version has no lexical index (dense only)


def new_version_name() -> str:
    """A sortable, unique version name: UTC time to the microsecond, then a random suffix.

    Microseconds matter: list_versions sorts by name and rollback goes to the previous one, so two
    builds within the same second must still sort in build order.
    """
    now = time.time_ns() // 1000
    stamp = time.strftime("v%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000)) + f"{now % 1_000_000:06d}"
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def staging_dir(root: str | os.PathLike[str] | storage.Location, version: str) -> Path:
    """Local directory where a version is assembled before it is published.

    Beside the versions for a local root (so publishing is one rename); a local temp directory
    for a remote root.
    """
    loc = storage.resolve(root)
    if not loc.is_local:
        return Path(tempfile.mkdtemp(prefix=f"qm-staging-{version}-"))
    path = Path(loc.path) / f".staging-{version}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def list_versions(root: str | os.PathLike[str] | storage.Location) -> list[str]:
    """Published versions, oldest first (staging directories and manifest-less uploads are not versions)."""
    loc = storage.resolve(root)
    names = [n for n in storage.list_dirs(loc) if not n.startswith(".")]
    if loc.is_local:
        return names
    return [n for n in names if storage.is_file(loc.child(n, MANIFEST_FILE))]


def current_version(root: str | os.PathLike[str] | storage.Location) -> str | None:
    """The live version named by CURRENT, or None if nothing was published yet."""
    loc = storage.resolve(root).child(CURRENT)
    if not storage.is_file(loc):
        return None
    return storage.read_text(loc).strip() or None


def verify_version(path: str | os.PathLike[str] | storage.Location, digests: bool = False) -> IndexManifest:
    """Check a version directory is complete and self-consistent; returns its manifest.

    Sizes recorded in the manifest are always checked; `digests` also hashes every file (done on
    downloaded copies, where truncation or corruption is possible).
    """
    loc = storage.resolve(path)
    listed = {f.base_name: f for f in storage.list_files(loc, recursive=False)}
    missing = [f for f in (INDEX_FILE, METADATA_FILE, MANIFEST_FILE) if f not in listed]
    if missing:
        raise IndexInvalid(f"index version {loc} is incomplete: missing {missing}")
    try:
        manifest = IndexManifest.from_json(storage.read_text(loc.child(MANIFEST_FILE)))
    except (ValueError, TypeError) as exc:
        raise IndexInvalid(f"{loc.child(MANIFEST_FILE)} is unreadable: {exc}") from exc
    if manifest.filters and FILTERS_FILE not in listed:
        raise IndexInvalid(f"index version {loc} is incomplete: missing {[FILTERS_FILE]}")
    # A version whose manifest names a lexical index but lacks it is refused like any incomplete
    # one (the follower keeps the old version): serving it dense-only would silently change what
    # `mode: hybrid` answers.
    if manifest.lexical and LEXICAL_FILE not in listed:
        raise IndexInvalid(f"index version {loc} is incomplete: missing {[LEXICAL_FILE]}")
    for name, expected in manifest.files.items():
        got = listed.get(name)
        if got is None or got.size != expected.get("size"):
            raise IndexInvalid(
                f"{loc.child(name)}: {got.size if got else 'missing'} bytes, manifest says {expected.get('size')}"
            )
        if digests and loc.is_local and file_digest(Path(loc.path) / name) != expected.get("sha256"):
            raise IndexInvalid(f"{loc.child(name)}: content does not match the manifest's sha256")
    try:
        rows = storage.parquet_file(loc.child(METADATA_FILE)).metadata.num_rows
    except storage.StorageError as exc:
        raise IndexInvalid(f"{loc.child(METADATA_FILE)} is unreadable: {exc}") from exc
    if rows != manifest.count:
        raise IndexInvalid(f"{loc}: metadata has {rows} rows, manifest says {manifest.count}")
    return manifest


def _record_files(staged: Path) -> IndexManifest:
    """Add each file's size and sha256 to the staged manifest (the commit record of the version)."""
    manifest = IndexManifest.from_json((staged / MANIFEST_FILE).read_text(encoding="utf-8"))
    files = {
        name: {"size": (staged / name).stat().st_size, "sha256": file_digest(staged / name)}
        for name in (INDEX_FILE, METADATA_FILE, FILTERS_FILE, LEXICAL_FILE)
        if (staged / name).is_file()
    }
    manifest = dataclasses.replace(manifest, files=files)
    (staged / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def publish(
    root: str | os.PathLike[str] | storage.Location, staged: Path, version: str, make_current: bool = True
) -> storage.Location:
    """Verify a staged version, put it in place (rename, or upload with the manifest last), then CURRENT."""
    verify_version(staged)
    manifest = _record_files(staged)
    # The index file must load and agree with the manifest. Mapped, not read: the builder still
    # holds its own copy, and at 10M vectors a second one would double the build's peak memory.
    loaded = _open(staged, version, manifest, mmap=True)
    del loaded
    base = storage.resolve(root)
    final = base.child(version)
    if base.is_local:
        os.replace(staged, final.path)
        storage.fsync_dir(Path(base.path))
    else:
        storage.upload_dir(staged, final, last=[MANIFEST_FILE])
        discard(staged)
    if make_current:
        set_current(base, version)  # the Location resolved above, not the string again
    return final


def set_current(root: str | os.PathLike[str] | storage.Location, version: str) -> None:
    """Point CURRENT at a complete version (one atomic write: rename locally, one PUT remotely)."""
    base = storage.resolve(root)
    verify_version(base.child(version))
    storage.write_text(base.child(CURRENT), version + "\n")


def rollback(root: str | os.PathLike[str] | storage.Location) -> str:
    """Point CURRENT at the newest complete version older than the live one; returns it."""
    live = current_version(root)
    if live is None:
        raise IndexInvalid(f"{root}: no CURRENT version to roll back from")
    base = storage.resolve(root)
    for candidate in reversed([v for v in list_versions(root) if v < live]):
        try:
            verify_version(base.child(candidate))
        except IndexInvalid:
            continue  # skip a damaged old version rather than going live on it
        set_current(root, candidate)
        return candidate
    raise IndexInvalid(f"{root}: no complete version older than {live} to roll back to")


def discard(staged: Path) -> None:
    """Remove a staging directory after a failed build (or after uploading it)."""
    shutil.rmtree(staged, ignore_errors=True)


def open_version(root: str | os.PathLike[str] | storage.Location, version: str) -> LoadedIndex:
    """Load one version (index, manifest, metadata), refusing missing or incomplete ones.

    A remote version is fetched into the node-local cache first (verified by size and sha256).
    """
    base = storage.resolve(root)
    remote = base.child(version)
    if base.is_local:
        path = Path(remote.path)
        if not path.is_dir():
            raise IndexInvalid(f"index version {path} does not exist")
        return _open(path, version, verify_version(path))
    if not storage.is_file(remote.child(MANIFEST_FILE)):
        raise IndexInvalid(f"index version {remote} does not exist (or its upload is not complete)")
    verify_version(remote)
    local = fetch_dir(
        remote,
        f"indexes/{root_key(base.uri)}/{version}",
        _verify_download,
        log=lambda _m: None,
    )
    return _open(local, version, verify_version(local))


def _verify_download(path: Path) -> None:
    verify_version(path, digests=True)


def open_current(root: str | os.PathLike[str] | storage.Location) -> LoadedIndex:
    """Load the version CURRENT points at."""
    version = current_version(root)
    if version is None:
        raise IndexInvalid(f"{root}: no CURRENT index version")
    return open_version(root, version)


def _open(path: Path, version: str, manifest: IndexManifest, mmap: bool = False) -> LoadedIndex:
    index = VectorIndex.load(
        path / INDEX_FILE, manifest.factory, manifest.metric, manifest.search_params, mmap=mmap
    )
    if index.size != manifest.count or index.dimension != manifest.dimension:
        raise IndexInvalid(
            f"{path}: index holds {index.size} x {index.dimension}, "
            f"manifest says {manifest.count} x {manifest.dimension}"
        )
    names = pq.read_schema(path / METADATA_FILE).names
    metadata = pq.read_table(path / METADATA_FILE, columns=[n for n in names if n != VECTOR_HASH])
    filters = load_filters(path / FILTERS_FILE, manifest.count) if manifest.filters else EMPTY
    lexical = LexicalIndex.load(path / LEXICAL_FILE, manifest.count) if manifest.lexical else None
    return LoadedIndex(
        version=version,
        path=path,
        index=index,
        manifest=manifest,
        metadata=metadata,
        filters=filters,
        lexical=lexical,
    )


def read_vector_hashes(loaded: LoadedIndex) -> pa.Table | None:
    """`id` and VECTOR_HASH of every row (row i = FAISS id i); None for versions built without them."""
    path = loaded.path / METADATA_FILE
    if VECTOR_HASH not in pq.read_schema(path).names:
        return None
    return pq.read_table(path, columns=["id", VECTOR_HASH])
