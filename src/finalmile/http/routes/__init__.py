"""Management routes, one module per resource; each builds an `APIRouter` over the composition root."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from finalmile.arrow.text import json_ready
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Blocking store or DuckDB work off the event loop (the inference routes never wait behind it)."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def json_frame(frame: Any) -> Response:
    """A pandas DataFrame as JSON records, timestamps in ISO 8601."""
    return Response(frame.to_json(orient="records", date_format="iso"), media_type="application/json")


def table_answer(request: Request, table: Any) -> Response:
    """A table as the request accepts it: an Arrow IPC stream, or JSON records."""
    if ARROW_STREAM in request.headers.get("accept", ""):
        return Response(arrow_codec.encode(table), media_type=ARROW_STREAM)
    return json_table(table)


def json_table(table: Any) -> Response:
    """An Arrow table (a SQL result, log rows) as JSON records: columns JSON cannot hold become text first."""
    return json_frame(json_ready(table).to_pandas())
