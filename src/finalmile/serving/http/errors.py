"""One mapping from errors to JSON bodies: `{"error": "...", "detail": ...}` for every route, raw or FastAPI."""

from __future__ import annotations

import json

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from finalmile.errors import FinalmileError


def error_body(exc: FinalmileError) -> bytes:
    try:
        return orjson.dumps(exc.to_dict(), default=str)
    except TypeError:  # e.g. an integer wider than 64 bits echoed from the request
        return json.dumps(exc.to_dict(), default=str).encode()


def add_error_handlers(app: FastAPI) -> None:
    """Our errors keep their status and message; FastAPI's own validation errors name every field at fault."""

    @app.exception_handler(FinalmileError)
    async def _finalmile_error(_: Request, exc: FinalmileError) -> Response:
        return Response(error_body(exc), status_code=exc.status_code, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(problems), "detail": {"problems": problems}}, 422)
