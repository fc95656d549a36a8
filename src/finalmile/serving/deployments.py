"""Deployments: a pipeline version loaded and warmed, served by name, swapped without dropping a request.

A `Slot` is what a pipeline name resolves to. Deploying a new version builds and warms it beside the running one,
then replaces `slot.current` in one assignment: batches already running keep the executor they started with.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from finalmile.errors import FinalmileError, NotFoundError, SchemaError
from finalmile.frames import tensor_array
from finalmile.pipelines.checks import compile_check
from finalmile.pipelines.executor import Batch, Route, Sequence, build
from finalmile.pipelines.spec import CheckStepSpec, ModelStepSpec, PipelineSpec, SplitStepSpec, walk
from finalmile.registry.schema import Schema, SchemaValidator, expand_tensor
from finalmile.runtimes.base import features
from finalmile.serving.batcher import Batcher
from finalmile.serving.codecs import expand_named_tensor, named_tensor_parts

if TYPE_CHECKING:
    from finalmile.client import Client

log = logging.getLogger(__name__)
Hook = Callable[["LoadedPipeline", Batch], None]
FailureHook = Callable[["LoadedPipeline", int, str, float], None]
"""Called with the deployment, the rows of a request that failed, the error and the milliseconds it took."""


class DeploymentConfig(BaseModel):
    workers: int = Field(default=1, ge=1, le=64)
    """Inference threads for this pipeline (ONNX Runtime releases the GIL, so threads run in parallel)."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most rows coalesced into one batch."""
    max_delay_ms: float = Field(default=1.0, ge=0)
    """How long a batch may wait for more requests when there is concurrency; 0 turns batching off."""
    logging: bool = True
    """Record every inferred row in the inference log."""
    durability: Literal["fast", "strict"] = "fast"
    """`fast`: journaled off the request path, on disk within a second; `strict`: on disk before the response."""
    retention_days: int | None = Field(default=None, ge=1)
    """Delete this pipeline's log partitions older than this many days (at compaction); keep everything when unset."""


class PipelineNotDeployed(NotFoundError):
    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"pipeline '{name}'" + (f" version {version}" if version is not None else "")
        super().__init__(f"{what} is not deployed", {"name": name, "version": version})


@dataclass
class RequestResult:
    """One request's share of a batch: its outputs and what produced them."""

    request_id: str
    pipeline: str
    version: int
    table: pa.Table
    routes: list[Route]
    checks: dict[str, np.ndarray]
    shadow: dict[str, pa.Table]
    errors: dict[str, str]

    def metadata(self) -> dict[str, Any]:
        """Per-row provenance for responses and the inference log."""
        return {
            "request_id": self.request_id,
            "pipeline": self.pipeline,
            "pipeline_version": self.version,
            "variant": [variant for variant, _ in self.routes],
            "model_versions": [list(models) for _, models in self.routes],
            "checks": {name: flags.tolist() for name, flags in self.checks.items()},
        }


