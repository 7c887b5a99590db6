"""Run the app with uvicorn in a background thread (tests, notebooks): a real HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from .server import uvicorn_options


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` in a thread; yields the base URL (``port=0``: a free port).

    The server has the service's head deadline (:func:`~fcnseg.serve.server.uvicorn_options`).
    It is shut down (and the thread joined) when the block exits.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", **uvicorn_options(app))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fcnseg-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
