"""`/api/v1/query`, a pipeline's log rows, and its late ground truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from finalmile.errors import InvalidInputError
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import json_table, run, table_answer
from finalmile.logs.ground_truth import add_ground_truth
from finalmile.logs.journal import set_aside_files
from finalmile.logs.saved import MAX_SQL_CHARS


class QueryRequest(BaseModel):
    """One read-only SQL statement over the documented views."""

    model_config = {"extra": "forbid"}

    sql: str = Field(max_length=MAX_SQL_CHARS)


class GroundTruthRequest(BaseModel):
    """Labels keyed by `request_id` or by a logged input column."""

    model_config = {"extra": "forbid"}

    key: str = "request_id"
    rows: list[dict[str, Any]] = Field(min_length=1)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["logs"])

    @api.post("/api/v1/query")
    async def query(body: QueryRequest, who: Caller = Depends(guards.read)) -> Response:
        encoded: Response = await run(who.services.reader.query, body.sql, json_table)
        return encoded

    @api.get("/api/v1/health/logs")
    async def log_health(who: Caller = Depends(guards.read)) -> dict[str, Any]:
        """Inference-log files that failed their check and are kept aside (`logs/_corrupt/`): none is healthy."""
        kept = await run(set_aside_files, who.services.logs.root)
        return {"healthy": not kept, "set_aside": kept}

    @api.get("/api/v1/pipelines/{name}/logs")
    async def logs(
        request: Request,
        name: str,
        limit: int | None = Query(100, ge=1, le=10_000_000),
        version: int | None = None,
        variant: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: str | None = None,
        who: Caller = Depends(guards.read),
    ) -> Response:
        """Log rows, newest first, from `start` (ISO 8601, inclusive) to `end` (exclusive), optionally only the
        comma-separated `columns`: JSON records, or an Arrow IPC stream when the request accepts one."""
        chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        table = await run(who.services.reader.pipeline_logs, name, start, end, limit, version, variant, chosen)
        return table_answer(request, table)

    @api.post("/api/v1/pipelines/{name}/ground_truth")
    async def ground_truth(name: str, body: GroundTruthRequest, who: Caller = Depends(guards.write)) -> dict[str, int]:
        try:
            rows = pa.Table.from_pylist(body.rows)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:  # Overflow: an integer past 64 bits
            raise InvalidInputError(f"rows: the labels do not form a table: {exc}") from None
        receipt = await run(add_ground_truth, who.services.reader, name, rows, body.key)
        return vars(receipt)

    @api.get("/api/v1/queries")
    async def saved_queries(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        """The workspace's saved queries (the dashboard's SQL page lists the same)."""
        return [vars(q) | {"created_at": q.created_at.isoformat()} for q in await run(who.services.queries.all)]

    @api.put("/api/v1/queries/{name}")
    async def save_query(name: str, body: QueryRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        saved = await run(who.services.save_query, name, body.sql, who.actor)
        return vars(saved) | {"created_at": saved.created_at.isoformat()}

    @api.delete("/api/v1/queries/{name}")
    async def delete_query(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.delete_query, name, who.actor)
        return {"name": name, "status": "deleted"}

    return api
