"""Open Inference Protocol V2: health, server and model metadata, readiness, and the inference routes' documents
(`FinalmileApp` answers inference first, on the raw ASGI scope, with the very same handlers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from finalmile.http.app import InferenceHandlers
from finalmile.http.auth import Caller, Guards
from finalmile.serving.codecs import ARROW_STREAM


class V2Tensor(BaseModel):
    """One input tensor of a V2 request."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    """An output a V2 request asks for by name."""

    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    """The V2 JSON request body (the binary extension appends raw tensors after it)."""

    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


def _infer_doc(schema: dict[str, Any], arrow: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if arrow:
        content[ARROW_STREAM] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Pydantic puts nested models under `$defs`, which mean nothing once embedded in an OpenAPI operation."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


async def _answer(result: tuple[int, bytes, dict[str, str]]) -> Response:
    status, body, headers = result
    media = headers.pop("content-type", "application/json")
    return Response(body, status_code=status, headers=headers, media_type=media)


def router(handlers: InferenceHandlers, guards: Guards) -> APIRouter:
    api = APIRouter()

    @api.get("/v2/health/live", tags=["v2"])
    async def live(who: Caller = Depends(guards.public)) -> dict[str, bool]:
        return {"live": who.services.dataplane.live()}

    @api.get("/v2/health/ready", tags=["v2"])
    async def ready(who: Caller = Depends(guards.public)) -> dict[str, bool]:
        return {"ready": who.services.dataplane.ready()}

    @api.get("/v2", tags=["v2"])
    async def server_metadata(who: Caller = Depends(guards.public)) -> dict[str, Any]:
        return who.services.dataplane.server_metadata()

    @api.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return who.services.dataplane.model_metadata(name)

    @api.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def model_version_metadata(name: str, version: int, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return who.services.dataplane.model_metadata(name, version)

    @api.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_ready(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        who.services.dataplane.serving(name)
        return {"name": name, "ready": True}

    @api.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def model_version_ready(name: str, version: int, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        who.services.dataplane.serving(name, version)
        return {"name": name, "ready": True}

    v2_doc = _infer_doc(inline_refs(V2InferenceRequest.model_json_schema()))
    records_doc = _infer_doc({"type": "array", "minItems": 1, "items": {"type": "object"}}, arrow=True)

    @api.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=v2_doc)
    async def v2_infer(name: str, request: Request, who: Caller = Depends(guards.read)) -> Response:
        return await _answer(
            await handlers.infer("v2", name, None, who.services.dataplane, dict(request.headers), await request.body())
        )

    @api.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=v2_doc)
    async def v2_version_infer(
        name: str, version: str, request: Request, who: Caller = Depends(guards.read)
    ) -> Response:
        return await _answer(
            await handlers.infer(
                "v2", name, version, who.services.dataplane, dict(request.headers), await request.body()
            )
        )

    @api.post("/pipelines/{name}/infer", tags=["inference"], openapi_extra=records_doc)
    async def records_infer(name: str, request: Request, who: Caller = Depends(guards.read)) -> Response:
        body = await request.body()
        return await _answer(
            await handlers.infer("records", name, None, who.services.dataplane, dict(request.headers), body)
        )

    return api
