"""The real app served by uvicorn on a loopback port in a background thread (tests and bench, no Ray)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn

from service.core import EmbedService
from service.http import create_app
from testkit.net import free_port, http_ok
from testkit.waiting import wait_until


@contextlib.contextmanager
def live_server(service: EmbedService, startup_s: float = 20.0) -> Iterator[str]:
    """Serve `service` over real HTTP on 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-live", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped before it answered")
        return http_ok(url + "/health", timeout=1)

    try:
        wait_until(answering, timeout=startup_s, what="the live server's /health", interval=0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
