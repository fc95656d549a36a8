"""The Ray front's view of one running Ray Serve application: the version it serves, and the adaptive batchers
that coalesce requests into calls to its replicas through a deployment handle, awaited on the caller's loop, so
Ray's per-call cost is paid per batch, not per request. Imported by `backends/ray.py`, after it has set Ray
Serve's transport settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

import finalmile.tracing as tracing
from finalmile.arrow.frames import require_rows
from finalmile.arrow.ipc import to_ipc
from finalmile.arrow.tensors import as_table
from finalmile.backends.base import InferRequest
from finalmile.backends.batcher import Batcher, spans
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.ray_replica import Failure
from finalmile.errors import BackendUnavailable
from finalmile.pipelines.loaded import RequestResult
from finalmile.runtimes.generation import SINKS

PACK = 8
"""How many batches' worth of queued requests one call carries: Ray Serve costs about a millisecond of the
front's CPU per call whatever it carries, so a call takes up to `PACK` x `max_batch_size` rows, and the replica
runs them in batches of `max_batch_size` (1,000-row requests from 16 clients on 2 cores: 75-84% of the local
backend's rows/s before, 89-101% after, bench/README.md)."""

ReplicaObserver = Callable[[str, str, int, int, float], None]
"""Told of every call a replica answered: pipeline, replica id, rows, requests, seconds in the replica."""


class App:
    """The front's view of one running application: the version it serves and the batchers in front of it."""

    def __init__(self, app: str, handle: Any, name: str, config: DeploymentConfig, observe: ReplicaObserver) -> None:
        self.app, self.handle, self.name, self.config = app, handle, name, config
        with _new_loops_on_uvloop():  # the process's first call makes Serve's router loop
            self.version, self.input_schema, _, _ = handle.describe.remote().result()
        self._runner = handle.options(
            method_name="run_batch", request_serialization="pickle", response_serialization="pickle"
        )
        """Plain pickle, not cloudpickle (whose Python hook runs for every object): the rows go as an IPC stream,
        the answer's tables too (`Answer`), so a call's payload pickles in microseconds."""
        self._streamer = handle.options(method_name="stream_batch", stream=True)
        """For a call whose rows stream text: the replica sends each piece as it is decoded, then the answer."""
        scale = config.autoscaling.max_replicas if config.autoscaling else config.replicas
        self.calls = 2 * scale  # batches in flight: two per replica keeps each busy while the next one travels
        self._observe = observe
        self._batchers: dict[tuple[bool, bool], Batcher] = {}  # by (log, durable)
        self._pending = 0  # requests submitted and not yet answered, on any loop
        self._pending_lock = threading.Lock()

    async def infer(self, request: InferRequest) -> RequestResult:
        """One request through a replica (the `Target` a request resolves)."""
        part = await self.submit(
            require_rows(as_table(request.table)), request.log, request.request_id, request.durable, request.trace
        )
        if isinstance(part, Failure):
            raise part.error()
        result: RequestResult = part
        return result

    async def submit(
        self, table: pa.Table, log: bool, request_id: str | None, durable: bool = False, trace: Any = None
    ) -> Any:
        with self._pending_lock:
            self._pending += 1
        try:
            return await self.batcher(log, durable).submit(table, request_id, trace)
        finally:
            with self._pending_lock:
                self._pending -= 1

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def batcher(self, log: bool, durable: bool = False) -> Batcher:
        batcher = self._batchers.get((log, durable))
        if batcher is None:
            batcher = self._batchers[log, durable] = Batcher(
                run=lambda table, requests, ids: self.call(table, requests, ids, log, durable),
                split=lambda results, spans: results,
                executor=None,  # the call is awaited on the loop: no thread between the request and Ray's router
                max_batch_size=self.config.max_batch_size * PACK,
                max_delay_ms=self.config.max_delay_ms,
                workers=self.calls,
            )
        return batcher

    async def call(
        self, table: pa.Table, requests: np.ndarray, ids: list[str | None], log: bool, durable: bool = False
    ) -> list[RequestResult | Failure]:
        """One call to a replica: `requests` numbers each row's request; `durable`: the replica answers once the
        rows it logged are on its disk (a stream's messages, acknowledged on the answer)."""
        rows = spans(np.bincount(requests, minlength=len(ids)).tolist())
        traces = tracing.batch_traces()  # sent on, for the replica's log rows (a null each when unsampled: the log
        if traces is None and tracing.enabled():  # keeps one schema while tracing is on, as `logs.records` says)
            traces = [None] * len(ids)
        try:
            with tracing.step("ray replica"):
                if streams(table):
                    answer, replica, seconds = await self._stream(to_ipc(table), rows, ids, log, durable, traces)
                else:
                    answer, replica, seconds = await self._runner.remote(to_ipc(table), rows, ids, log, durable, traces)
        except Exception as exc:  # the replica died or could not be reached: Ray's error, said as a 503
            raise BackendUnavailable(f"pipeline '{self.name}': no Ray replica answered ({type(exc).__name__})") from exc
        self._observe(self.name, replica, table.num_rows, len(ids), seconds)
        return answer.results(self.name, self.version, rows)

    async def _stream(self, *call: Any) -> tuple[Any, str, float]:
        """A streaming call: each piece the replica sends goes to this process's sink of its id (where the route
        waits), then the answer."""
        async for kind, *rest in self._streamer.remote(*call):
            if kind == "answer":
                return rest[0], rest[1], rest[2]
            push = SINKS.get(rest[0])
            if push is not None:
                push(rest[1])
        raise BackendUnavailable(f"pipeline '{self.name}': the replica's stream ended without an answer")

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()


def streams(table: pa.Table) -> bool:
    """Whether a call's rows stream text: a client waits on a sink for one of them."""
    return "stream_id" in table.column_names and table.column("stream_id").null_count < table.num_rows


_ROUTER_LOOP_MADE = threading.Event()
_FIRST_CALL = threading.Lock()


@contextlib.contextmanager
def _new_loops_on_uvloop() -> Iterator[None]:
    """Event loops made meanwhile are uvloop's, around the process's first handle call only. Serve makes its
    router's event loop (one per process, on a thread of its own) at a handle's first call; on uvloop a call costs
    the caller ~15% less CPU (an echo call, 2 in flight: 1,630 -> 1,400 µs here), and one-row requests on Ray went
    up 6-20% (bench/README.md). The policy is process-wide, so it is set for that one call and no other: a process
    embedding the SDK keeps its own loops."""
    if _ROUTER_LOOP_MADE.is_set():
        yield
        return
    with _FIRST_CALL:  # two first calls at once (two workspaces' deploys) must not interleave their swaps
        try:
            import uvloop
        except ImportError:  # uvicorn[standard] brings it where it builds
            yield
            return
        before = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            yield
        finally:
            asyncio.set_event_loop_policy(before)
            _ROUTER_LOOP_MADE.set()
