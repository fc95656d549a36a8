"""`/api/v1/pipelines/{name}/replays` and `/api/v1/replays`: logged traffic through a candidate, and the results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run, table_answer


class ReplayRequest(BaseModel):
    """A replay: the candidate (a version number, a model reference or a definition), the range and the sample."""

    model_config = {"extra": "forbid"}

    candidate: int | str | dict[str, Any]
    start: datetime | None = None
    end: datetime | None = None
    sample: float | None = Field(default=None, gt=0, le=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    segment_by: str | None = Field(default=None, max_length=200)
    label: str | None = Field(default=None, max_length=200)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["replays"])

    @api.post("/api/v1/pipelines/{name}/replays", status_code=201)
    async def replay(name: str, body: ReplayRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Run the pipeline's logged inputs through the candidate and compare with what was served; answers when
        it has run, with the summary."""
        fields = body.model_dump()
        record = await run(who.services.replay, name, actor=who.actor, progress=False, **fields)
        return vars(record)

    @api.get("/api/v1/replays")
    async def replays(pipeline: str | None = None, who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [vars(r) for r in await run(who.services.replays.all, pipeline)]

    @api.get("/api/v1/replays/{replay_id}")
    async def replay_run(replay_id: int, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return vars(await run(who.services.replays.get, replay_id))

    @api.get("/api/v1/replays/{replay_id}/rows")
    async def replay_rows(
        request: Request,
        replay_id: int,
        limit: int | None = Query(1000, ge=1, le=10_000_000),
        who: Caller = Depends(guards.read),
    ) -> Response:
        """Per-row results, where the arms differ most first: JSON records, or Arrow IPC when asked."""
        table = await run(who.services.replay_rows, replay_id, limit)
        return table_answer(request, table)

    return api
