"""A pipeline version loaded and warmed: its steps over live runtimes, input conforming, and per-request results.

Whatever backend serves it (this process's threads, a Ray replica), a `LoadedPipeline` is what runs a batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

import finalmile.tracing as tracing
from finalmile.arrow.frames import column_rows, list_matrix, require_rows
from finalmile.arrow.tensors import (
    TENSOR_INPUT,
    NamedRows,
    Rows,
    TensorRows,
    expand_named_tensor,
    named_tensor_header,
    tensor_table,
)
from finalmile.arrow.text import plain
from finalmile.errors import SchemaError
from finalmile.pipelines.batch import Batch, Route, Sequence
from finalmile.pipelines.checks import compile_check
from finalmile.pipelines.executor import build
from finalmile.pipelines.spec import CheckStepSpec, ModelStepSpec, PipelineSpec, SplitStepSpec, walk
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore
from finalmile.runtimes.base import Runtime, features
from finalmile.schema import Schema, SchemaValidator, expand_tensor

logger = logging.getLogger(__name__)
Hook = Callable[["LoadedPipeline", Batch], None]
"""Called with every batch a deployment ran: the log writer, step metrics."""
FailureHook = Callable[["LoadedPipeline", int, str, float, "str | None"], None]
"""Called with the deployment, the rows of a request that failed, the error, the milliseconds it took and the A/B
variant it failed in (or None)."""


class LogSettings(Protocol):
    """The part of a deployment's configuration the log writer reads (a `DeploymentConfig` has it)."""

    @property
    def logging(self) -> bool: ...

    @property
    def durability(self) -> str: ...

    @property
    def retention_days(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """An output column as the tensor protocols send it: its values flat in row-major order, `width` of them a
    row of `row_shape`, and the same values as Python numbers (`items`) where they print as they are — every dtype
    but the half and single floats, whose Python floats would print their binary noise (0.1 as 0.10000000149…)."""

    values: np.ndarray
    row_shape: tuple[int, ...]
    width: int
    items: list[Any] | None

    @classmethod
    def of(cls, rows: np.ndarray) -> OutputTensor:
        flat = rows.reshape(-1)
        items = None if flat.dtype in _NOISY_FLOATS else flat.tolist()
        return cls(flat, rows.shape[1:], math.prod(rows.shape[1:]), items)

    def rows(self, start: int, n: int) -> tuple[np.ndarray, list[int], list[Any] | None]:
        """Rows `start` to `start + n`: flat values, their shape, their items."""
        low, high = start * self.width, (start + n) * self.width
        return self.values[low:high], [n, *self.row_shape], None if self.items is None else self.items[low:high]


_NOISY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))


