"""The one ASGI app. Inference routes are matched directly on the ASGI scope (no framework on the hot path);
everything else — management API, V2 health and metadata, OpenAPI docs — is a FastAPI app behind it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

import finalmile.tracing as tracing
from finalmile.access.roles import Permission
from finalmile.backends.base import InferRequest
from finalmile.errors import FinalmileError, PayloadTooLarge
from finalmile.http.auth import Authenticator, services_of
from finalmile.http.errors import challenge, error_body
from finalmile.pipelines.batch import Route
from finalmile.pipelines.loaded import RequestResult
from finalmile.services import Services
from finalmile.serving.codecs import codec_for
from finalmile.serving.codecs.v2 import version_number
from finalmile.serving.dataplane import DataPlane

log = logging.getLogger(__name__)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

V2_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
RECORDS_INFER = re.compile(r"^/pipelines/([^/]+)/infer$")


class BodyReader:
    """Reads a request body, refusing one over the limit before reading it all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def read(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isascii() and value.isdigit() and int(value) > self.limit:
                raise PayloadTooLarge(f"request body of {int(value)} bytes exceeds the limit of {self.limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def provenance_headers(result: RequestResult) -> dict[str, str]:
    """Which pipeline version, variants and model versions produced the rows (distinct values, in row order)."""
    routes = result.routes
    distinct = (routes[0],) if len(routes) == 1 else tuple(dict.fromkeys(routes))
    key = (result.version, distinct)
    produced = _PRODUCED.get(key)
    if produced is None:  # once per version and set of routes, not once per request
        if len(_PRODUCED) >= _PRODUCED_KEPT:
            _PRODUCED.clear()
        produced = _PRODUCED[key] = _produced(result.version, distinct)
    return {"finalmile-request-id": result.request_id} | produced


def _produced(version: int, routes: tuple[Route, ...]) -> dict[str, str]:
    variants = list(dict.fromkeys(v for v, _ in routes if v is not None))
    models = list(dict.fromkeys(m for _, ms in routes for m in ms))
    headers = {"finalmile-pipeline-version": str(version), "finalmile-model-versions": ",".join(models)}
    if variants:
        headers["finalmile-variants"] = ",".join(variants)
    return headers


_PRODUCED: dict[tuple[int, tuple[Route, ...]], dict[str, str]] = {}
_PRODUCED_KEPT = 1024


class InferenceHandlers:
    """The inference endpoints as one async function over (headers, body): shared by the raw router and FastAPI."""

    async def infer(
        self, route: str, name: str, version: str | None, dataplane: DataPlane, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """`route` is `v2` (Open Inference Protocol) or `records` (pandas records or Arrow, by content type), on
        the data plane of the caller's workspace."""
        number = version_number(version)
        target = dataplane.serving(name, number)  # an unknown pipeline is a 404 whatever the body
        codec = codec_for(route, headers.get("content-type"))
        if tracing.enabled():
            span = tracing.start_request(name, route, headers)
            if span is not None:  # an unsampled request goes the untraced way: nothing to record
                return await self._traced(span, codec, name, number, dataplane, headers, body, target)
        decoded = codec.decode(body, headers)
        result = await dataplane.infer(InferRequest(name, decoded.table, number), target)
        payload, out_headers = codec.encode(result, decoded)
        return 200, payload, out_headers | provenance_headers(result)

    async def _traced(
        self,
        span: Any,
        codec: Any,
        name: str,
        number: int | None,
        dataplane: DataPlane,
        headers: dict[str, str],
        body: bytes,
        target: Any,
    ) -> tuple[int, bytes, dict[str, str]]:
        """The same, under the request's sampled span (its parent the client's `traceparent`), named in the answer."""
        try:
            with tracing.child(span, "decode"):
                decoded = codec.decode(body, headers)
            result = await dataplane.infer(InferRequest(name, decoded.table, number, trace=span), target)
            payload, out_headers = codec.encode(result, decoded)
        except FinalmileError as exc:
            tracing.end_request(span, exc.status_code, {})
            raise
        except Exception:
            tracing.end_request(span, 500, {})
            raise
        answer = out_headers | provenance_headers(result)
        span.set_attribute("finalmile.request_id", result.request_id)
        tracing.end_request(span, 200, answer)
        return 200, payload, answer


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _error_headers(exc: FinalmileError) -> dict[str, str]:
    return {"content-type": "application/json"} | challenge(exc)


_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over a body already read, then listens to the client as before."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class FinalmileApp:
    """ASGI entry point: fast inference routes, `/metrics`, then the management app for everything else."""

    RAW_ROUTES: dict[str, Permission] = {
        "POST /v2/models/{name}/infer": "read",
        "POST /v2/models/{name}/versions/{version}/infer": "read",
        "POST /pipelines/{name}/infer": "read",
        "GET /metrics": "read",
    }
    """The routes answered here, before the management app, and the permission each needs."""

    def __init__(self, root: Services, management: Any, max_body_bytes: int, auth: Authenticator) -> None:
        self.root = root
        self.auth = auth
        self.handlers = InferenceHandlers()
        self.management = management
        self.body = BodyReader(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "POST":
                v2 = V2_INFER.match(path)
                if v2:
                    name, version = v2.group(1), v2.group(2)
                    await self._serve(
                        scope, receive, send, "v2", name, partial(self.handlers.infer, "v2", name, version)
                    )
                    return
                records = RECORDS_INFER.match(path)
                if records:
                    name = records.group(1)
                    await self._serve(
                        scope, receive, send, "records", name, partial(self.handlers.infer, "records", name, None)
                    )
                    return
            elif method == "GET" and path == "/metrics":
                try:  # the caller's workspace's metrics: pipeline names are not another workspace's to see
                    who = await self.auth.authorize(_header(scope, b"authorization"), self.RAW_ROUTES["GET /metrics"])
                    metrics = (await services_of(self.root, who)).metrics
                except FinalmileError as exc:
                    await respond(send, exc.status_code, error_body(exc), _error_headers(exc))
                    return
                await respond(send, 200, metrics.exposition(), {"content-type": "text/plain; version=0.0.4"})
                return
            if method in _WITH_BODY:  # the body limit covers every route: read it bounded, then hand it on
                try:
                    body = await self.body.read(scope, receive)
                except PayloadTooLarge as exc:
                    await respond(send, exc.status_code, error_body(exc), {"content-type": "application/json"})
                    return
                receive = _replay(body, receive)
        await self.management(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        protocol: str,
        name: str,
        handler: Callable[[DataPlane, dict[str, str], bytes], Awaitable[tuple[int, bytes, dict[str, str]]]],
    ) -> None:
        dataplane = self.root.dataplane
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            who = await self.auth.authorize(headers.get("authorization"), "read")  # inference: see RAW_ROUTES
            if who.workspace != self.root.workspace:
                dataplane = (await services_of(self.root, who)).dataplane
            status, body, out_headers = await handler(dataplane, headers, await self.body.read(scope, receive))
        except FinalmileError as exc:
            status, body, out_headers = exc.status_code, error_body(exc), _error_headers(exc)
            if protocol == "v2" and status == 422:  # the protocol's document (and KServe, Triton, MLServer): 400
                status = 400
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: say so, keep serving
            log.exception("inference failed on %s", scope["path"])
            status, body = 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}", "detail": None})
            out_headers = {"content-type": "application/json"}
        dataplane.answered(name, protocol, status)
        await respond(send, status, body, out_headers)
