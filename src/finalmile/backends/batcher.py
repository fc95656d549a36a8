"""Adaptive batching: concurrent requests to one pipeline are coalesced, run as one batch, and split back.

Greedy, the way Triton batches by default: whenever a runner is free it takes everything queued, up to
`max_batch_size` rows, and runs it now. It waits for more (up to `max_delay_ms`) only while the batch holds fewer
requests than the previous one did — the previous batch is the estimate of how many clients are active — so a lone
client never pays the delay and a full house never waits for clients that are all already in the batch. A request
larger than the batch size runs on its own. `max_delay_ms=0` turns batching off: each request runs alone.

Each event loop that submits gets a queue and runners of its own (a server's loop, the embedded client's), so one
batcher serves callers on several loops without handing an asyncio object across them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

import finalmile.tracing as tracing
from finalmile.arrow.tensors import batch_table

Part: TypeAlias = pa.Table | np.ndarray
"""A request's rows as its backend conformed them: a table, or the model's tensor as a matrix (`batch_table`)."""


@dataclass
class _Pending:
    table: Part
    future: asyncio.Future[Any]
    enqueued: float
    request_id: str | None = None
    trace: Any = None
    enqueued_ns: int = 0


class Batcher:
    """Coalesces concurrent requests into batches run on an executor; dependency-free (callables in, results out)."""

    def __init__(
        self,
        run: Callable[[pa.Table, np.ndarray, list[str | None]], Any],
        split: Callable[[Any, list[tuple[int, int]]], list[Any]],
        executor: Executor | None,
        max_batch_size: int = 64,
        max_delay_ms: float = 1.0,
        workers: int = 1,
        observe: Callable[[int, int, float, list[float]], None] | None = None,
        inline: Callable[[int], bool] | None = None,
    ) -> None:
        self.run = run
        self.split = split
        self.executor = executor
        """Where batches run; None when `run` is a coroutine function, awaited on the loop (a remote call)."""
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.workers = workers
        self.observe = observe
        self.inline = inline
        """Told a batch's rows, says whether to run it on the event loop itself: for a tiny model the hop to a
        thread and back costs more than the model."""
        self._queues: dict[asyncio.AbstractEventLoop, asyncio.Queue[_Pending]] = {}
        self._tasks: dict[asyncio.AbstractEventLoop, list[asyncio.Task[None]]] = {}
        self._last_requests = 1

    @property
    def enabled(self) -> bool:
        return self.max_delay > 0 and self.max_batch_size > 1

    async def submit(self, table: Part, request_id: str | None = None, trace: Any = None) -> Any:
        """Run `table` as one request, batched with others; `request_id` names it in the log (a stream's message
        id), or the run makes one up; `trace` is its span when tracing is on."""
        loop = asyncio.get_running_loop()
        if not self.enabled or len(table) >= self.max_batch_size:
            if trace is None:
                return self.split(await self.run_together([table], [request_id]), _spans([table]))[0]
            work = tracing.batch([trace], [time.time_ns()], partial(self._run_tables, [table], [request_id]))
            return self.split(await self._measured(work, len(table), 1), _spans([table]))[0]
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = asyncio.Queue()
            self._tasks[loop] = [loop.create_task(self._worker(queue)) for _ in range(self.workers)]
        future: asyncio.Future[Any] = loop.create_future()
        queue.put_nowait(
            _Pending(table, future, time.perf_counter(), request_id, trace, time.time_ns() if trace is not None else 0)
        )
        return await future

    async def run_together(
        self, tables: list[Part], ids: list[str | None], traces: list[str | None] | None = None
    ) -> Any:
        """Run these requests as one batch now, past the queue (a Ray front has batched them already, and traced
        them: `traces`); returns what `run` returns, unsplit."""
        work = tracing.carried(traces, partial(self._run_tables, tables, ids))
        return await self._measured(work, sum(map(len, tables)), len(ids))

    async def run_rows(self, table: pa.Table, requests: np.ndarray, ids: list[str | None]) -> Any:
        """Run a table whose rows already belong to several requests (`requests` numbers each row's: a stream's
        messages) as one batch now, past the queue; returns what `run` returns, unsplit."""
        return await self._measured(partial(self.run, table, requests, ids), table.num_rows, len(ids))

    async def _measured(self, work: Callable[[], Any], rows: int, requests: int) -> Any:
        started = time.perf_counter()
        result = await self._execute(asyncio.get_running_loop(), work, rows)
        if self.observe:
            self.observe(rows, requests, time.perf_counter() - started, [0.0])
        return result

    async def _execute(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Any], rows: int) -> Any:
        if self.executor is None:
            return await work()
        if self.inline is not None and self.inline(rows):
            return work()
        return await loop.run_in_executor(self.executor, work)

    def _run_tables(self, tables: list[Part], ids: list[str | None]) -> Any:
        requests = np.repeat(np.arange(len(tables), dtype=np.int32), [len(t) for t in tables])
        return self.run(batch_table(tables), requests, ids)

    async def _worker(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            rows = len(batch[0].table)
            deadline = time.perf_counter() + self.max_delay
            while rows < self.max_batch_size:
                if queue.empty():
                    remaining = deadline - time.perf_counter()
                    if len(batch) >= self._last_requests or remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = queue.get_nowait()
                if rows + len(item.table) > self.max_batch_size:
                    queue.put_nowait(item)  # goes first into the next batch (order across batches is not promised)
                    break
                batch.append(item)
                rows += len(item.table)
            self._last_requests = len(batch)
            await self._dispatch(loop, batch)

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        tables = [p.table for p in batch]
        started = time.perf_counter()
        try:
            work: Callable[[], Any] = partial(self._run_tables, tables, [p.request_id for p in batch])
            if tracing.enabled():
                work = tracing.batch([p.trace for p in batch], [p.enqueued_ns for p in batch], work)
            result = await self._execute(loop, work, sum(map(len, tables)))
            parts = self.split(result, _spans(tables))
        except Exception as exc:
            if len(batch) > 1:  # find the culprit: each request alone, so one bad request fails only itself
                await asyncio.gather(*(self._dispatch(loop, [p]) for p in batch))
                return
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self.observe:
            waits = [started - p.enqueued for p in batch]
            self.observe(sum(map(len, tables)), len(tables), time.perf_counter() - started, waits)
        for p, part in zip(batch, parts, strict=True):
            if not p.future.done():
                p.future.set_result(part)

    def close(self) -> None:
        """Stop the runners on every loop (thread-safe: each task is cancelled on its own loop)."""
        for loop, tasks in self._tasks.items():
            for task in tasks:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(task.cancel)
        self._tasks = {}
        self._queues = {}


def spans(rows: list[int]) -> list[tuple[int, int]]:
    """(offset, rows) of consecutive requests with these row counts, in one table."""
    out, offset = [], 0
    for n in rows:
        out.append((offset, n))
        offset += n
    return out


def packed(rows: list[int], limit: int) -> list[list[int]]:
    """Consecutive requests with these row counts, grouped into batches of at most `limit` rows (a larger request
    alone), as lists of their indexes: how a replica runs what a front packed into one call."""
    groups: list[list[int]] = []
    filled = limit
    for i, n in enumerate(rows):
        if filled + n > limit:
            groups.append([])
            filled = 0
        groups[-1].append(i)
        filled += n
    return groups


def _spans(tables: list[Part]) -> list[tuple[int, int]]:
    return spans([len(t) for t in tables])
