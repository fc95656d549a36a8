"""The local backend: pipelines served by threads of this process (the embedded client, or a server worker).

A `Slot` is what a pipeline name resolves to. Deploying a new version builds and warms it beside the running one,
then replaces `slot.current` in one assignment: batches already running keep the executor they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import require_rows
from finalmile.backends.base import InferRequest, Wanted
from finalmile.backends.batcher import Batcher
from finalmile.backends.config import DeploymentConfig
from finalmile.errors import FinalmileError, PipelineNotDeployed, failed_variant
from finalmile.pipelines.loaded import FailureHook, Hook, LoadedPipeline, RequestResult
from finalmile.schema import Schema

log = logging.getLogger(__name__)
INLINE_ROWS = 16
INLINE_BELOW_S = 250e-6
Observer = Callable[[int, int, float, list[float]], None]
"""Told of every batch: rows, requests, seconds computing, each request's wait (the batch metrics)."""


class Slot:
    """A pipeline name: the version serving now, its configuration, and the batchers in front of it."""

    def __init__(
        self,
        current: LoadedPipeline,
        config: DeploymentConfig,
        observe: Observer | None,
        failed: Callable[[LoadedPipeline, int, BaseException, float], None],
    ) -> None:
        self.current = current
        self._failed = failed
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix=f"infer-{current.name}")
        self._observe = observe
        self._batchers: dict[bool, Batcher] = {}

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def version(self) -> int:
        return self.current.version

    @property
    def input_schema(self) -> Schema | None:
        return self.current.input_schema

    async def infer(self, request: InferRequest) -> RequestResult:
        """`request.durable` asks nothing more here: rows are logged in this process, and the caller's
        `LogWriter.durable()` covers them."""
        current = self.current
        started = time.perf_counter()
        table = request.table
        try:
            conformed = current.conform_request(table)
            batcher = self.batcher(request.log)
            result: RequestResult = await batcher.submit(conformed, request.request_id, request.trace)
        except Exception as exc:  # logged as an error row (the error-rate monitor reads them), then raised
            if request.log:
                self._failed(current, table.num_rows, exc, started)
            raise
        return result

    def batcher(self, log: bool = True) -> Batcher:
        """The batcher for logged requests, or for unlogged ones (file inference): they never share a batch."""
        batcher = self._batchers.get(log)
        if batcher is None:
            batcher = self._batchers[log] = Batcher(
                run=lambda table, requests, ids: (self.current, self.current.run(table, requests, log, ids)),
                split=lambda result, spans: result[0].split(result[1], spans),
                executor=self.executor,
                max_batch_size=self.config.max_batch_size,
                max_delay_ms=self.config.max_delay_ms,
                workers=self.config.workers,
                observe=self._observe,
                inline=self._inline,
            )
        return batcher

    def _inline(self, rows: int) -> bool:
        """Small batches of a pipeline measured at under `INLINE_BELOW_S` a row run on the event loop: the thread
        hop would cost more than the work. Not with strict durability (it waits for the disk) or several workers."""
        return (
            rows <= INLINE_ROWS
            and self.current.one_row_s < INLINE_BELOW_S
            and self.config.durability != "strict"
            and self.config.workers == 1
        )

    def retire(self, grace_s: float = 30.0) -> None:
        """Stop the threads once the requests already accepted have had time to finish."""

        def stop() -> None:
            for batcher in self._batchers.values():
                batcher.close()
            self.executor.shutdown(wait=False)

        timer = threading.Timer(grace_s, stop)
        timer.daemon = True
        timer.start()


