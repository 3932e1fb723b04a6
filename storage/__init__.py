"""The one place that touches files: local paths and URIs (s3://, gs://, file://, ...) via pyarrow.fs.

Every reader and writer in the project (export output, the embedding job, the index store, the
Serve replicas) resolves its paths here and does its listing, reading, writing and deleting
through these functions, so the guarantees are the same on every backend:

- `write_bytes` is all-or-nothing (storage/files.py says how, per backend).
- There is no "rename" on object stores, so callers that need a version to appear at once write
  its files first and a small commit object last (see index/store.py).
- Errors come out as `StorageError`, one line naming the URI and the reason (no such bucket,
  no credentials, endpoint unreachable, disk full), after bounded retries with backoff for
  transient network failures (storage/retry.py).

Resolve a path or URI once (`resolve` -> `Location`, storage/location.py) and pass the Location
on: every function here also takes a plain path or URI string, for callers at the edge.

The modules, one job each: location (Location, resolve), retry (StorageError, RetryConfig, the
retry loop and the one-line reasons), files (info, list, read, write, delete), parquet, transfer
(download / upload a directory), cache (the node-local cache directory).
"""

from storage.files import (
    check_bucket,
    delete_dir,
    delete_file,
    exists,
    fsync_dir,
    info,
    is_dir,
    is_file,
    list_dirs,
    list_files,
    make_dirs,
    read_bytes,
    read_json,
    read_range,
    read_text,
    write_bytes,
    write_json,
    write_text,
)
from storage.location import Location, is_remote, is_uri, located, resolve
from storage.parquet import parquet_file, read_parquet, write_parquet
from storage.retry import TRANSIENT_MARKERS, RetryConfig, StorageError, errors_named, retry_config
from storage.transfer import download_dir, upload_dir

__all__ = [
    "TRANSIENT_MARKERS",
    "Location",
    "RetryConfig",
    "StorageError",
    "check_bucket",
    "delete_dir",
    "delete_file",
    "download_dir",
    "errors_named",
    "exists",
    "fsync_dir",
    "info",
    "is_dir",
    "is_file",
    "is_remote",
    "is_uri",
    "list_dirs",
    "list_files",
    "located",
    "make_dirs",
    "parquet_file",
    "read_bytes",
    "read_json",
    "read_parquet",
    "read_range",
    "read_text",
    "resolve",
    "retry_config",
    "upload_dir",
    "write_bytes",
    "write_json",
    "write_parquet",
    "write_text",
]
