"""API keys for tests and benchmarks: a fresh key and the SHA-256 hex the auth config holds."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any


def new_key() -> tuple[str, str]:
    """(key, its sha256 hex), as docs/operations.md tells an operator to make one."""
    key = secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def key_entry(name: str, sha256: str, collections: list[str] | str = "*", **more: Any) -> dict[str, Any]:
    """One `auth.keys` entry."""
    return {"name": name, "sha256": sha256, "collections": collections, **more}


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}
