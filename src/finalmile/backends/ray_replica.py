"""The replica side of the Ray backend: what runs in a Ray Serve replica, and the answer it sends a front.

A `PipelineReplica` is a local backend in a Ray worker, built there by the composition root (`HostFactory`). It
runs each batch a front sends as one batch, conforming each request alone first, and sends back one `Answer`: the
outputs of the requests that ran together as one table, and each other request's own result or `Failure`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from ray import serve

from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.backends.batcher import spans
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.errors import FinalmileError
from finalmile.pipelines.executor import Batch
from finalmile.pipelines.loaded import RequestResult, split_batch
from finalmile.registry.schema import Schema


class ReplicaHost(Protocol):
    """What a replica builds in its worker: the composition root's local backend and what it must close."""

    local: LocalBackend

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
    """A replica's answer to a front's batch: the requests that ran together, as the one batch they ran in (one
    Arrow table travels back instead of one per request), and each other request's own result or failure."""

    batch: Batch | None
    together: list[int]
    """The front's request numbers in `batch`, in its order."""
    alone: dict[int, RequestResult | Failure]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with the batch's outputs as IPC streams, and without its inputs (logged in the replica already):
        a pickled Arrow table costs ten times its IPC stream."""
        batch = self.batch
        if batch is None:
            return Answer, (None, self.together, self.alone)
        shadow = {k: to_ipc(v) for k, v in batch.shadow.items()}
        fields = (to_ipc(batch.table), batch.routes, batch.route_index, batch.checks, shadow, batch.errors)
        return _answer, (fields, batch.request_ids, self.together, self.alone)

    def results(self, pipeline: str, version: int, sent: list[tuple[int, int]]) -> list[RequestResult | Failure]:
        """One result or failure per request of the front's batch (whose rows were `sent`), in its order."""
        out: dict[int, RequestResult | Failure] = dict(self.alone)
        if self.batch is not None:
            rows = spans([sent[i][1] for i in self.together])
            out |= dict(zip(self.together, split_batch(pipeline, version, self.batch, rows), strict=True))
        return [out[i] for i in range(len(sent))]


def _answer(fields: tuple[Any, ...], request_ids: list[str], together: list[int], alone: dict[int, Any]) -> Answer:
    table, routes, route_index, checks, shadow, errors = fields
    outputs = from_ipc(table)
    batch = Batch(
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
    return Answer(batch, together, alone)


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
        return self.version, self.host.local.serving(self.pipeline).input_schema, self.replica, os.getpid()

    async def run_batch(
        self, data: bytes, spans: list[tuple[int, int]], ids: list[str | None], log: bool
    ) -> tuple[Answer, str, float]:
        """A front's batch (its rows as an IPC stream), run here as one batch: each request is conformed alone (a
        bad one fails alone, logged), the rest run together once; if that run fails, each runs on its own to find
        the culprit, as the local batcher does. Returns the answer, this replica, seconds."""
        started = time.perf_counter()
        table = from_ipc(data)
        local = self.host.local
        slot = local.get(self.pipeline, self.version)
        current = slot.current
        tables: list[pa.Table] = []
        together: list[int] = []
        alone: dict[int, RequestResult | Failure] = {}
        for i, (offset, rows) in enumerate(spans):
            try:
                tables.append(current.conform(table.slice(offset, rows)))
                together.append(i)
            except Exception as exc:
                if log:
                    local.failed(current, rows, exc, started)
                alone[i] = Failure.of(exc)
        batch: Batch | None = None
        if tables:
            try:
                _, batch = await slot.batcher(log).run_together(tables, [ids[i] for i in together])
            except Exception:
                done = await asyncio.gather(
                    *(local.infer(self.pipeline, tables[k], self.version, log, ids[i]) for k, i in enumerate(together)),
                    return_exceptions=True,
                )
                for i, r in zip(together, done, strict=True):
                    alone[i] = r if isinstance(r, RequestResult) else Failure.of(r)
                together = []
        return Answer(batch, together, alone), self.replica, time.perf_counter() - started

    def __del__(self) -> None:  # Ray Serve calls it on graceful shutdown: the log rows held go to disk
        host = getattr(self, "host", None)
        if host is not None:
            host.close()
