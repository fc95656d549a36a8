"""`finalmile serve`: one ASGI app on uvicorn (uvloop, httptools), hosting every deployment in the store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from finalmile.client import Client
from finalmile.serving.api import create_management_app
from finalmile.serving.app import FinalmileApp
from finalmile.serving.dataplane import DataPlane

log = logging.getLogger(__name__)
SYNC_INTERVAL_S = 1.0


def create_app(client: Client | None = None) -> FinalmileApp:
    """The server app. With several worker processes each converges on the store's deployments every second."""
    owned = client is None
    client = client or Client()
    dataplane = DataPlane(client._deployments)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, client._deployments.sync)
        # What is alive now (imported libraries, loaded models: ~220,000 objects) lives as long as the server.
        # Frozen out of the cyclic GC, a full collection walks only what was made since: it took 120 ms of the
        # event loop's time (every 10-20 s under load with logging on, whose batches wait up to a second and so
        # reach the oldest generation), and now takes well under a millisecond.
        gc.collect()
        gc.freeze()

        async def converge() -> None:
            while True:
                await asyncio.sleep(SYNC_INTERVAL_S)
                try:
                    await loop.run_in_executor(None, client._deployments.sync)
                except Exception:
                    log.exception("could not read deployments from the store")

        async def monitor() -> None:
            # Several workers may all look; storing a window's result is guarded, so only one records it and acts.
            while True:
                await asyncio.sleep(client.settings.monitor_poll_s)
                try:
                    await loop.run_in_executor(None, client.run_monitors)
                except Exception:
                    log.exception("could not run the monitors")

        tasks = [loop.create_task(converge()), loop.create_task(monitor())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if owned:
                client.close()
            gc.unfreeze()  # so that exit collects them (native bindings report frozen objects as leaked)

    management = create_management_app(client, dataplane)
    management.router.lifespan_context = lifespan
    return FinalmileApp(dataplane, management, client.settings.max_body_bytes)


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run(
        "finalmile.serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
