"""`inference.GRPCInferenceService` (the protocol's messages are in `serving/grpc/`) on the data plane HTTP uses:
the same authentication (`authorization` metadata), permissions, batcher, log rows and request metrics, and the
same tensor checks (`codecs.v2`), so a request means the same whether it came as JSON, binary or protobuf.

Served by `grpc.aio` on an event loop of its own, in a thread of its own (`GrpcServer`); each call's inference is
handed to the HTTP server's loop, so both transports share one batcher per deployment. Calls cross between the two
loops in groups (`Courier`): every call that arrived while the HTTP loop was busy reaches it in one wake-up and so
joins one batch, where one wake-up per call made batches of about two requests (one model run per two calls).
Inputs come as `raw_input_contents` (every input, as the protocol asks) or as typed `contents`; outputs always go
back as `raw_output_contents`, which clients read without a per-value copy.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import grpc

from finalmile.access.roles import Permission
from finalmile.backends.base import InferRequest
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.http.app import provenance_headers
from finalmile.http.auth import Authenticator, services_of
from finalmile.pipelines.loaded import RequestResult
from finalmile.services import Services
from finalmile.serving.codecs.v2 import V2Tensor, output_tensors, raw_contents, tensors_table, version_number
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.grpc import open_inference_pb2 as pb
from finalmile.serving.grpc.open_inference_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

log = logging.getLogger(__name__)

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status of each HTTP status finalmile's errors carry (anything else: INTERNAL)."""

CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The `InferTensorContents` field that holds each datatype's typed values (FP16 has none: raw only)."""


