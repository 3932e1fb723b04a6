"""API keys scoped to collections and routes: the configured table, resolved once, and who a request is.

Only the SHA-256 hex of each key is configured (`auth: {keys: [{name, sha256, collections, routes,
weight}]}`), never the key: the table travels in the Ingress's user_config, which Serve shows in its
dashboard. A request's Bearer token is hashed once and its digest compared, in constant time, with
every configured digest (no early exit), so neither the key nor which entry matched leaks by timing
more than the one comparison per entry every request pays.

The single `ServingConfig.api_key` stays valid: it is one more key, named "default", that may use
every collection and route (the union with `auth`; a configured key may not be named "default"
then). Without any key the service is open, as it always was: every request is "anonymous", with
every right.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

# The routes a key's `routes` may name (the API routes; /health, /ready and the page stay open).
ROUTES = ("/v1/embeddings", "/embed", "/tokenize", "/match", "/v1/models", "/v1/collections", "/info")
LEGACY_NAME = "default"  # the name of ServingConfig.api_key's key
ANONYMOUS = "anonymous"  # every request of a service without keys
UNKNOWN = "unknown key"  # a refused token's name in logs and counters (no key name has a space)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class KeySpec(BaseModel):
    """One configured key: its name (logs, counters), SHA-256 hex, collections, routes, fair-share weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str
    collections: list[str] | Literal["*"]
    # None: every API route; otherwise a subset of ROUTES.
    routes: list[str] | None = None
    # Share of the in-flight slots, queued tokens and model passes against other keys with work.
    weight: int = Field(default=1, ge=1, le=1000)


class AuthConfig(BaseModel):
    """The `auth` section: the key table (hashes only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[KeySpec] = Field(default_factory=list)


def _entry_problem(spec: KeySpec) -> str | None:
    if not _NAME.match(spec.name):
        return "name must be 1-64 letters, digits, '_', '.' or '-' (it appears in logs and metrics)"
    if not _HEX.match(spec.sha256):
        return f"sha256 must be 64 lower-case hex characters (got {len(spec.sha256)} characters)"
    unknown = sorted(set(spec.routes or ()) - set(ROUTES))
    if unknown:
        return f"unknown route(s) {unknown}; routes are {list(ROUTES)}"
    if isinstance(spec.collections, list) and not spec.collections:
        return "collections is empty (give collection names or '*')"
    return None


def auth_config(data: Mapping[str, Any] | None, where: str = "auth") -> AuthConfig:
    """The section validated: a bad entry is one ValueError line naming it (`auth.keys[1] ('shop'): ...`)."""
    raw = dict(data or {})
    if not isinstance(raw.get("keys", []), list):
        raise ValueError(f"{where}.keys: must be a list of keys")
    entries = list(raw.get("keys", []))  # a copy: the hashes are normalised, the caller's data is not
    for i, entry in enumerate(entries):  # entry by entry, so the error names the entry
        label = f"{where}.keys[{i}]" + (f" ({entry.get('name')!r})" if isinstance(entry, dict) else "")
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            entry = {**entry, "sha256": entry["sha256"].strip().lower()}
            entries[i] = entry
        try:
            spec = KeySpec.model_validate(entry)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            raise ValueError(f"{label}: {field}: {first['msg']}") from None
        problem = _entry_problem(spec)
        if problem:
            raise ValueError(f"{label}: {problem}")
    try:
        config = AuthConfig.model_validate({**raw, "keys": entries})
    except pydantic.ValidationError as exc:
        raise ValueError(f"{where}: {exc.errors()[0]['msg']}") from None
    seen: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for i, spec in enumerate(config.keys):
        if spec.name in seen:
            raise ValueError(
                f"{where}.keys[{i}] ({spec.name!r}): name already used by keys[{seen[spec.name]}]"
            )
        if spec.sha256 in hashes:
            raise ValueError(
                f"{where}.keys[{i}] ({spec.name!r}): the same sha256 as keys[{hashes[spec.sha256]}]"
            )
        seen[spec.name], hashes[spec.sha256] = i, i
    return config


def load_auth_file(path: str | Path) -> AuthConfig:
    """An auth file (YAML or JSON, the `auth` section's shape) validated; errors name the file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with `keys`")
    return auth_config(data, where=str(path))


@dataclass(frozen=True)
class Caller:
    """Who a request is: a key's name and rights (None: every collection / every route)."""

    name: str
    collections: frozenset[str] | None = None
    routes: frozenset[str] | None = None
    weight: int = 1

    @property
    def admin(self) -> bool:
        """Every collection and every route: sees every key's counters in /info."""
        return self.collections is None and self.routes is None

    def may_route(self, route: str) -> bool:
        """Whether this key may call the route (one of ROUTES)."""
        return self.routes is None or route in self.routes

    def may_use(self, collection: str) -> bool:
        """Whether this key may match in, list or read the collection."""
        return self.collections is None or collection in self.collections


OPEN = Caller(ANONYMOUS)


def digest(token: str) -> bytes:
    """The SHA-256 of a presented token, as the hex bytes the table holds."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest().encode("ascii")


class KeyTable:
    """The configured keys by digest; `identify` finds a request's key in constant time per entry."""

    def __init__(self, api_key: str = "", auth: AuthConfig | None = None) -> None:
        entries: list[tuple[bytes, Caller]] = []
        if api_key:
            entries.append((digest(api_key), Caller(LEGACY_NAME)))
        for spec in (auth or AuthConfig()).keys:
            if api_key and spec.name == LEGACY_NAME:
                raise ValueError(
                    f"auth key {LEGACY_NAME!r}: that name is the api_key's (QM_SERVE_API_KEY) key; rename it"
                )
            if api_key and hmac.compare_digest(spec.sha256.encode("ascii"), entries[0][0]):
                raise ValueError(f"auth key {spec.name!r}: its sha256 is the api_key's; one key, one entry")
            collections = None if spec.collections == "*" else frozenset(spec.collections)
            routes = None if spec.routes is None else frozenset(spec.routes)
            entries.append((spec.sha256.encode("ascii"), Caller(spec.name, collections, routes, spec.weight)))
        self._entries = entries
        self.names = [caller.name for _, caller in entries]
        self.weights = {caller.name: caller.weight for _, caller in entries}

    @property
    def open(self) -> bool:
        """No key configured: every request is let in as "anonymous"."""
        return not self._entries

    def identify(self, authorization: str) -> Caller | None:
        """The key of an `Authorization: Bearer <key>` header; None for a missing or wrong key."""
        if self.open:
            return OPEN
        scheme, _, token = authorization.partition(" ")
        presented = digest(token.strip())
        found: Caller | None = None
        for configured, caller in self._entries:  # every entry, no early exit
            if hmac.compare_digest(presented, configured):
                found = caller
        return found if scheme.lower() == "bearer" else None
