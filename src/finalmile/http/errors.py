"""One mapping from errors to JSON bodies: `{"error": "...", "detail": ...}` for every route, raw or FastAPI."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from finalmile.errors import ERROR_HEADER, FinalmileError


class ErrorBody(BaseModel):
    """Every error answer: a message that names the field and the problem, and structured detail."""

    error: str
    detail: Any = None


def error_body(exc: FinalmileError) -> bytes:
    try:
        return orjson.dumps(exc.to_dict(), default=str)
    except TypeError:  # e.g. an integer wider than 64 bits echoed from the request
        return json.dumps(exc.to_dict(), default=str).encode()


def openai_error_body(status: int, message: str, detail: Any = None) -> bytes:
    """The OpenAI API's error shape, for the `/v1` surface: the official client raises its own classes from it."""
    fields = detail if isinstance(detail, dict) else {}
    kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    code = fields.get("code") or {401: "invalid_api_key", 404: "model_not_found"}.get(status)
    return orjson.dumps({"error": {"message": message, "type": kind, "param": fields.get("field"), "code": code}})


def _openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def challenge(exc: FinalmileError) -> dict[str, str]:
    """The error's class, and for a 401 the scheme it wants (RFC 9110), so clients know to send a bearer token."""
    headers = {ERROR_HEADER: type(exc).__name__}
    if exc.status_code == 401:
        headers["www-authenticate"] = 'Bearer realm="finalmile"'
    return headers


def add_error_handlers(app: FastAPI) -> None:
    """Our errors keep their status and message; FastAPI's own validation errors name every field at fault."""

    @app.exception_handler(FinalmileError)
    async def _finalmile_error(request: Request, exc: FinalmileError) -> Response:
        body = openai_error_body(exc.status_code, exc.message, exc.detail) if _openai(request) else error_body(exc)
        return Response(body, status_code=exc.status_code, media_type="application/json", headers=challenge(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Starlette's and FastAPI's own refusals (no such route, method not allowed, a body that cannot be parsed)
        in the same shape as ours; a body too deeply nested for Python's JSON parser is said so."""
        message = str(exc.detail)
        if isinstance(exc.__cause__, RecursionError):
            message = "body: JSON nested too deeply to parse"
        elif exc.__cause__ is not None:
            message = f"body: cannot be parsed: {exc.__cause__}"
        if _openai(request):
            body = openai_error_body(exc.status_code, message)
            return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")
        return JSONResponse({"error": message, "detail": None}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(problems), "detail": {"problems": problems}}, 422)


OPENAI_ERROR_BODY = {
    "title": "OpenAIErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""The error shape of the `/v1` surface (`openai_error_body`), as the OpenAI API documents it."""


def _error(description: str, body: str = "ErrorBody") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
    }


def document_errors(app: FastAPI) -> None:
    """The OpenAPI document describes the error bodies the handlers really send (not FastAPI's own 422 shape)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ErrorBody"] = ErrorBody.model_json_schema()
            components["OpenAIErrorBody"] = OPENAI_ERROR_BODY
            for route, path in schema.get("paths", {}).items():
                body = "OpenAIErrorBody" if route.startswith("/v1/") else "ErrorBody"
                for operation in path.values():
                    answers = operation.get("responses", {})
                    security = "401" if operation.get("security") else None
                    if security:
                        answers["401"] = _error("No token, or one that is unknown, expired or revoked", body)
                        answers["403"] = _error("The token's role does not allow this", body)
                    # V2's inference and the OpenAI surface answer a bad request 400, as their protocols say
                    v2 = route.startswith("/v2/") and route.endswith("/infer")
                    invalid = "400" if v2 or route.startswith("/v1/") else "422"
                    answers[invalid] = _error("The request is invalid: the message names the field", body)
                    if route.startswith("/v1/"):  # an unknown model, or one that exists but is not deployed
                        answers["404"] = _error("No such model (pipeline)", body)
                        answers["503"] = _error("The model exists but is not deployed", body)
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
