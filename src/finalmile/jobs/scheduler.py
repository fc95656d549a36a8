"""The one scheduler of a server process: periodic work (converging on the store's deployments, running monitors)
run off the event loop, each task on its own interval, a failing run logged and retried at the next tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    """A task: `run` is called in a worker thread every `interval_s` seconds (after the first interval)."""

    name: str
    interval_s: float
    run: Callable[[], object]


class Scheduler:
    """Runs periodic tasks on the running event loop until stopped; several server workers may each run one
    (monitors guard their stored results, so a window is recorded and acted on once)."""

    def __init__(self, tasks: list[Periodic]) -> None:
        self.tasks = tasks
        self._running: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._running = [loop.create_task(self._every(task)) for task in self.tasks]

    def stop(self) -> None:
        for running in self._running:
            running.cancel()
        self._running = []

    async def _every(self, task: Periodic) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(task.interval_s)
            try:
                await loop.run_in_executor(None, task.run)
            except Exception:
                log.exception("scheduled task %s failed", task.name)
