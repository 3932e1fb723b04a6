"""Storage failures: one `StorageError` line naming the URI and the reason, after bounded retries.

Transient network failures (the endpoint did not answer, or answered "slow down") are retried with
exponential backoff and jitter, on top of the AWS SDK's own retries; everything else (missing
bucket, access denied, disk full) fails at once with a reason in the user's terms.
"""

from __future__ import annotations

import errno
import functools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

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


def explain(exc: BaseException, uri: str) -> str:
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


def retry(fn: Callable[[], T], uri: str) -> T:
    """Run `fn`, retrying transient network failures with exponential backoff (bounded)."""
    cfg = retry_config()
    for attempt in range(cfg.retries):
        try:
            return fn()
        except OSError as exc:
            transient = any(marker in str(exc) for marker in TRANSIENT_MARKERS)
            if not transient or attempt == cfg.retries - 1:
                raise StorageError(f"{uri}: {explain(exc, uri)}") from None
            time.sleep(cfg.backoff_seconds * (2**attempt) * (1 + random.random() / 2))
    raise AssertionError("unreachable")


@contextmanager
def errors_named(loc: object, action: str) -> Iterator[None]:
    """Turn OSError / ArrowException raised inside into one StorageError line naming the location.

    `loc` is a Location or a URI string, only printed: typed `object` so this module need not
    import storage.location (which imports it: the retry loop resolves filesystems).
    """
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot {action} {loc}: {explain(exc, str(loc))}") from exc
