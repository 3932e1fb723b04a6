"""Small JSON records beside an index version (thresholds.json, hybrid.json), Ray-free.

Why sidecars rather than fields of manifest.json: an index version is immutable once published
(its manifest records every file's size and sha256, node-local caches trust a version as long as
it verifies, CURRENT only moves to a verified version). A threshold or a hybrid weight is chosen
*after* a version exists, from labelled data, maybe weeks later, and may be re-chosen; rewriting
the manifest would change a published version under every replica that cached it. A record is an
extra, optional file nothing verifies against the manifest, written all-or-nothing through the
storage layer (a local rename, or one object PUT), so a reader sees the old record or the new one.

Records belong to the model and the kind of questions, not to one day's build: a version without
its own inherits the newest older version's (`newest`). Which records count (same model) is the
caller's rule; this module finds, reads and writes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import storage
from embedder.errors import ModelMismatch
from index import store as index_store
from index.store import IndexManifest


def location(root: str | os.PathLike[str], version: str, name: str) -> storage.Location:
    """Where record `name` of a version lives."""
    return storage.resolve(root).child(version, name)


def check_model(root: str | os.PathLike[str], version: str, fingerprint: str, what: str) -> IndexManifest:
    """The version's verified manifest; ModelMismatch when it was built with another model than `what` was.

    `what` names what was chosen and how, e.g. "these scores come from", "alpha was fitted with".
    """
    manifest = index_store.verify_version(storage.resolve(root).child(version))
    if manifest.fingerprint != fingerprint:
        raise ModelMismatch(
            f"index version {version} was built with model {manifest.fingerprint or '<none>'}; "
            f"{what} {fingerprint or '<none>'}: it does not carry across models"
        )
    return manifest


def write_record(
    root: str | os.PathLike[str], version: str, name: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Write record `name` of a version (all-or-nothing) with `version` and `created_at` added; the record."""
    record = {
        **fields,
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(location(root, version, name), record)
    return record


def read_record(root: str | os.PathLike[str], version: str, name: str) -> dict[str, Any] | None:
    """A version's own record, or None when it has none; StorageError naming the file when malformed."""
    loc = location(root, version, name)
    if not storage.is_file(loc):
        return None
    record = storage.read_json(loc)  # StorageError when not JSON at all
    if not isinstance(record, dict):
        raise storage.StorageError(f"{loc}: expected a JSON object, found {type(record).__name__}")
    return record


def newest(
    root: str | os.PathLike[str], version: str, name: str, inherit: bool = True
) -> tuple[str, dict[str, Any]] | None:
    """(version it came from, record): the version's own, else (inherit) the newest older version's."""
    candidates = [version]
    if inherit:
        candidates += list(reversed([v for v in index_store.list_versions(root) if v < version]))
    for candidate in candidates:
        record = read_record(root, candidate, name)
        if record is not None:
            return candidate, record
    return None
