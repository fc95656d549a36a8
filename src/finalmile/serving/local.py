"""A server in a background thread of this process, for the demo and notebooks (`finalmile serve` for production)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from finalmile.client import Client
from finalmile.errors import FinalmileError


@contextmanager
def running_server(client: Client, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve `client`'s deployments until the block ends; yields the base URL."""
    import uvicorn

    from finalmile.serving.server import create_app

    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
    config = uvicorn.Config(
        create_app(client),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="httptools",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="finalmile-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise FinalmileError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
