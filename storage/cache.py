"""Node-local cache of remote directories (artifacts, index versions), keyed by what they are.

A replica or job actor on a node with no shared disk fetches `s3://.../minilm-fp32` once into
`<cache>/artifacts/<fingerprint>/` and an index version into `<cache>/indexes/<root-hash>/<version>/`.
The key names the content, so a cached copy never goes stale; it can only be incomplete or
corrupt, and `verify` decides that: a copy that fails verification is deleted and fetched again.
Downloads go to a hidden temp directory that is renamed into place only after it verifies, so
two processes on one node racing for the same key both end with a good copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import storage
from embedder.errors import EmbedderError
from settings.loader import from_mapping


@dataclass(frozen=True)
class CacheConfig:
    """Where this node keeps its copies (QM_CACHE_DIR)."""

    # A local directory with room for the artifacts and live index versions; "" : ~/.cache/qmatch.
    dir: str = ""


def cache_root() -> Path:
    """QM_CACHE_DIR (read through the config system on every call: tests and nodes set it late)."""
    configured = from_mapping(CacheConfig, None, "QM_CACHE_").dir
    return Path(configured) if configured else Path.home() / ".cache" / "qmatch"


def safe_key(text: str) -> str:
    """A file-name-safe form of a fingerprint or version ("sha256:ab" -> "sha256-ab")."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def root_key(uri: str) -> str:
    """Short stable key for a remote root URI (index roots of different buckets never collide)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def fetch_dir(
    source: storage.Location | str,
    key: str,
    verify: Callable[[Path], None],
    log: Callable[[str], None] = print,
) -> Path:
    """A verified local copy of a remote directory under `<cache>/<key>`; re-fetched when corrupt."""
    target = cache_root() / key
    if target.is_dir():
        try:
            verify(target)
            return target
        except EmbedderError as exc:
            log(f"cache: {target} failed verification ({exc}); fetching {source} again")
            shutil.rmtree(target, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        storage.download_dir(source, tmp)
        verify(tmp)  # a corrupt download never enters the cache
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process on this node finished first; its copy is used if it verifies.
            shutil.rmtree(tmp, ignore_errors=True)
            verify(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def file_digest(path: Path) -> str:
    """sha256 of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