@dataclass
class LoadedPipeline:
    name: str
    version: int
    spec: PipelineSpec
    steps: Sequence
    input_schema: Schema | None
    hooks: list[Hook] = field(default_factory=list)
    extra_inputs: frozenset[str] = frozenset()
    """Columns the first model does not take but the pipeline reads: split keys and the checks' `in.` columns."""
    config: DeploymentConfig | None = None
    """How this version is deployed (batching, logging); set by `DeploymentManager.install`."""

    def run(self, table: pa.Table, requests: np.ndarray | None = None, hooks: bool = True) -> Batch:
        started = time.perf_counter()
        batch = self.steps.run(Batch.start(table, requests))
        batch.elapsed_s = time.perf_counter() - started
        n_requests = int(batch.requests.max()) + 1 if len(batch.requests) else 0
        batch.request_ids = [uuid.uuid4().hex for _ in range(n_requests)]
        for hook in self.hooks if hooks else ():
            try:
                hook(self, batch)
            except Exception:  # a broken hook (say, a full disk for logs) must not fail inference
                log.exception("deployment hook failed for %s:%s", self.name, self.version)
        return batch

    def split(self, batch: Batch, spans: list[tuple[int, int]]) -> list[RequestResult]:
        routes = batch.row_routes()
        return [
            RequestResult(
                batch.request_ids[i] if i < len(batch.request_ids) else "",
                self.name,
                self.version,
                batch.table.slice(offset, n),
                routes[offset : offset + n],
                {k: v[offset : offset + n] for k, v in batch.checks.items()},
                {k: v.slice(offset, n) for k, v in batch.shadow.items()},
                batch.errors,
            )
            for i, (offset, n) in enumerate(spans)
        ]

    def __post_init__(self) -> None:
        self._validator = SchemaValidator(self.input_schema) if self.input_schema is not None else None

    def conform(self, table: pa.Table) -> pa.Table:
        """Requests are checked one by one before batching, so a bad request fails alone, never its batch-mates."""
        validator, schema = self._validator, self.input_schema
        parts = named_tensor_parts(table)
        if parts is not None:
            matrix, names = parts
            wanted = schema.input_names() if schema is not None and schema.inputs is not None else None
            if (
                validator is not None
                and validator.tensor_width
                and not self.extra_inputs
                and wanted is not None
                and (sorted(names) == sorted(wanted))
            ):
                index = [names.index(n) for n in wanted] if names != wanted else slice(None)
                return pa.Table.from_arrays([tensor_array(np.ascontiguousarray(matrix[:, index]))], names=["input"])
            table = expand_named_tensor(table)  # anything else: ordinary columns, checked below
        if validator is None or schema is None or schema.inputs is None:
            return table
        if validator.is_tensor_form(table):
            if not self.extra_inputs:
                return table
            table = expand_tensor(table, schema)  # checks and split keys read inputs by name
        elif validator.tensor_width == table.num_columns and not self.extra_inputs:
            # All-numeric named columns become the tensor form in two Arrow calls, so no step re-validates or
            # re-stacks 29 columns one by one; anything unusual falls through to the full check below.
            try:
                matrix = features(table.select(schema.input_names()), np.float64)
                return pa.Table.from_arrays([tensor_array(matrix)], names=["input"])
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
        names = schema.input_names()
        unexpected = [c for c in table.column_names if c not in names and c not in self.extra_inputs]
        if unexpected:
            raise SchemaError(
                [f"column '{c}': unexpected input (the pipeline takes {', '.join(names)})" for c in unexpected]
            )
        conformed = validator.conform(table)
        for name in self.extra_inputs:
            if name in table.column_names and name not in conformed.column_names:
                conformed = conformed.append_column(name, table.column(name))
        return conformed


class Slot:
    """A pipeline name: the version serving now, its configuration, and the batcher in front of it."""

    def __init__(self, current: LoadedPipeline, config: DeploymentConfig) -> None:
        self.current = current
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix=f"infer-{current.name}")
        self.batcher: Batcher | None = None

    def get_batcher(self, observe: Callable[[int, int, float, list[float]], None] | None = None) -> Batcher:
        if self.batcher is None:
            self.batcher = Batcher(
                run=lambda table, requests: (self.current, self.current.run(table, requests)),
                split=lambda result, spans: result[0].split(result[1], spans),
                executor=self.executor,
                max_batch_size=self.config.max_batch_size,
                max_delay_ms=self.config.max_delay_ms,
                workers=self.config.workers,
                observe=observe,
            )
        return self.batcher


