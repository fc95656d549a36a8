"""The replica side of the Ray backend: what runs in a Ray Serve replica, and the answer it sends a front.

A `PipelineReplica` is a local backend in a Ray worker, built there by the composition root (`HostFactory`). It
runs the requests a front packed into one call in batches of the version's batch size, conforming each request
alone first, and sends back one `Answer`: the outputs of each batch as one table, and each other request's own
result or `Failure`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from ray import serve

from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.backends.base import InferRequest
from finalmile.backends.batcher import Batcher, packed, spans
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.errors import FinalmileError
from finalmile.logs.writer import LogWriter
from finalmile.pipelines.batch import Batch
from finalmile.pipelines.loaded import RequestResult, split_batch
from finalmile.runtimes.generation import SINKS
from finalmile.schema import Schema


class ReplicaHost(Protocol):
    """What a replica builds in its worker: the composition root's local backend, its log writer (the replica's own
    journals and parts) and what it must close."""

    local: LocalBackend
    logs: LogWriter

    def close(self) -> None: ...


HostFactory = Callable[[], ReplicaHost]
"""Builds a replica's host (picklable: a module-level function and its arguments); given by the composition root."""


@dataclass
class Failure:
    """One request's error, carried back from a replica as data (error classes need not survive pickling)."""

    kind: str
    message: str
    detail: Any = None

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        if isinstance(error, FinalmileError):
            return cls(type(error).__name__, error.message, error.detail)
        return cls("", f"{type(error).__name__}: {error}")

    def error(self) -> FinalmileError:
        return FinalmileError.rebuild(self.kind, self.message, self.detail)


@dataclass
class Answer:
    """A replica's answer to a front's call: each batch the call's requests ran in, with the front's numbers of
    those requests in its order (one Arrow table travels back per batch instead of one per request), and each other
    request's own result or failure."""

    batches: list[tuple[Batch, list[int]]]
    alone: dict[int, RequestResult | Failure]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with the batches' outputs as IPC streams, and without their inputs (logged in the replica
        already): a pickled Arrow table costs ten times its IPC stream."""
        return _answer, ([(_fields(batch), together) for batch, together in self.batches], self.alone)

    def results(self, pipeline: str, version: int, sent: list[tuple[int, int]]) -> list[RequestResult | Failure]:
        """One result or failure per request of the front's call (whose rows were `sent`), in its order."""
        out: dict[int, RequestResult | Failure] = dict(self.alone)
        for batch, together in self.batches:
            rows = spans([sent[i][1] for i in together])
            out |= dict(zip(together, split_batch(pipeline, version, batch, rows), strict=True))
        return [out[i] for i in range(len(sent))]


def _fields(batch: Batch) -> tuple[Any, ...]:
    shadow = {k: to_ipc(v) for k, v in batch.shadow.items()}
    return to_ipc(batch.table), batch.routes, batch.route_index, batch.checks, shadow, batch.errors, batch.request_ids


def _batch(fields: tuple[Any, ...]) -> Batch:
    table, routes, route_index, checks, shadow, errors, request_ids = fields
    outputs = from_ipc(table)
    return Batch(
        inputs=outputs.slice(0, 0),
        table=outputs,
        requests=np.zeros(0, np.int32),
        routes=routes,
        route_index=route_index,
        checks=checks,
        shadow={k: from_ipc(v) for k, v in shadow.items()},
        errors=errors,
        request_ids=request_ids,
    )


def _answer(batches: list[tuple[tuple[Any, ...], list[int]]], alone: dict[int, Any]) -> Answer:
    return Answer([(_batch(fields), together) for fields, together in batches], alone)


