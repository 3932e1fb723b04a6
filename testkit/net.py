"""Loopback ports for servers started by tests and benchmarks, and a probe of whether one answers."""

from __future__ import annotations

import http.client
import socket
import urllib.request

# Straight to the server: a loopback URL never goes through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """Whether a GET of `url` answers 200 now: False while the server is not listening yet (refused,
    reset, timed out) or answers another status. A condition for testkit.waiting.wait_until."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # urllib's HTTPError (a non-2xx status) is an OSError
        return False