class BatchOutputs:
    """A batch's outputs as numpy, as tensors and as records, converted once for all the requests that share the
    batch: each request's answer is a slice (converting per request cost more than the whole batch's, and a tiny
    numpy array costs a JSON encoder more than the list of its numbers)."""

    __slots__ = ("table", "names", "_columns", "_tensors", "_records")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.names: list[str] = table.column_names  # a list built by pyarrow at every call (~5 µs here)
        self._columns: dict[str, np.ndarray] = {}
        self._tensors: dict[str, OutputTensor] = {}
        self._records: list[dict[str, Any]] | None = None

    def column(self, name: str) -> np.ndarray:
        rows = self._columns.get(name)
        if rows is None:
            rows = self._columns[name] = column_rows(self.table.column(name))
        return rows

    def tensor(self, name: str) -> OutputTensor:
        found = self._tensors.get(name)
        if found is None:
            found = self._tensors[name] = OutputTensor.of(self.column(name))
        return found

    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = self.table.to_pylist()
        return self._records


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
    outputs: BatchOutputs | None = None
    """The batch's outputs, this request's rows from `offset` on (None: `table` alone)."""
    offset: int = 0

    def output_names(self) -> list[str]:
        return self.outputs.names if self.outputs is not None else self.table.column_names

    def tensor(self, name: str) -> tuple[np.ndarray, list[int], list[Any] | None]:
        """Output column `name` of this request's rows as a tensor: its values flat, its shape, and its values as
        Python numbers where they print as they are (see `OutputTensor`)."""
        if self.outputs is None:
            return OutputTensor.of(column_rows(self.table.column(name))).rows(0, self.table.num_rows)
        return self.outputs.tensor(name).rows(self.offset, self.table.num_rows)

    def records(self) -> list[dict[str, Any]]:
        """This request's output rows as dicts (pandas records)."""
        if self.outputs is None:
            return self.table.to_pylist()
        return self.outputs.records()[self.offset : self.offset + self.table.num_rows]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a Ray replica's answer) without the batch's outputs: its own `table` holds its rows."""
        return self.__dict__ | {"outputs": None, "offset": 0}

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
    """One pipeline version ready to run: built steps, the input schema it conforms requests to, its hooks."""

    name: str
    version: int
    spec: PipelineSpec
    steps: Sequence
    input_schema: Schema | None
    hooks: list[Hook] = field(default_factory=list)
    """Called with every batch logged (the log writer); skipped for batches run with `log=False`."""
    observers: list[Hook] = field(default_factory=list)
    """Called with every batch (step metrics)."""
    extra_inputs: frozenset[str] = frozenset()
    """Columns the first model does not take but the pipeline reads: split keys and the checks' `in.` columns."""
    config: LogSettings | None = None
    """How this version is deployed (batching, logging); set by the backend that installs it."""
    one_row_s: float = float("inf")
    """The steps' measured cost on one row (median, at load); inf when no sample row could be run."""

    def __post_init__(self) -> None:
        self.validator = SchemaValidator(self.input_schema) if self.input_schema is not None else None
        self._orders: dict[bytes | tuple[str, ...], Any] = {}
        """Per list of input names seen (see `_order`)."""

    def run(
        self,
        table: pa.Table,
        requests: np.ndarray | None = None,
        log: bool = True,
        ids: list[str | None] | None = None,
    ) -> Batch:
        """Run the steps over a batch of requests; `ids` names them (a stream's message ids), else fresh ids."""
        started = time.perf_counter()
        batch = self.steps.run(Batch.start(table, requests))
        batch.elapsed_s = time.perf_counter() - started
        n_requests = int(batch.requests.max()) + 1 if len(batch.requests) else 0
        given = (ids or []) + [None] * n_requests
        fresh = os.urandom(16 * n_requests).hex()  # 128 random bits a request, as uuid4 draws, in one call a batch
        batch.request_ids = [i or fresh[32 * k : 32 * k + 32] for k, i in enumerate(given[:n_requests])]
        batch.trace_ids = tracing.batch_traces()
        with tracing.step("log") if log and tracing.enabled() and tracing.in_batch() else contextlib.nullcontext():
            for hook in [*self.observers, *self.hooks] if log else self.observers:
                try:
                    hook(self, batch)
                except Exception:  # a broken hook (say, a full disk for logs) must not fail inference
                    logger.exception("deployment hook failed for %s:%s", self.name, self.version)
        return batch

    def split(self, batch: Batch, spans: list[tuple[int, int]]) -> list[RequestResult]:
        return split_batch(self.name, self.version, batch, spans)

    def conform_request(self, rows: Rows) -> pa.Table | np.ndarray:
        """A request's rows, conformed before batching (so a bad request fails alone, never its batch-mates), for
        `batch_table` to join with its batch-mates': named rows whose columns the model takes become the matrix in
        the model's order, with no Arrow object made per request; anything else goes through `conform`."""
        if isinstance(rows, NamedRows):
            order = self._order(rows.names)
            if order is _SAME:
                return rows.matrix
            if order is not None:
                return rows.matrix[:, order]
            rows = expand_named_tensor(rows)  # anything else: ordinary columns, checked by `conform`
        elif isinstance(rows, TensorRows):
            if self._takes_tensor(rows.matrix):  # as `conform` takes a tensor column: numeric, the model's width
                return rows.matrix
            rows = rows.table()
        return self.conform(require_rows(rows))

    def _takes_tensor(self, matrix: np.ndarray) -> bool:
        validator, schema = self.validator, self.input_schema
        return (
            validator is not None
            and schema is not None
            and schema.inputs is not None
            and not self.extra_inputs
            and validator.tensor_width == matrix.shape[1]
            and matrix.dtype.kind in "iuf"
        )

    def conform(self, table: pa.Table) -> pa.Table:
        """Rows checked against the input schema and shaped as the first step takes them."""
        validator, schema = self.validator, self.input_schema
        header = named_tensor_header(table)
        if header is not None:
            order = self._order(header)
            if order is _SAME:  # the model's own order: the column as it is, its header dropped
                return pa.Table.from_arrays([table.column(0)], names=[TENSOR_INPUT])
            if order is not None:
                return tensor_table(list_matrix(table.column(0))[:, order])
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
                matrix = features(table.select(schema.input_names()), np.float64, nulls=False)  # nulls: checked below
                return tensor_table(matrix)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
        names = schema.input_names()
        unexpected = [c for c in table.column_names if c not in names and c not in self.extra_inputs]
        if unexpected:
            raise SchemaError(
                [f"column '{c}': unexpected input (the pipeline takes {', '.join(names)})" for c in unexpected]
            )
        conformed = validator.conform(table)
        extras = [n for n in self.extra_inputs if n in table.column_names and n not in conformed.column_names]
        odd = [n for n in extras if not plain(table.column(n).type)]  # logged as sent: see `plain`
        if odd:
            raise SchemaError(
                [f"column '{n}': expected text, a number or a boolean, got {table.column(n).type}" for n in odd]
            )
        for name in extras:
            conformed = conformed.append_column(name, table.column(name))
        return conformed

    def _order(self, key: bytes | tuple[str, ...]) -> Any:
        """The column order that makes named inputs (their names, or a named tensor's header) the model's tensor
        form, `_SAME`, or None when they are not one; worked out once per list of names, not per request."""
        order = self._orders.get(key, _UNSEEN)
        if order is _UNSEEN:
            order = self._tensor_order(list(key) if isinstance(key, tuple) else key.decode().split("\x1f"))
            if len(self._orders) >= _ORDERS_KEPT:  # clients send few distinct lists; bound it all the same
                self._orders.clear()
            self._orders[key] = order
        return order

    def _tensor_order(self, names: list[str]) -> Any:
        schema = self.input_schema
        wanted = schema.input_names() if schema is not None and schema.inputs is not None else None
        if self.validator is None or not self.validator.tensor_width or self.extra_inputs or wanted is None:
            return None
        if sorted(names) != sorted(wanted):
            return None
        return _SAME if names == wanted else [names.index(n) for n in wanted]