class DeploymentManager:
    """The deployments of one process (the embedded client or a server worker)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.slots: dict[str, Slot] = {}
        self.hooks: list[Hook] = []
        self.failure_hooks: list[FailureHook] = []
        self._lock = threading.Lock()
        self._changes = 0  # counts deploys and undeploys in this process
        self._changed: dict[str, int] = {}  # the count at each pipeline's last change

    def failed(self, loaded: LoadedPipeline, rows: int, error: BaseException, started: float) -> None:
        """Tell the failure hooks (the log's error rows) that a request failed; never raises."""
        message = error.message if isinstance(error, FinalmileError) else f"{type(error).__name__}: {error}"
        for hook in self.failure_hooks:
            try:
                hook(loaded, rows, message, (time.perf_counter() - started) * 1000)
            except Exception:
                log.exception("failure hook failed for %s:%s", loaded.name, loaded.version)

    def load(self, name: str, version: int) -> LoadedPipeline:
        """Build and warm a pipeline version without touching what is serving."""
        record = self.client._pipelines.get_version(name, version)
        spec = PipelineSpec.model_validate(record.spec)
        runtimes: dict[str, Any] = {}

        def runtime(ref: str) -> Any:
            if ref not in runtimes:
                runtimes[ref] = self.client.model(ref).load()
            return runtimes[ref]

        steps = build(spec, runtime)
        first = next((s for s in walk(list(spec.steps)) if isinstance(s, ModelStepSpec)), None)
        schema = self.client.model(first.model).schema if first else None
        extras = set()
        for step in walk(list(spec.steps)):
            if isinstance(step, SplitStepSpec) and step.key:
                extras.add(step.key)
            elif isinstance(step, CheckStepSpec):
                extras |= compile_check(step.expression)[1]
        for ref, runtime_ in runtimes.items():  # warm every model (challengers too) on a row of its own sample
            sample = self.client.model(ref).sample()
            if sample is not None and sample.num_rows:
                runtime_.predict(sample.slice(0, 1))
        return LoadedPipeline(name, version, spec, steps, schema, self.hooks, frozenset(extras))

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
                new = Slot(loaded, config)
                self.slots[name] = new
                if slot is not None:
                    _retire(slot)
                return new
            slot.current = loaded  # the swap: one reference assignment
            return slot

    def undeploy(self, name: str, unchanged_since: int | None = None) -> None:
        with self._lock:
            if self._changed_after(name, unchanged_since):
                return
            self._mark_changed(name)
            slot = self.slots.pop(name, None)
        if slot is not None:
            _retire(slot)

    def get(self, name: str, version: int | None = None) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise PipelineNotDeployed(name)
        if version is not None and slot.current.version != version:
            raise PipelineNotDeployed(name, version)
        return slot

    def _mark_changed(self, name: str) -> None:
        self._changes += 1
        self._changed[name] = self._changes

    def _changed_after(self, name: str, count: int | None) -> bool:
        """Whether this process deployed or undeployed `name` after the change count was `count` (None: never asks)."""
        return count is not None and self._changed.get(name, 0) > count

    def sync(self) -> None:
        """Converge on the deployments recorded in the store (used by servers, which may share a store).

        A pipeline deployed or undeployed in this process after the store was read is left alone: the read predates
        the change, and acting on it would undo a deployment that was just made (the next sync sees it)."""
        with self._lock:
            read_at = self._changes
        wanted = {d.name: d for d in self.client._pipelines.deployments()}
        for name in list(self.slots):
            if name not in wanted:
                self.undeploy(name, unchanged_since=read_at)
        for name, record in wanted.items():
            if self._changed_after(name, read_at):
                continue  # changed here since the read: skip the load (checked again, under the lock, by install)
            slot = self.slots.get(name)
            config = DeploymentConfig.model_validate(record.config)
            if slot is None or slot.current.version != record.version or slot.config != config:
                try:
                    self.install(name, self.load(name, record.version), config, unchanged_since=read_at)
                except FinalmileError as exc:
                    log.error("cannot deploy %s:%s: %s", name, record.version, exc.message)

    def close(self) -> None:
        for name in list(self.slots):
            self.undeploy(name)


def _retire(slot: Slot, grace_s: float = 30.0) -> None:
    """Stop a replaced slot's threads once the requests it already accepted have had time to finish."""
    timer = threading.Timer(grace_s, slot.executor.shutdown, kwargs={"wait": False})
    timer.daemon = True
    timer.start()
