"""`/api/v1/audit`: every state change, who made it, when, before and after."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["audit"])

    @api.get("/api/v1/audit")
    async def audit(
        target: str | None = Query(None, max_length=400, description="keep targets starting with this"),
        limit: int | None = Query(None, ge=1, le=100_000, description="the most recent this many"),
        who: Caller = Depends(guards.read),
    ) -> list[dict[str, Any]]:
        """Changes oldest first: upload, alias, version, deploy, undeploy, and a monitor's rollback or route."""
        entries = await run(who.services.audit.entries, target, limit)
        return [vars(e) | {"at": e.at.isoformat()} for e in entries]

    return api
