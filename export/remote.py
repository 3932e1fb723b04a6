"""Export straight to object storage: build and verify locally, then upload with the manifest last.

An artifact on an object store counts as present only once manifest.json exists, and the manifest
is uploaded after every other file, so a reader (embedder.artifact.fetch_artifact) never loads half
an artifact even though object stores have no directory rename.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import storage
from embedder.artifact import MANIFEST_FILE, Manifest
from export.errors import ExportError
from export.pipeline import ExportRequest, run_export


def export_to(request: ExportRequest, out: str, log: Any = print) -> Manifest:
    """Run the export; `out` may be a local path or a URI (s3://, gs://, ...)."""
    if not storage.is_remote(out):
        return run_export(dataclasses.replace(request, out_dir=Path(storage.resolve(out).path)), log=log)
    target = storage.resolve(out)
    storage.check_bucket(target)
    if storage.is_file(target.child(MANIFEST_FILE)) and not request.overwrite:
        raise ExportError(f"{target} already holds an artifact; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory(prefix="qm-export-") as tmp:
        local = Path(tmp) / "artifact"
        manifest = run_export(dataclasses.replace(request, out_dir=local, overwrite=True), log=log)
        # Replacing: drop the old manifest first, so no reader takes old files for a new artifact.
        storage.delete_file(target.child(MANIFEST_FILE))
        storage.upload_dir(local, target, last=[MANIFEST_FILE])
    return manifest
