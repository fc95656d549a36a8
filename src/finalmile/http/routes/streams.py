"""`/api/v1/streams`: a deployed pipeline bound to a broker source and sink, run by every server process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run
from finalmile.streaming.config import StreamConfig


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["streams"])

    @api.get("/api/v1/streams")
    async def list_streams(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        """Every stream with the status its runner last reported (lag, messages/s, failures, dead letters)."""
        return [r.payload() for r in await run(who.services.streams.all)]

    @api.post("/api/v1/streams", status_code=201)
    async def apply_stream(body: StreamConfig, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Create or replace a stream (same name: replaced, and its runners restart on the new definition)."""
        return (await run(who.services.apply_stream, body, who.actor)).payload()

    @api.get("/api/v1/streams/{name}")
    async def stream_status(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return (await run(who.services.streams.get, name)).payload()

    @api.post("/api/v1/streams/{name}/pause")
    async def pause_stream(name: str, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        return (await run(who.services.pause_stream, name, True, who.actor)).payload()

    @api.post("/api/v1/streams/{name}/resume")
    async def resume_stream(name: str, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        return (await run(who.services.pause_stream, name, False, who.actor)).payload()

    @api.delete("/api/v1/streams/{name}")
    async def delete_stream(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.delete_stream, name, who.actor)
        return {"name": name, "status": "deleted"}

    return api
