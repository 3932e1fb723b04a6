"""Test inputs that are slow to build (tiny models and their artifacts, converted schemas), kept
across test runs so a warm run neither rebuilds them nor imports what builds them (torch, onnx).

An entry is a directory `<root>/<name>-<key>/`. The key is a hash of everything that determines
its content: the source files of the code that builds it, the builder's parameters, the versions
of the packages it runs, the Python version and the CPU architecture; change any of them and the
key changes, so a stale entry is never found, only left behind (`rm -rf .cache/test-artifacts`).

An entry is built in a temporary directory next to it and renamed into place when complete (a
crash mid-build or a concurrent run never leaves a half entry under the entry's name); its last
file, `.contents.json`, lists the sha256 of every other file. Readers check their private copy
(or the bytes they read) against that list, so an entry edited or truncated after the fact is
rebuilt, not trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO / ".cache" / "test-artifacts"  # git-ignored (.gitignore: /.cache/)
CONTENTS = ".contents.json"
_STALE_TMP_SECONDS = 3600.0  # a build directory this old belongs to a run that died


def _version(package: str) -> str:
    try:
        return metadata.version(package)  # reads the installed metadata: no import of the package
    except metadata.PackageNotFoundError:
        return "absent"


def _source_files(sources: Iterable[Path]) -> list[Path]:
    files: set[Path] = set()
    for source in sources:
        if source.is_dir():
            files |= {p for p in source.rglob("*.py") if "__pycache__" not in p.parts}
        else:
            files.add(source)
    return sorted(files)


def cache_key(params: Mapping[str, object], sources: Iterable[Path], packages: Iterable[str]) -> str:
    """A hash of the builder's parameters, its source files (a directory: its *.py files) and the
    versions of the packages it runs. Paths count relative to the repository, so two checkouts of
    the same code share keys."""
    digest = hashlib.sha256()
    context = {
        "params": dict(params),
        "packages": {p: _version(p) for p in sorted(packages)},
        "python": sys.version,
        "machine": platform.machine(),
    }
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    for path in _source_files(sources):
        resolved = path.resolve()
        # Inside the repository: the relative path; outside (reference data): the file name.
        name = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved.name
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): _sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != CONTENTS
    }


def _recorded(entry: Path) -> dict[str, str] | None:
    try:
        data = json.loads((entry / CONTENTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no entry, or one that never finished
    return data if isinstance(data, dict) else None


def _sweep_dead_builds(root: Path) -> None:
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # another run swept it first


def _build_entry(entry: Path, build: Callable[[Path], None]) -> None:
    """Build into a temporary directory, record its contents, rename it to `entry`."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _sweep_dead_builds(entry.parent)
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        contents = _listing(tmp)
        (tmp / CONTENTS).write_text(json.dumps(contents, indent=1, sort_keys=True), encoding="utf-8")
        if entry.exists():
            if _recorded(entry) == _listing(entry):
                return  # a concurrent run finished the same entry first: keep theirs
            _discard(entry)
        # Fails when another run put its complete entry there first: ours is dropped below.
        with contextlib.suppress(OSError):
            tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(entry: Path) -> None:
    """Move an entry aside (a rename is atomic, so no run sees it half deleted), then delete it."""
    trash = entry.parent / f".tmp-trash-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        entry.rename(trash)
    except OSError:
        return  # gone already: another run discarded or replaced it
    shutil.rmtree(trash, ignore_errors=True)


def _copy_verified(entry: Path, dest: Path) -> bool:
    """Copy the entry to dest and check the copy against the entry's recorded contents."""
    recorded = _recorded(entry)
    if recorded is None:
        return False
    shutil.rmtree(dest, ignore_errors=True)
    try:
        shutil.copytree(entry, dest, ignore=shutil.ignore_patterns(CONTENTS))
    except (OSError, shutil.Error):
        shutil.rmtree(dest, ignore_errors=True)
        return False  # deleted or replaced while we copied
    if _listing(dest) != recorded:
        shutil.rmtree(dest)
        return False
    return True


def cached_dir(
    name: str,
    key: str,
    build: Callable[[Path], None],
    dest: Path,
    check: Callable[[Path], object] | None = None,
    root: Path = CACHE_ROOT,
) -> Path:
    """A private copy at dest of the entry `name-key`, built first by `build(directory)` when it is
    missing or does not verify. `check(copy)` may raise to reject a copy (the entry is rebuilt).
    Tests get a copy, never the entry itself, so one that edits its input cannot spoil the cache."""
    entry = root / f"{name}-{key}"
    for _ in range(3):  # a concurrent run may replace the entry while we copy it: try again
        if _copy_verified(entry, dest):
            if _passes(check, dest):
                return dest
            _discard(entry)  # intact as recorded, yet rejected (e.g. built by a buggy builder)
        _build_entry(entry, build)
    raise RuntimeError(
        f"test cache entry {entry} does not verify (or pass its check) right after it was built"
    )


def cached_file(
    name: str, key: str, filename: str, build: Callable[[Path], None], root: Path = CACHE_ROOT
) -> bytes:
    """The bytes of `filename` in the entry `name-key` (checked against the recorded hash), built
    first by `build(directory)` (which writes directory/filename) when missing or not matching."""
    entry = root / f"{name}-{key}"
    for _ in range(3):
        recorded = _recorded(entry) or {}
        try:
            data = (entry / filename).read_bytes()
        except OSError:
            data = b""
        if filename in recorded and recorded[filename] == hashlib.sha256(data).hexdigest():
            return data
        _build_entry(entry, build)
    raise RuntimeError(f"test cache entry {entry} does not verify right after it was built")


def _passes(check: Callable[[Path], object] | None, copy: Path) -> bool:
    if check is None:
        return True
    try:
        check(copy)
    except Exception:
        shutil.rmtree(copy, ignore_errors=True)
        return False
    return True
