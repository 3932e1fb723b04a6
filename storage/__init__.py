"""The one place that touches files: local paths and URIs (s3://, gs://, file://, ...) via pyarrow.fs.

Every reader and writer in the project (export output, the embedding job, the index store, the
Serve replicas) resolves its paths here and does its listing, reading, writing and deleting
through these functions, so the guarantees are the same on every backend:

- `write_bytes` is all-or-nothing. On a local disk: a hidden temp file, fsync, `os.replace`. On an
  object store: the bytes are assembled in memory first and sent as one upload, which the store
  makes visible only when complete (a killed writer leaves nothing, never half an object).
- There is no "rename" on object stores, so callers that need a version to appear at once write
  its files first and a small commit object last (see index/store.py).
- Errors come out as `StorageError`, one line naming the URI and the reason (no such bucket,
  no credentials, endpoint unreachable, disk full), after bounded retries with backoff for
  transient network failures.

Endpoints: pyarrow reads the usual AWS variables (AWS_ENDPOINT_URL, AWS_REGION, credentials or
the instance profile); a URI may also carry pyarrow's query options, e.g.
`s3://bucket/path?endpoint_override=127.0.0.1:9000&scheme=http`, which are kept on every child URI.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder.errors import EmbedderError
from settings.loader import check_field, from_mapping

T = TypeVar("T")
# Transient failures worth retrying (on top of the AWS SDK's own retries): the endpoint did not
# answer, or answered "slow down". Everything else (missing bucket, access denied) fails at once.
TRANSIENT_MARKERS = (
    "NETWORK_CONNECTION",
    "Could not connect",
    "SLOW_DOWN",
    "SERVICE_UNAVAILABLE",
    "timed out",
)


@dataclass(frozen=True)
class RetryConfig:
    """Retries of transient storage failures (QM_STORAGE_RETRIES, QM_STORAGE_BACKOFF_SECONDS)."""

    # Attempts in all, on top of the AWS SDK's own: 3 rides out a restarting endpoint (~2 s).
    retries: int = 3
    # First pause; doubled each attempt, with up to 50% jitter so workers do not retry in step.
    backoff_seconds: float = 0.5

    def __post_init__(self) -> None:
        check_field(self, "retries", self.retries >= 1, "must be >= 1")
        check_field(self, "backoff_seconds", self.backoff_seconds >= 0, "must be >= 0")


@functools.lru_cache(maxsize=1)
def retry_config() -> RetryConfig:
    """Read once per process, through the config system (a bad value is a ConfigError naming it)."""
    return from_mapping(RetryConfig, None, "QM_STORAGE_")


class StorageError(EmbedderError):
    """A file or URI could not be read or written; the message names it and says why."""


@dataclass(frozen=True)
class Location:
    """A resolved place: a pyarrow filesystem plus the path inside it, and how to print it back."""

    fs: pafs.FileSystem
    path: str  # filesystem-internal: absolute local path, or "bucket/key" on object stores
    scheme: str = ""  # "" for a local path
    query: str = ""  # URI query options (endpoint_override=...), carried to child locations

    @property
    def is_local(self) -> bool:
        """True for the local filesystem (plain paths and file:// URIs)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def uri(self) -> str:
        """The location as the user would write it (plain path for local, scheme://... otherwise)."""
        if not self.scheme or self.scheme == "file":
            return self.path
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        """Last path component."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def child(self, *parts: str) -> Location:
        """A location below this one."""
        path = "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts)])
        return Location(self.fs, path, self.scheme, self.query)

    @property
    def parent(self) -> Location:
        """The enclosing directory / prefix."""
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        return Location(self.fs, head or "/", self.scheme, self.query)

    def local_path(self) -> Path:
        """This location as a Path; only for the local filesystem."""
        if not self.is_local:
            raise StorageError(f"{self.uri} is not on the local filesystem")
        return Path(self.path)

    def to_json(self) -> str:
        """Round-trips through `resolve` (what crosses to Ray workers is the URI string)."""
        return self.uri


_FS_CACHE: dict[tuple[str, str, str], pafs.FileSystem] = {}
_FS_LOCK = threading.Lock()


def is_uri(spec: str | os.PathLike[str]) -> bool:
    """True when `spec` names a scheme (s3://, gs://, file://, ...), False for a plain path."""
    return "://" in str(spec)


def is_remote(spec: str | os.PathLike[str] | Location) -> bool:
    """True when the location is not on the local filesystem."""
    return not resolve(spec).is_local


def resolve(spec: str | os.PathLike[str] | Location) -> Location:
    """A local path or URI -> Location; StorageError naming the URI for an unknown scheme or bad URI."""
    if isinstance(spec, Location):
        return spec
    text = os.fspath(spec)
    if not is_uri(text):
        return Location(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text)))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Location(pafs.LocalFileSystem(), os.path.abspath(parts.path), "file")
    key = (scheme, parts.netloc, parts.query)
    with _FS_LOCK:
        fs = _FS_CACHE.get(key)
    if fs is None:
        base = f"{scheme}://{parts.netloc}" + (f"?{parts.query}" if parts.query else "")
        try:
            fs, _ = _retry(lambda: pafs.FileSystem.from_uri(base), base)
        except StorageError:
            raise
        except (pa.ArrowInvalid, ValueError) as exc:
            raise StorageError(f"{text}: {_explain(exc, text)}") from None
        with _FS_LOCK:
            _FS_CACHE[key] = fs
    path = (parts.netloc + parts.path).rstrip("/") if parts.path != "/" else parts.netloc
    return Location(fs, path, scheme, parts.query)


