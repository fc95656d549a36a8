"""The SQL page: a query box over the documented views (the API's sandbox), a table, CSV, a one-click chart, and
the workspace's saved queries."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from finalmile.arrow.text import csv_bytes
from finalmile.dashboard.actions import back, press
from finalmile.dashboard.guard import PageGuards, Visitor
from finalmile.dashboard.render import render
from finalmile.errors import FinalmileError
from finalmile.logs.saved import MAX_SQL_CHARS

SHOWN_ROWS = 500
EXAMPLE = (
    "SELECT date_trunc('hour', time) AS hour, pipeline, count(*) AS rows, avg(latency_ms) AS mean_latency_ms\n"
    "FROM logs GROUP BY ALL ORDER BY hour"
)


def chart_of(table: pa.Table) -> dict[str, Any] | None:
    """A line over time when the first column is a time and the others numbers; bars by group when it is text."""
    if table.num_columns < 2 or table.num_rows == 0:
        return None
    first = table.schema.field(0).type
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    if pa.types.is_timestamp(first) or pa.types.is_date(first):
        seconds = table.column(0).cast(pa.timestamp("s")).cast(pa.int64()).to_pylist()
        series = {n: table.column(n).to_pylist() for n in numeric if n != table.column_names[0]}
        return {"kind": "time", "t": seconds, "series": series, "y_label": ", ".join(series)} if series else None
    if pa.types.is_string(first) or pa.types.is_large_string(first) or pa.types.is_integer(first):
        values = [n for n in numeric if n != table.column_names[0]]
        if not values or table.num_rows > 60:
            return None
        labels = [str(v) for v in table.column(0).to_pylist()]
        return {"kind": "bars", "labels": labels, "series": {values[0]: table.column(values[0]).to_pylist()}}
    return None


def result_of(visitor: Visitor, sql: str) -> dict[str, Any]:
    """What the page shows of a query, made within the query's time limit."""
    return visitor.services.reader.query(sql, lambda table: _shown(table, sql))


def _shown(table: pa.Table, sql: str) -> dict[str, Any]:
    shown = table.slice(0, SHOWN_ROWS)
    return {
        "columns": table.column_names,
        "rows": [list(r.values()) for r in shown.to_pylist()],
        "total": table.num_rows,
        "chart": chart_of(table),
        "sql": sql,
    }


def router(guards: PageGuards) -> APIRouter:
    page = APIRouter(include_in_schema=False)

    @page.get("/ui/sql")
    async def sql_page(
        q: str | None = Query(None, max_length=100, description="a saved query to open"),
        visitor: Visitor = Depends(guards.read),
    ) -> HTMLResponse:
        saved = await asyncio.get_running_loop().run_in_executor(None, visitor.services.queries.all)
        chosen = next((s for s in saved if s.name == q), None)
        return render("sql.html", visitor, saved=saved, sql=chosen.sql if chosen else EXAMPLE, name=q or "")

    @page.post("/ui/sql")
    async def run_sql(
        request: Request, sql: str = Form(..., max_length=MAX_SQL_CHARS), visitor: Visitor = Depends(guards.read)
    ) -> HTMLResponse:
        fragment = request.headers.get("hx-request") == "true"
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, result_of, visitor, sql)
        except FinalmileError as exc:  # htmx swaps only a 2xx in: the fragment says what is wrong with the SQL
            status = 200 if fragment else exc.status_code
            return render("_sql_result.html", visitor, status=status, error=exc.message, sql=sql)
        return render("_sql_result.html" if fragment else "sql.html", visitor, saved=[], name="", **result)

    @page.get("/ui/sql/csv")
    async def sql_csv(
        sql: str = Query(..., max_length=MAX_SQL_CHARS), visitor: Visitor = Depends(guards.read)
    ) -> Response:
        body = await asyncio.get_running_loop().run_in_executor(None, visitor.services.reader.query, sql, csv_bytes)
        headers = {"content-disposition": 'attachment; filename="finalmile-query.csv"', "cache-control": "no-store"}
        return Response(body, media_type="text/csv", headers=headers)

    @page.post("/ui/sql/save")
    async def save(
        name: str = Form(..., max_length=100),
        sql: str = Form(..., max_length=MAX_SQL_CHARS),
        visitor: Visitor = Depends(guards.write),
    ) -> Response:
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, visitor.services.save_query, name, sql, visitor.actor
            )
        except FinalmileError as exc:
            return back("/ui/sql", error=exc.message)
        return back("/ui/sql", done=f"saved query {name}", q=name)

    @page.post("/ui/sql/delete")
    async def delete(name: str = Form(..., max_length=100), visitor: Visitor = Depends(guards.write)) -> Response:
        def run() -> str:
            visitor.services.delete_query(name, visitor.actor)
            return f"deleted query {name}"

        return await press("/ui/sql", run)

    return page
