"""Whole directories between a location and the local disk: download a prefix, upload a folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from storage.files import list_files, read_bytes, write_bytes
from storage.location import Location, located, resolve
from storage.retry import StorageError, errors_named


def download_dir(spec: str | os.PathLike[str] | Location, dest: Path) -> list[Path]:
    """Copy every file under a directory / prefix into local `dest` (relative layout kept)."""
    loc = resolve(spec)
    files = list_files(loc)
    if not files:
        raise StorageError(f"{loc}: nothing found there")
    copied = []
    root = loc.path.rstrip("/") + "/"
    for f in files:
        target = dest / f.path[len(root) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        with errors_named(located(loc, f.path), "download"):
            target.write_bytes(read_bytes(located(loc, f.path)))
        copied.append(target)
    return copied


def upload_dir(source: Path, spec: str | os.PathLike[str] | Location, last: Sequence[str] = ()) -> Location:
    """Copy a local directory's files to a location; the files named in `last` go last, in order.

    Writing the commit file (a manifest) last means a reader that waits for it never sees a
    partial directory, on backends without an atomic directory rename.
    """
    loc = resolve(spec)
    names = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    ordered = [n for n in names if n not in last] + [n for n in last if n in names]
    for name in ordered:
        write_bytes(loc.child(name), (source / name).read_bytes())
    return loc
