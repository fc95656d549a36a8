from __future__ import annotations

import asyncio
import gc

from finalmile import Client
from finalmile.http.server import create_app


def test_the_server_freezes_what_lives_as_long_as_it_out_of_the_gc(client: Client) -> None:
    app = create_app(client.services, auth=False)

    async def serve() -> int:
        async with app.management.router.lifespan_context(app.management):
            return gc.get_freeze_count()

    assert asyncio.run(serve()) > 10_000  # libraries and models: a full collection no longer walks them
    assert gc.get_freeze_count() == 0  # given back at shutdown, so that exit collects them