def split_batch(pipeline: str, version: int, batch: Batch, spans: list[tuple[int, int]]) -> list[RequestResult]:
    """Each request's share of a batch that ran; the `i`th span is the `i`th request (a Ray front splits what its
    replica sent back as one batch)."""
    routes = batch.row_routes()
    outputs = BatchOutputs(batch.table)
    return [
        RequestResult(
            batch.request_ids[i] if i < len(batch.request_ids) else "",
            pipeline,
            version,
            batch.table.slice(offset, n),
            routes[offset : offset + n],
            {k: v[offset : offset + n] for k, v in batch.checks.items()},
            {k: v.slice(offset, n) for k, v in batch.shadow.items()},
            batch.errors,
            outputs,
            offset,
        )
        for i, (offset, n) in enumerate(spans)
    ]


_UNSEEN, _SAME = object(), object()
_ORDERS_KEPT = 64


def load_pipeline(
    record: PipelineVersionRecord, models: MetadataStore, loader: RuntimeLoader, batch_rows: int = 1
) -> LoadedPipeline:
    """Build and warm a pipeline version: every model loaded (challengers too) and run once on a sample row.
    Each model runs on the runtime measured fastest at about `batch_rows` rows (the deployment's batch size)."""
    spec = PipelineSpec.model_validate(record.spec)
    runtimes: dict[str, Runtime] = {}

    def runtime(ref: str) -> Runtime:
        if ref not in runtimes:
            runtimes[ref] = loader.load(models.get_by_ref(ref), batch_rows=batch_rows)
        return runtimes[ref]

    steps = build(spec, runtime)
    first = next((s for s in walk(list(spec.steps)) if isinstance(s, ModelStepSpec)), None)
    schema = Schema.model_validate(models.get_by_ref(first.model).schema) if first else None
    extras: set[str] = set()
    for step in walk(list(spec.steps)):
        if isinstance(step, SplitStepSpec) and step.key:
            extras.add(step.key)
        elif isinstance(step, CheckStepSpec):
            extras |= compile_check(step.expression)[1]
    for ref, runtime_ in runtimes.items():
        sample = loader.sample(models.get_by_ref(ref))
        if sample is not None and sample.num_rows:
            runtime_.predict(sample.slice(0, 1))
    loaded = LoadedPipeline(record.name, record.version, spec, steps, schema, extra_inputs=frozenset(extras))
    if first is not None:
        loaded.one_row_s = _one_row_cost(loaded, loader.sample(models.get_by_ref(first.model)))
    return loaded


def _one_row_cost(loaded: LoadedPipeline, sample: pa.Table | None) -> float:
    """The median time of the steps on one sample row; inf when the sample cannot run alone (a split key or a
    check's column that the model's sample lacks)."""
    if sample is None or not sample.num_rows:
        return float("inf")
    try:
        row = loaded.conform(sample.slice(0, 1))
        took = []
        for _ in range(7):
            started = time.perf_counter()
            loaded.steps.run(Batch.start(row, None))
            took.append(time.perf_counter() - started)
    except Exception:
        return float("inf")
    return float(np.median(took))
