"""`/api/v1/connections`: stored connection details, URLs encrypted at rest and shown masked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run


class ConnectionRequest(BaseModel):
    """A new connection: its URL (password included) is encrypted before it is stored."""

    model_config = {"extra": "forbid"}

    name: str = Field(max_length=100)
    type: str = Field(max_length=20)
    url: str = Field(max_length=4000)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["connections"])

    @api.get("/api/v1/connections")
    async def list_connections(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [vars(c) for c in await run(who.services.connections.list)]

    @api.post("/api/v1/connections", status_code=201)
    async def create_connection(body: ConnectionRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        return vars(await run(who.services.create_connection, body.name, body.type, body.url, who.actor))

    @api.delete("/api/v1/connections/{name}")
    async def delete_connection(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.delete_connection, name, who.actor)
        return {"name": name, "status": "deleted"}

    return api
