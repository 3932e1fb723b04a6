"""Where a file lives: `resolve` turns a local path or URI into a `Location` (a pyarrow filesystem
plus the path inside it), once; everything below takes the Location.

Endpoints: pyarrow reads the usual AWS variables (AWS_ENDPOINT_URL, AWS_REGION, credentials or
the instance profile); a URI may also carry pyarrow's query options, e.g.
`s3://bucket/path?endpoint_override=127.0.0.1:9000&scheme=http`, which are kept on every child URI.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from storage.retry import StorageError, explain, retry


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

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Pickled (to a Ray worker, say) as its URI and resolved again there: the filesystem object
        # (which may hold credentials) never crosses, and the worker uses its own endpoint settings.
        return resolve, (f"file://{self.path}" if self.scheme == "file" else self.uri,)


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
            fs, _ = retry(lambda: pafs.FileSystem.from_uri(base), base)
        except StorageError:
            raise
        except (pa.ArrowInvalid, ValueError) as exc:
            raise StorageError(f"{text}: {explain(exc, text)}") from None
        with _FS_LOCK:
            _FS_CACHE[key] = fs
    path = (parts.netloc + parts.path).rstrip("/") if parts.path != "/" else parts.netloc
    return Location(fs, path, scheme, parts.query)


def located(loc: Location, path: str) -> Location:
    """A Location for a path returned by a listing of `loc`'s filesystem."""
    return Location(loc.fs, path, loc.scheme, loc.query)