class LocalBackend:
    """The `Backend` of one process: a slot per deployed pipeline, each with its own inference threads."""

    name = "local"

    def __init__(
        self,
        load: Callable[[str, int, DeploymentConfig], LoadedPipeline],
        wanted: Wanted,
        observe: Callable[[str], Observer] | None = None,
        hooks: list[Hook] | None = None,
        observers: list[Hook] | None = None,
        failure_hooks: list[FailureHook] | None = None,
    ) -> None:
        self._load_version = load
        self._wanted = wanted
        self._observe = observe
        self.slots: dict[str, Slot] = {}
        self.hooks: list[Hook] = hooks or []
        """Called with every logged batch (the log writer)."""
        self.observers: list[Hook] = observers or []
        """Called with every batch (step metrics)."""
        self.failure_hooks: list[FailureHook] = failure_hooks or []
        self._lock = threading.Lock()
        self._changes = 0  # counts deploys and undeploys in this process
        self._changed: dict[str, int] = {}  # the count at each pipeline's last change

    # -- deploying ----------------------------------------------------------------------------------------------

    def load(self, name: str, version: int, config: DeploymentConfig) -> LoadedPipeline:
        """Build and warm a pipeline version for `config` (its batch size picks runtimes), touching nothing serving."""
        loaded = self._load_version(name, version, config)
        loaded.hooks, loaded.observers = self.hooks, self.observers
        return loaded

    def deploy(
        self, pipeline: str, version: int, config: DeploymentConfig, record: Callable[[], object] | None = None
    ) -> None:
        loaded = self.load(pipeline, version, config)  # a version that cannot load is never recorded
        if record is not None:
            record()
        self.install(pipeline, loaded, config)  # after the record, so that a concurrent sync keeps it

    def install(
        self, name: str, loaded: LoadedPipeline, config: DeploymentConfig, unchanged_since: int | None = None
    ) -> Slot | None:
        """Serve a loaded version: a new slot when the deployment config changed, else a swap in the old one.
        With `unchanged_since`, only if this process has not deployed or undeployed `name` since (else None)."""
        loaded.config = config
        with self._lock:
            if self._changed_after(name, unchanged_since):
                return None
            self._mark_changed(name)
            slot = self.slots.get(name)
            if slot is None or slot.config != config:
                observe = self._observe(name) if self._observe else None
                new = Slot(loaded, config, observe, self.failed)
                self.slots[name] = new
                if slot is not None:
                    slot.retire()
                return new
            slot.current = loaded  # the swap: one reference assignment
            return slot

    def undeploy(self, pipeline: str, unchanged_since: int | None = None) -> None:
        with self._lock:
            if self._changed_after(pipeline, unchanged_since):
                return
            self._mark_changed(pipeline)
            slot = self.slots.pop(pipeline, None)
        if slot is not None:
            slot.retire()

    def sync(self) -> None:
        """Converge on the deployments recorded in the store (used by servers, which may share a store).

        A pipeline deployed or undeployed in this process after the store was read is left alone: the read predates
        the change, and acting on it would undo a deployment that was just made (the next sync sees it)."""
        with self._lock:
            read_at = self._changes
        wanted = self._wanted()
        for name in list(self.slots):
            if name not in wanted:
                self.undeploy(name, unchanged_since=read_at)
        for name, (version, config) in wanted.items():
            if self._changed_after(name, read_at):
                continue  # changed here since the read: skip the load (checked again, under the lock, by install)
            slot = self.slots.get(name)
            if slot is None or slot.current.version != version or slot.config != config:
                try:
                    self.install(name, self.load(name, version, config), config, unchanged_since=read_at)
                except FinalmileError as exc:
                    log.error("cannot deploy %s:%s: %s", name, version, exc.message)

    def _mark_changed(self, name: str) -> None:
        self._changes += 1
        self._changed[name] = self._changes

    def _changed_after(self, name: str, count: int | None) -> bool:
        """Whether this process deployed or undeployed `name` after the change count was `count` (None: never asks)."""
        return count is not None and self._changed.get(name, 0) > count

    # -- serving ------------------------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise PipelineNotDeployed(name)
        if version is not None and slot.current.version != version:
            raise PipelineNotDeployed(name, version)
        return slot

    def deployed(self) -> dict[str, int]:
        return {name: slot.current.version for name, slot in list(self.slots.items())}

    def serves(self, pipeline: str) -> bool:
        return pipeline in self.slots

    def target(self, pipeline: str, version: int | None = None) -> Slot:
        return self.get(pipeline, version)

    async def infer_each(
        self, pipeline: str, table: pa.Table, ids: list[str], log: bool = True, durable: bool = False
    ) -> list[RequestResult]:
        slot = self.get(pipeline)
        current = slot.current
        conformed = current.conform(require_rows(table))
        rows = conformed.num_rows
        requests = np.arange(rows, dtype=np.int32)
        ran, batch = await slot.batcher(log).run_rows(conformed, requests, list(ids))
        return list(ran.split(batch, [(i, 1) for i in range(rows)]))

    def failed(self, loaded: LoadedPipeline, rows: int, error: BaseException, started: float) -> None:
        """Tell the failure hooks (the log's error rows) that a request failed; never raises."""
        message = error.message if isinstance(error, FinalmileError) else f"{type(error).__name__}: {error}"
        for hook in self.failure_hooks:
            try:
                hook(loaded, rows, message, (time.perf_counter() - started) * 1000, failed_variant(error))
            except Exception:
                log.exception("failure hook failed for %s:%s", loaded.name, loaded.version)

    def close(self) -> None:
        for name in list(self.slots):
            self.undeploy(name)
