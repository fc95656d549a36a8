"""finalmile's ASGI app called directly, without a socket or a load generator: what the in-process benchmarks
(`bench/tracing.py --in-process`, `bench/one_row_inprocess.py`) share. Their child processes import it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


class DirectApp:
    """The server's app (`FINALMILE_HOME`'s store) with its lifespan started, called with one POST of `body` to
    `path` carrying `token`; every answer's status is kept, so a run can check that all were 200."""

    def __init__(self, body: bytes, path: str, token: str) -> None:
        from finalmile.http.server import create_app

        self.app = create_app(background=False)
        self.body = body
        headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode()),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        self.scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
        self.statuses: list[int] = []
        self._lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._life: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.statuses.append(message["status"])

    async def post(self) -> None:
        await self.app(dict(self.scope), self._receive, self._send)

    async def start(self) -> None:
        sent: list[dict[str, Any]] = []

        async def sink(message: dict[str, Any]) -> None:
            sent.append(message)

        await self._lifespan.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self._life = asyncio.create_task(self.app.management(scope, self._lifespan.get, sink))
        while not sent:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert set(self.statuses) == {200}, set(self.statuses)
        await self._lifespan.put({"type": "lifespan.shutdown"})
        if self._life is not None:
            await self._life


def deployed_forest(home: Path, X: Any, y: Any, sample_rows: int = 500) -> str:
    """A store at `home` serving the anchor forest (`runtimes.anchor_forest`) as pipeline `forest`, and an owner's
    token for it."""
    from runtimes import anchor_forest

    from finalmile import Client

    with Client(home=home) as client:
        client.upload_model("forest", anchor_forest(X, y), sample=X.head(sample_rows))
        client.build_pipeline("forest").add_model_step("forest:1").deploy()
        _, token = client.services.init_access("bench")
    return str(token)