def request_tensors(request: pb.ModelInferRequest) -> tuple[list[V2Tensor], bytes]:
    """The request's inputs as the V2 JSON body would give them, and their raw data in order."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; the protocol sends one per "
            "input, or none and every input's contents",
            {"field": "raw_input_contents"},
        )
    tensors: list[V2Tensor] = []
    for i, tensor in enumerate(request.inputs):
        described = V2Tensor(tensor.name, tensor.datatype, list(tensor.shape))
        if raw:
            described.parameters = {"binary_data_size": len(raw[i])}
        else:
            field = CONTENTS.get(tensor.datatype)
            if field is not None:  # an unknown datatype is named by the shared checks
                described.data = list(getattr(tensor.contents, field))
        tensors.append(described)
    return tensors, b"".join(raw)


def infer_response(result: RequestResult, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    requested = [o.name for o in request.outputs] or None
    response = pb.ModelInferResponse(model_name=result.pipeline, model_version=str(result.version), id=request.id)
    for name, datatype, shape, values, _ in output_tensors(result, requested):
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw_contents(values))
    for key, value in provenance_headers(result).items():
        response.parameters[key].string_param = value
    return response


class Courier:
    """Hands callables to an event loop running in another thread, all those sent since its last wake-up in one
    `call_soon_threadsafe`, run there in the order sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def send(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._waiting.append(work)
            first = len(self._waiting) == 1
        if first:
            self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for work in waiting:
            work()


def _settle(future: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    """`future` (on the gRPC loop) as `task` (on the HTTP loop) ended."""
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif (exc := task.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(task.result())


class InferenceService(GRPCInferenceServiceServicer):
    """The protocol's six calls over the root services (and any workspace a caller's token names)."""

    def __init__(self, root: Services, auth: Authenticator, main: asyncio.AbstractEventLoop) -> None:
        self.root = root
        self.auth = auth
        self.main = main
        """The HTTP server's loop: inference runs there, batched with HTTP's requests."""
        self._to_main = Courier(main)
        self._back: Courier | None = None
        """To the gRPC loop (made on it, at the first call)."""

    async def _on_main(self, work: Coroutine[Any, Any, RequestResult]) -> RequestResult:
        """Run `work` on the HTTP server's loop and wait for it here (cancelled with this call)."""
        loop = asyncio.get_running_loop()
        back = self._back if self._back is not None else Courier(loop)
        self._back = back
        answer: asyncio.Future[RequestResult] = loop.create_future()

        def start() -> None:
            task = self.main.create_task(work)
            task.add_done_callback(lambda ended: back.send(partial(_settle, answer, ended)))

            def abandoned(_: Any) -> None:  # the call was cancelled (its client went away): so is its inference
                if answer.cancelled():
                    self.main.call_soon_threadsafe(task.cancel)

            answer.add_done_callback(abandoned)

        self._to_main.send(start)
        return await answer

    async def _dataplane(self, context: grpc.aio.ServicerContext, permission: Permission) -> DataPlane:
        who = await self.auth.authorize(_authorization(context), permission)
        return (await services_of(self.root, who)).dataplane

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.root.dataplane.live())

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.root.dataplane.ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.root.dataplane.server_metadata())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        try:
            dataplane = await self._dataplane(context, "read")
            return pb.ModelReadyResponse(ready=dataplane.ready(request.name, version_number(request.version)))
        except FinalmileError as exc:
            await _abort(context, exc)
            raise  # not reached: abort raises

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        try:
            dataplane = await self._dataplane(context, "read")
            meta = dataplane.model_metadata(request.name, version_number(request.version))
        except FinalmileError as exc:
            await _abort(context, exc)
            raise
        response = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for side in ("inputs", "outputs"):
            for tensor in meta[side]:
                getattr(response, side).add(**tensor)
        return response

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        dataplane, status = self.root.dataplane, 200
        try:
            dataplane = await self._dataplane(context, "read")  # inference: as HTTP's RAW_ROUTES
            number = version_number(request.model_version)
            target = dataplane.serving(request.model_name, number)  # an unknown pipeline: NOT_FOUND, whatever else
            table = tensors_table(*request_tensors(request))
            inference = dataplane.infer(InferRequest(request.model_name, table, number), target)
            result = await self._on_main(inference)
            return infer_response(result, request)
        except FinalmileError as exc:
            status = exc.status_code
            await _abort(context, exc)
            raise
        except Exception as exc:  # a bug of ours: say so, keep serving
            if isinstance(exc, grpc.aio.AbortError):
                raise
            status = 500
            log.exception("gRPC inference failed for %s", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            raise
        finally:
            dataplane.answered(request.model_name, "grpc", status)


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's `authorization` metadata (the last text value, as HTTP's headers read), None where it sent none."""
    found = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            found = value
    return found


async def _abort(context: grpc.aio.ServicerContext, exc: FinalmileError) -> None:
    await context.abort(STATUS.get(exc.status_code, grpc.StatusCode.INTERNAL), exc.message)


SWITCH_INTERVAL_S = 0.0005
"""How long a thread holds the GIL while another waits for it, while the gRPC server runs (Python's default: 5 ms).
Its thread and the HTTP loop's hand every call to each other; each hand-off waited for the holder's interval to
run out: 0.5 ms served 15-20% more gRPC calls a second (`bench/grpc_serving.py`), HTTP's within noise."""


class GrpcServer:
    """`grpc.aio` on an event loop of its own, in a thread of its own; only inference is handed to the HTTP server's
    loop (where the batchers are). On one loop with the models, grpc's completion-queue thread waited for the busy
    loop at every step of a call: 1,600 req/s here, 2,300 with a loop of its own (`bench/grpc_serving.py`)."""

    def __init__(self, root: Services, auth: Authenticator, host: str, port: int) -> None:
        self.root, self.auth, self.host, self.port = root, auth, host, port
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._grace_s = 1.0
        self._switch_s = sys.getswitchinterval()
        self._thread = threading.Thread(target=self._run, name="finalmile-grpc", daemon=True)

    def start(self, main: asyncio.AbstractEventLoop) -> None:
        self._main = main
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            raise self._failed
        if not self._ready.is_set():
            raise OSError(f"gRPC: the server on {self.host}:{self.port} did not start")
        sys.setswitchinterval(min(self._switch_s, SWITCH_INTERVAL_S))

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop serving (calls in flight get `grace_s` to finish) and wait for the thread."""
        self._grace_s = grace_s
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(grace_s + 5)
        sys.setswitchinterval(self._switch_s)

    def _run(self) -> None:
        loop: asyncio.AbstractEventLoop
        try:
            import uvloop  # the HTTP server's loop, where installed (`finalmile serve` runs on it)

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # a port taken: said to whoever started it
            self._failed = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        limit = self.root.settings.max_body_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1)]
        server = grpc.aio.server(options=options)
        add_GRPCInferenceServiceServicer_to_server(InferenceService(self.root, self.auth, self._main), server)
        if not server.add_insecure_port(f"{self.host}:{self.port}"):
            raise OSError(f"gRPC: cannot listen on {self.host}:{self.port}")
        await server.start()
        self._stopping = asyncio.Event()
        self._ready.set()
        await self._stopping.wait()
        await server.stop(self._grace_s)
