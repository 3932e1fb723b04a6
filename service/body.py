"""Reading a request body safely: size cap, read deadline, strict JSON, bounded nesting, valid Unicode.

Everything a client can get wrong about the bytes it sends ends here as a 400 / 408 / 413 with
the one error shape, before any model work or any in-flight slot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from service.errors import BodyTooLarge, MalformedBody, RequestTimeout

# No request of ours nests deeper than 3 (object -> list -> list of ids); 32 leaves room for
# clients that add their own fields, and stops a `[[[[...` body long before recursion limits.
MAX_DEPTH = 32


async def read_body(
    chunks: AsyncIterator[bytes], declared_length: str | None, limit: int, timeout_s: float
) -> bytes:
    """All body bytes, refusing more than `limit` bytes or more than `timeout_s` seconds to send them."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge(f"body of {declared_length} bytes exceeds the limit of {limit}", param="body")
    deadline = time.monotonic() + timeout_s
    parts: list[bytes] = []
    size = 0
    iterator = chunks.__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"the request body did not arrive within {timeout_s:g}s", param="body")
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), remaining)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout_s:g}s", param="body"
            ) from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes", param="body")
        parts.append(chunk)
    return b"".join(parts)


def _refuse_constant(name: str) -> Any:
    raise MalformedBody(f"body is not valid JSON: {name} is not a JSON number", param="body")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from bytes: UTF-8, no NaN/Infinity, nesting <= MAX_DEPTH, no lone surrogates."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8 (byte {exc.start})", param="body") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except MalformedBody:
        raise
    except RecursionError:
        raise MalformedBody(f"body nests deeper than {MAX_DEPTH} levels", param="body") from None
    except ValueError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}", param="body") from None
    if not isinstance(data, dict):
        raise MalformedBody("body must be a JSON object", param="body")
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings holding lone UTF-16 surrogates ("\\ud800").

    Iterative, so it cannot recurse; lone surrogates are not text and make tokenizers raise.
    """
    stack: list[tuple[Any, str, int]] = [(data, "body", 1)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MalformedBody(f"body nests deeper than {MAX_DEPTH} levels", param="body")
        if isinstance(value, str):
            if _has_surrogate(value):
                raise MalformedBody(f"{where}: contains a lone surrogate (not valid Unicode)", param=where)
        elif isinstance(value, dict):
            for k, v in value.items():
                if _has_surrogate(k):
                    raise MalformedBody("body: a key contains a lone surrogate", param="body")
                stack.append((v, k if where == "body" else f"{where}.{k}", depth + 1))
        elif isinstance(value, list):
            if value and all(type(v) is int for v in value):
                continue  # token ids: nothing to check, and often long
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
