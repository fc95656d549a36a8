"""The OpenAI-compatible surface at `/v1`: chat and text completions (streamed as server-sent events when asked),
embeddings and the model list. `model` names a deployed pipeline of the caller's workspace; a finalmile token is the
API key, and inferring needs the `read` permission as every inference route does. Errors come in OpenAI's shape
(`http/errors.py`), so the official `openai` client raises its own exception classes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from finalmile.backends.base import InferRequest
from finalmile.errors import FinalmileError
from finalmile.http.app import provenance_headers
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes.v2 import inline_refs
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.spec import PipelineSpec
from finalmile.runtimes.generation import GENERATION, SINKS
from finalmile.services import Services
from finalmile.serving import openai as oai
from finalmile.serving.dataplane import DataPlane

_PROTOCOL = "openai"


def _json(body: dict[str, Any], result: RequestResult) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=provenance_headers(result))


def _doc(model: type[BaseModel]) -> dict[str, Any]:
    """The request body in the OpenAPI document (parsed by `serving.openai.parse`, for OpenAI-shaped errors)."""
    schema = inline_refs(model.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class _Streaming:
    """Which deployed pipeline versions may stream text as it is decoded (see `serving.openai.streams_text`),
    worked out once per version from its steps and its models' tasks."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, str, int], bool] = {}

    def live(self, services: Services, name: str, version: int) -> bool:
        key = (id(services), name, version)
        if key not in self._known:
            spec = PipelineSpec.model_validate(services.pipelines.get_version(name, version).spec)

            def generative(ref: str) -> bool:
                return services.metadata.get_by_ref(ref).task == GENERATION

            if len(self._known) > 256:
                self._known.clear()
            self._known[key] = oai.streams_text(list(spec.steps), generative)
        return self._known[key]


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["openai"])
    streaming = _Streaming()

    async def infer(dataplane: DataPlane, name: str, table: pa.Table, column: str) -> RequestResult:
        """One call's rows through the data plane, counted under this protocol; `column` is the input the pipeline
        must take (`prompt`, `messages` or `text`)."""
        target = dataplane.serving(name)
        oai.require_input(name, target.input_schema, column)
        try:
            result = await dataplane.infer(InferRequest(name, table), target)
        except FinalmileError as exc:
            dataplane.answered(name, _PROTOCOL, exc.status_code)
            raise
        dataplane.answered(name, _PROTOCOL, 200)
        return result

    @api.get("/v1/models")
    async def list_models(who: Caller = Depends(guards.read)) -> dict[str, Any]:
        deployed = who.services.dataplane.backend.deployed()
        return {"object": "list", "data": [_model(name) for name in sorted(deployed)]}

    @api.get("/v1/models/{model}")
    async def get_model(model: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        who.services.dataplane.serving(model)
        return _model(model)

    async def generate(who: Caller, call: Any, rows: list[dict[str, Any]], kind: str) -> Response:
        """A chat (`kind` chat) or text completion, streamed or answered whole."""
        if call.stream:
            usage = call.stream_options is not None and call.stream_options.include_usage
            return await stream(who, call.model, rows, kind, usage)
        result = await infer(who.services.dataplane, call.model, oai.prompt_table(rows), oai.prompt_column(rows))
        return _json(oai.answer(kind, call.model, result, oai.check_generative(call.model, result)), result)

    @api.post("/v1/chat/completions", openapi_extra=_doc(oai.ChatRequest))
    async def chat(request: Request, who: Caller = Depends(guards.read)) -> Response:
        call: oai.ChatRequest = oai.parse(oai.ChatRequest, await request.body())
        return await generate(who, call, [call.rows()], "chat")

    @api.post("/v1/completions", openapi_extra=_doc(oai.CompletionRequest))
    async def completions(request: Request, who: Caller = Depends(guards.read)) -> Response:
        call: oai.CompletionRequest = oai.parse(oai.CompletionRequest, await request.body())
        return await generate(who, call, oai.completion_rows(call), "text")

    @api.post("/v1/embeddings", openapi_extra=_doc(oai.EmbeddingRequest))
    async def embeddings(request: Request, who: Caller = Depends(guards.read)) -> Response:
        call: oai.EmbeddingRequest = oai.parse(oai.EmbeddingRequest, await request.body())
        result = await infer(who.services.dataplane, call.model, pa.table({"text": call.texts()}), "text")
        return _json(oai.embedding_answer(call.model, result, call.encoding_format), result)

    async def stream(who: Caller, name: str, rows: list[dict[str, Any]], kind: str, usage: bool) -> Response:
        """Text goes out as the engine decodes it where nothing after the model changes it; otherwise the checked
        answer goes out whole. Whatever happens before the first piece (a prompt past the context length, an
        unknown model) is an ordinary error answer, not a broken stream."""
        dataplane = who.services.dataplane
        target = dataplane.serving(name)
        sink = uuid.uuid4().hex
        pieces: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        if streaming.live(who.services, name, target.version):

            def push(text: str) -> None:
                loop.call_soon_threadsafe(pieces.put_nowait, text)

            SINKS.open(sink, push)
            rows[0]["stream_id"] = [sink]
        inference = infer(dataplane, name, oai.prompt_table(rows), oai.prompt_column(rows))
        done: asyncio.Future[Any] = asyncio.ensure_future(inference)
        first: asyncio.Future[Any] = asyncio.ensure_future(pieces.get())
        try:
            await asyncio.wait({done, first}, return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                oai.check_generative(name, done.result())  # raises the error answer
        except BaseException:
            SINKS.close(sink)
            first.cancel()
            raise

        async def events() -> AsyncIterator[bytes]:
            sent, request_id = "", uuid.uuid4().hex
            try:
                yield oai.chunk(kind, request_id, name, None, None, first=True)
                waiting: asyncio.Future[Any] = first
                while True:
                    await asyncio.wait({done, waiting}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiting.done():
                        break
                    text = waiting.result()
                    sent += text
                    yield oai.chunk(kind, request_id, name, text, None, first=False)
                    waiting = asyncio.ensure_future(pieces.get())
                waiting.cancel()
                while not pieces.empty():  # what the engine pushed before the answer came back
                    text = pieces.get_nowait()
                    sent += text
                    yield oai.chunk(kind, request_id, name, text, None, first=False)
                try:
                    answer = oai.check_generative(name, done.result())[0]
                except FinalmileError as exc:
                    yield oai.event({"error": {"message": exc.message, "type": "invalid_request_error"}})
                    return
                final = answer["completion"] or ""
                rest = final[len(sent) :] if final.startswith(sent) else final
                yield oai.chunk(kind, request_id, name, rest or None, answer["finish_reason"], first=False)
                if usage:
                    yield oai.usage_chunk(kind, request_id, name, [answer])
                yield oai.DONE
            finally:
                SINKS.close(sink)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    return api


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "finalmile"}