def _explain(exc: BaseException, uri: str) -> str:
    """A one-line reason for a storage failure, in the user's terms."""
    # Printable only: a corrupt file's bytes can end up inside the library's message.
    text = "".join(c if c.isprintable() or c == "\n" else "?" for c in str(exc))
    if "Unrecognized filesystem type" in text:
        scheme = uri.split("://", 1)[0]
        return (
            f"unknown storage scheme {scheme!r}: use a local path or a URI pyarrow knows "
            "(file://, s3://, gs://, hdfs://, abfs://)"
        )
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text:
        return "no space left on device"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return "the bucket does not exist"
    if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return "access denied: check the credentials (AWS_* variables, instance profile, service account)"
    if "credentials" in text.lower() and ("No " in text or "not" in text):
        return "no credentials found (AWS_* variables, instance profile or service account)"
    if any(marker in text for marker in TRANSIENT_MARKERS):
        return f"storage endpoint unreachable after {retry_config().retries} attempts ({text.splitlines()[0][:200]})"
    if isinstance(exc, FileNotFoundError) or "does not exist" in text or "NotFound" in text:
        return "not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _retry(fn: Callable[[], T], uri: str) -> T:
    """Run `fn`, retrying transient network failures with exponential backoff (bounded)."""
    cfg = retry_config()
    for attempt in range(cfg.retries):
        try:
            return fn()
        except OSError as exc:
            transient = any(marker in str(exc) for marker in TRANSIENT_MARKERS)
            if not transient or attempt == cfg.retries - 1:
                raise StorageError(f"{uri}: {_explain(exc, uri)}") from None
            time.sleep(cfg.backoff_seconds * (2**attempt) * (1 + random.random() / 2))
    raise AssertionError("unreachable")


@contextmanager
def errors_named(loc: Location | str, action: str) -> Iterator[None]:
    """Turn OSError / ArrowException raised inside into one StorageError line naming the location."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot {action} {loc}: {_explain(exc, str(loc))}") from exc


def info(spec: str | os.PathLike[str] | Location) -> pafs.FileInfo:
    """FileInfo (type, size, mtime) of one location; NotFound is a type, not an error."""
    loc = resolve(spec)
    return _retry(lambda: loc.fs.get_file_info(loc.path), loc.uri)


def is_file(spec: str | os.PathLike[str] | Location) -> bool:
    """True when a file / object exists at the location."""
    return info(spec).type == pafs.FileType.File


def is_dir(spec: str | os.PathLike[str] | Location) -> bool:
    """True for a directory, or an object-store prefix with objects under it."""
    return info(spec).type == pafs.FileType.Directory


def exists(spec: str | os.PathLike[str] | Location) -> bool:
    """True for a file or a directory / non-empty prefix."""
    return info(spec).type != pafs.FileType.NotFound


def list_files(spec: str | os.PathLike[str] | Location, recursive: bool = True) -> list[pafs.FileInfo]:
    """Files under a directory / prefix, sorted by path; [] when it does not exist."""
    loc = resolve(spec)
    selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
    infos = _retry(lambda: loc.fs.get_file_info(selector), loc.uri)
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def list_dirs(spec: str | os.PathLike[str] | Location) -> list[str]:
    """Names of the immediate sub-directories / sub-prefixes."""
    loc = resolve(spec)
    selector = pafs.FileSelector(loc.path, recursive=False, allow_not_found=True)
    infos = _retry(lambda: loc.fs.get_file_info(selector), loc.uri)
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def located(loc: Location, path: str) -> Location:
    """A Location for a path returned by a listing of `loc`'s filesystem."""
    return Location(loc.fs, path, loc.scheme, loc.query)


