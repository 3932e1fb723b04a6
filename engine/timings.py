"""Per-request timings a backend reports back to the HTTP layer (the `Server-Timing` header).

The HTTP wrapper starts a fresh record for each request (`start`); code below it, however deep
in the request's task, adds to it (`record`), e.g. the time a request waited for its model to be
loaded by a multiplexed replica. A ContextVar carries it: each request's task sees its own, and
tasks it spawns share the same record object.
"""

from __future__ import annotations

from contextvars import ContextVar

_TIMINGS: ContextVar[dict[str, float] | None] = ContextVar("qm_request_timings", default=None)


def start() -> dict[str, float]:
    """A new, empty record for the current request (its task and the tasks it starts)."""
    record_: dict[str, float] = {}
    _TIMINGS.set(record_)
    return record_


def record(name: str, milliseconds: float) -> None:
    """Add `milliseconds` under `name` to the current request's record (nothing outside a request)."""
    current = _TIMINGS.get()
    if current is not None:
        current[name] = current.get(name, 0.0) + milliseconds


def server_timing(timings: dict[str, float]) -> str:
    """The `Server-Timing` header value (W3C): `model-load;dur=812.4, ...`."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in timings.items())
