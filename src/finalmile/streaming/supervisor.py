"""Runs a server process's streams: converges on the store's (a stream applied, paused, changed or deleted is
started, stopped or restarted within a second or two), restarts a runner whose broker went away, and stores each
runner's counters for `streams status`. Every `finalmile serve` worker runs one; they share each stream's work
through the broker's consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import pyarrow as pa

from finalmile.backends.base import InferRequest
from finalmile.jobs.connections import ConnectionStore
from finalmile.logs.query import LogReader
from finalmile.logs.writer import LogWriter
from finalmile.pipelines.loaded import RequestResult
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.metrics import Metrics
from finalmile.streaming.brokers import Broker, LastLogged, open_broker
from finalmile.streaming.config import Endpoint, StreamConfig
from finalmile.streaming.runner import Infer, InferEach, StreamRunner
from finalmile.streaming.store import StreamStore

log = logging.getLogger(__name__)
INTERVAL_S = 1.0
STOP_TIMEOUT_S = 5.0


class StreamHost(Protocol):
    """What a workspace offers its streams (the composition root's `Services` is one)."""

    workspace: str
    streams: StreamStore
    dataplane: DataPlane
    reader: LogReader
    logs: LogWriter
    connections: ConnectionStore
    metrics: Metrics


@dataclass
class _Running:
    config: StreamConfig
    runner: StreamRunner
    task: asyncio.Task[None]
    reported: float
    processed: int


def stream_inference(host: StreamHost) -> tuple[Infer, InferEach]:
    """How a stream's messages infer through `host`'s data plane: alone, and a batch as one. Durable: a message is
    acknowledged on its answer, so rows logged elsewhere (a Ray replica) must be on disk by then; this process's own
    rows are the runner's `durable()`, once per batch."""

    async def infer(pipeline: str, table: pa.Table, log_it: bool, request_id: str) -> RequestResult:
        return await host.dataplane.infer(InferRequest(pipeline, table, None, log_it, request_id, durable=True))

    async def infer_each(pipeline: str, table: pa.Table, ids: list[str]) -> list[RequestResult]:
        return await host.dataplane.infer_each(pipeline, table, ids, durable=True)

    return infer, infer_each


class Supervisor:
    """Keeps one runner per unpaused stream of every workspace on this process's event loop."""

    def __init__(self, hosts: Callable[[], list[Any]]) -> None:
        self.hosts = hosts
        self._running: dict[tuple[str, str], _Running] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        tasks = [running.task for running in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:  # a broker that does not answer its close must not hold the server's shutdown
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        self._running = {}

    async def _loop(self) -> None:
        while True:
            try:
                await self.converge()
            except Exception:
                log.exception("streams: converging failed")
            await asyncio.sleep(INTERVAL_S)

    async def converge(self) -> None:
        hosts: list[StreamHost] = await asyncio.to_thread(self.hosts)
        wanted: dict[tuple[str, str], tuple[StreamHost, StreamConfig]] = {}
        for host in hosts:
            for record in await asyncio.to_thread(host.streams.all):
                if not record.paused:
                    wanted[(host.workspace, record.name)] = (host, record.config)
        for key, running in list(self._running.items()):
            if key not in wanted or wanted[key][1] != running.config or running.task.done():
                if running.task.done() and not running.task.cancelled() and running.task.exception() is not None:
                    error = running.task.exception()
                    running.runner.counters.last_error = f"{type(error).__name__}: {error}"
                    log.warning("stream %s stopped: %s; restarting", key[1], error)
                running.task.cancel()
                with contextlib.suppress(BaseException):
                    await running.task
                if key in wanted:
                    await self._report(wanted[key][0], running)
                del self._running[key]
        for key, (host, config) in wanted.items():
            if key not in self._running:
                self._running[key] = self._start(host, config)
        for key, running in self._running.items():
            if time.monotonic() - running.reported >= 2 * INTERVAL_S:
                await self._report(wanted[key][0], running)

    def _start(self, host: StreamHost, config: StreamConfig) -> _Running:
        source = self._broker(host, config.source, partial(host.reader.last_offsets, config.pipeline))
        same = config.sink.model_dump(exclude={"subject"}) == config.source.model_dump(exclude={"subject"})
        sink = source if same else self._broker(host, config.sink)

        infer, infer_each = stream_inference(host)
        runner = StreamRunner(config, source, sink, infer, host.reader.logged_ids, host.logs.durable, infer_each)
        task = asyncio.get_running_loop().create_task(runner.run(), name=f"stream-{config.name}")
        return _Running(config, runner, task, time.monotonic(), 0)

    @staticmethod
    def _broker(host: StreamHost, endpoint: Endpoint, last_logged: LastLogged | None = None) -> Broker:
        url = host.connections.url(endpoint.connection) if endpoint.connection else None
        return open_broker(endpoint, url, last_logged)

    async def _report(self, host: StreamHost, running: _Running) -> None:
        now = time.monotonic()
        counters = running.runner.counters
        rate = (counters.processed - running.processed) / max(now - running.reported, 1e-9)
        try:
            lag = await asyncio.wait_for(running.runner.source.lag(), 2.0)
        except Exception:
            lag = None
        running.reported, running.processed = now, counters.processed
        if lag is not None:
            host.metrics.stream_lag.labels(running.config.name).set(lag)
        status = counters.snapshot(rate, lag) | {"state": "running" if not running.task.done() else "stopped"}
        await asyncio.to_thread(host.streams.report, running.config.name, status)