def read_bytes(spec: str | os.PathLike[str] | Location) -> bytes:
    """The whole content of one file / object."""
    loc = resolve(spec)

    def read() -> bytes:
        # One sized read of a random-access file: S3's input *stream* reads in small pieces and
        # was measured ~80x slower for a 90 MB model (22 s vs 0.26 s against the same server).
        with loc.fs.open_input_file(loc.path) as fh:
            return bytes(fh.read_at(fh.size(), 0))

    with errors_named(loc, "read"):
        return _retry(read, loc.uri)


def read_range(spec: str | os.PathLike[str] | Location, offset: int, length: int) -> bytes:
    """`length` bytes from `offset` (fewer at the end of the file)."""
    loc = resolve(spec)

    def read() -> bytes:
        with loc.fs.open_input_file(loc.path) as fh:
            return bytes(fh.read_at(length, offset)) if fh.size() > offset else b""

    with errors_named(loc, "read"):
        return _retry(read, loc.uri)


def read_text(spec: str | os.PathLike[str] | Location) -> str:
    """A UTF-8 text file."""
    return read_bytes(spec).decode("utf-8")


def read_json(spec: str | os.PathLike[str] | Location) -> Any:
    """A JSON file; StorageError naming it when unparsable."""
    loc = resolve(spec)
    try:
        return json.loads(read_bytes(loc))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{loc} is not valid JSON: {exc}") from exc


def write_bytes(spec: str | os.PathLike[str] | Location, data: bytes) -> Location:
    """Write a whole file all-or-nothing (see the module docstring for how, per backend)."""
    loc = resolve(spec)
    if loc.is_local:
        with errors_named(loc, "write"):
            _write_local_atomic(Path(loc.path), data)
        return loc

    def put() -> None:
        with loc.fs.open_output_stream(loc.path) as fh:
            fh.write(data)

    with errors_named(loc, "write"):
        _retry(put, loc.uri)
    return loc


def _write_local_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (leading dot) so readers listing part-*.parquet never see a half-written file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: flush the directory entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(spec: str | os.PathLike[str] | Location, text: str) -> Location:
    """Write a UTF-8 text file all-or-nothing."""
    return write_bytes(spec, text.encode("utf-8"))


def write_json(spec: str | os.PathLike[str] | Location, data: Any) -> Location:
    """Write JSON (indented, sorted keys) all-or-nothing."""
    return write_text(spec, json.dumps(data, indent=2, sort_keys=True))


def write_parquet(spec: str | os.PathLike[str] | Location, table: pa.Table, **options: Any) -> Location:
    """Write a parquet file all-or-nothing (encoded in memory, then one write); options go to write_table."""
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return write_bytes(spec, sink.getvalue())


def parquet_file(spec: str | os.PathLike[str] | Location) -> pq.ParquetFile:
    """An open ParquetFile (footer read); StorageError naming the file when it is not readable parquet."""
    loc = resolve(spec)
    with errors_named(loc, "read parquet file"):
        handle = _retry(lambda: loc.fs.open_input_file(loc.path), loc.uri)
        return pq.ParquetFile(handle)


def read_parquet(spec: str | os.PathLike[str] | Location, columns: Sequence[str] | None = None) -> pa.Table:
    """A whole parquet file (or only `columns`)."""
    pf = parquet_file(spec)
    with errors_named(spec if isinstance(spec, Location) else str(spec), "read parquet data from"):
        return pf.read(columns=list(columns) if columns is not None else None)


def delete_file(spec: str | os.PathLike[str] | Location) -> None:
    """Delete one file / object; missing is fine."""
    loc = resolve(spec)
    with errors_named(loc, "delete"):
        if info(loc).type == pafs.FileType.File:
            loc.fs.delete_file(loc.path)


def delete_dir(spec: str | os.PathLike[str] | Location) -> None:
    """Delete a directory / prefix and everything under it; missing is fine."""
    loc = resolve(spec)
    with errors_named(loc, "delete"):
        if info(loc).type == pafs.FileType.Directory:
            loc.fs.delete_dir(loc.path)


def make_dirs(spec: str | os.PathLike[str] | Location) -> None:
    """Create a local directory (object stores have no directories; nothing to do there)."""
    loc = resolve(spec)
    if loc.is_local:
        with errors_named(loc, "create directory"):
            Path(loc.path).mkdir(parents=True, exist_ok=True)


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


def check_bucket(spec: str | os.PathLike[str] | Location) -> None:
    """For object stores: fail before any work when the bucket is missing or unreachable."""
    loc = resolve(spec)
    if loc.is_local:
        return
    bucket = loc.path.split("/", 1)[0]
    bucket_info = _retry(lambda: loc.fs.get_file_info(bucket), loc.uri)
    if bucket_info.type == pafs.FileType.NotFound:
        raise StorageError(f"{loc}: bucket {bucket!r} does not exist (or these credentials cannot see it)")