class PipelineReplica:
    """One Ray Serve replica of a pipeline version: a local backend serving it, fed batches by the fronts."""

    def __init__(self, host: HostFactory, pipeline: str, version: int, config: dict[str, Any]) -> None:
        self.host = host()
        self.pipeline, self.version = pipeline, version
        local = DeploymentConfig.model_validate(config).model_copy(update={"backend": "local"})
        self.host.local.deploy(pipeline, version, local)  # raises (and the app fails) if the version cannot load
        self.replica = serve.get_replica_context().replica_id.unique_id

    def describe(self) -> tuple[int, Schema | None, str, int]:
        """The version, its input schema, this replica's id and worker pid."""
        return self.version, self.host.local.target(self.pipeline).input_schema, self.replica, os.getpid()

    async def run_batch(
        self,
        data: bytes,
        spans: list[tuple[int, int]],
        ids: list[str | None],
        log: bool,
        durable: bool = False,
        traces: list[str | None] | None = None,
    ) -> tuple[Answer, str, float]:
        """A front's call (its requests' rows as one IPC stream), run here: each request is conformed alone (a bad
        one fails alone, logged), the rest run together in batches of at most the version's batch size, on the
        replica's threads; a batch that fails runs again request by request to find the culprit, as the local
        batcher does. `durable`: answer only once the rows logged are on disk (a stream acknowledges its messages
        on the answer; a replica killed after would otherwise take up to a second of rows with it). `traces`: each
        request's trace id, for its log rows (the front traced the call). Returns the answer, this replica, seconds."""
        started = time.perf_counter()
        table = from_ipc(data)
        slot = self.host.local.get(self.pipeline, self.version)
        current = slot.current
        conformed: dict[int, pa.Table] = {}
        alone: dict[int, RequestResult | Failure] = {}
        for i, (offset, rows) in enumerate(spans):
            try:
                conformed[i] = current.conform(table.slice(offset, rows))
            except Exception as exc:
                if log:
                    self.host.local.failed(current, rows, exc, started)
                alone[i] = Failure.of(exc)
        batcher = slot.batcher(log)
        order = list(conformed)
        groups = [
            [order[k] for k in group]
            for group in packed([conformed[i].num_rows for i in order], batcher.max_batch_size)
        ]
        ran = await asyncio.gather(
            *(self._together(batcher, group, conformed, ids, log, alone, traces) for group in groups)
        )
        batches = [(batch, group) for batch, group in zip(ran, groups, strict=True) if batch is not None]
        if durable and log:
            await asyncio.to_thread(self.host.logs.durable)
        return Answer(batches, alone), self.replica, time.perf_counter() - started

    async def stream_batch(
        self,
        data: bytes,
        spans: list[tuple[int, int]],
        ids: list[str | None],
        log: bool,
        durable: bool = False,
        traces: list[str | None] | None = None,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """`run_batch` for a call whose rows stream text (a `stream_id`): a sink is opened here under each id, and
        every piece a generative engine pushes to it is sent on to the front as it comes, `("piece", id, text)`,
        before the answer, `("answer", answer, replica, seconds)`."""
        table = from_ipc(data)
        opened = [s for s in table.column("stream_id").to_pylist() if s] if "stream_id" in table.column_names else []
        pieces: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for sink in opened:
            SINKS.open(sink, partial(_forward, loop, pieces, sink))
        done = asyncio.ensure_future(self.run_batch(data, spans, ids, log, durable, traces))
        try:
            while True:
                waiting = asyncio.ensure_future(pieces.get())
                await asyncio.wait({done, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield ("piece", *waiting.result())
                    continue
                waiting.cancel()
                while not pieces.empty():
                    yield ("piece", *pieces.get_nowait())
                yield ("answer", *done.result())
                return
        finally:
            for sink in opened:
                SINKS.close(sink)

    async def _together(
        self,
        batcher: Batcher,
        requests: list[int],
        tables: dict[int, pa.Table],
        ids: list[str | None],
        log: bool,
        alone: dict[int, RequestResult | Failure],
        traces: list[str | None] | None,
    ) -> Batch | None:
        """These requests run as one batch; None if it failed, each of them then run alone (into `alone`)."""
        try:
            chosen = [traces[i] for i in requests] if traces else None
            _, batch = await batcher.run_together([tables[i] for i in requests], [ids[i] for i in requests], chosen)
            return batch
        except Exception:
            target = self.host.local.target(self.pipeline, self.version)
            done = await asyncio.gather(
                *(target.infer(InferRequest(self.pipeline, tables[i], self.version, log, ids[i])) for i in requests),
                return_exceptions=True,
            )
            for i, r in zip(requests, done, strict=True):
                alone[i] = r if isinstance(r, RequestResult) else Failure.of(r)
            return None

    def __del__(self) -> None:  # Ray Serve calls it on graceful shutdown: the log rows held go to disk
        host = getattr(self, "host", None)
        if host is not None:
            host.close()


def _forward(loop: asyncio.AbstractEventLoop, pieces: asyncio.Queue[tuple[str, str]], sink: str, text: str) -> None:
    """A piece of text an engine pushed (from its decoding thread) onto the replica's loop."""
    loop.call_soon_threadsafe(pieces.put_nowait, (sink, text))
