"""`/api/v1/models/{ref}/explain` and `/api/v1/pipelines/{name}/explanations`, `/importance`: why rows were scored
as they were, computed on demand (never on the inference path)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run, table_answer
from finalmile.runtimes.explain import MAX_ROWS


class ExplainRequest(BaseModel):
    """Rows to explain as records, and optionally the rows that stand for "typical" (the background)."""

    model_config = {"extra": "forbid"}

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS)
    background: list[dict[str, Any]] | None = Field(default=None, max_length=10_000)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["explanations"])

    @api.post("/api/v1/models/{ref}/explain")
    async def explain_model(
        request: Request, ref: str, body: ExplainRequest, who: Caller = Depends(guards.read)
    ) -> Response:
        """Each feature's contribution to each row's output, by model version `ref` (`fraud:3`, `fraud@champion`)."""
        return table_answer(request, await run(who.services.explain_model, ref, body.rows, body.background))

    @api.get("/api/v1/pipelines/{name}/explanations/{request_id}")
    async def explain(request: Request, name: str, request_id: str, who: Caller = Depends(guards.read)) -> Response:
        """A logged request's rows explained with the model version that scored them."""
        return table_answer(request, await run(who.services.explain, name, request_id))

    @api.get("/api/v1/pipelines/{name}/importance")
    async def importance(
        request: Request,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        window: str = Query("1h", max_length=40),
        rows: int = Query(200, ge=1, le=MAX_ROWS),
        who: Caller = Depends(guards.read),
    ) -> Response:
        """Per window, each feature's mean absolute contribution over a sample of the window's logged rows."""
        return table_answer(request, await run(who.services.importance, name, start, end, window, rows))

    return api
