"""The log row layout: one row per inferred row, built from the very Arrow batches that were served.

Columns: `time`, `request_id`, `row`, `pipeline`, `pipeline_version`, `variant`, `model_versions`, `latency_ms`,
`status`, then `in_<column>` for every input, `out_<column>` for every output, `shadow_<challenger>_<column>` for
every shadow output and `check_<name>` for every check flag.

Rows are built for many served batches at once (`log_table` over a run of batches of one deployed version): the
tables are concatenated, and every per-row column comes from a handful of numpy calls, so logging costs a few
microseconds a batch instead of a few hundred.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from finalmile.frames import wrap_numpy
from finalmile.registry.schema import expand_tensor
from finalmile.serving.codecs import expand_named_tensor

_SMALL_BATCH_ROWS = 256

if TYPE_CHECKING:
    from finalmile.pipelines.executor import Batch
    from finalmile.serving.deployments import LoadedPipeline


@dataclass
class Served:
    """One served batch waiting to be logged: what ran, when it was answered, and how long it took."""

    loaded: LoadedPipeline
    batch: Batch
    at_us: int

    def group_key(self) -> tuple[object, ...]:
        """Batches with equal keys have the same columns, so their log rows are built together."""
        b = self.batch
        return (
            id(self.loaded),
            b.inputs.schema,
            b.table.schema,
            tuple((k, t.schema) for k, t in b.shadow.items()),
            tuple(b.checks),
        )


def log_tables(served: list[Served]) -> list[tuple[str, pa.Table]]:
    """The log rows of `served`, one table per run of batches that share a layout, as (pipeline, table)."""
    tables: list[tuple[str, pa.Table]] = []
    start = 0
    for i in range(1, len(served) + 1):
        if i == len(served) or served[i].group_key() != served[start].group_key():
            group = served[start:i]
            tables.append((group[0].loaded.name, log_table(group)))
            start = i
    return tables


def log_table(group: list[Served]) -> pa.Table:
    """The log rows of batches of one deployed version with one layout (see `Served.group_key`)."""
    loaded = group[0].loaded
    batches = [s.batch for s in group]
    sizes = np.array([b.table.num_rows for b in batches], dtype=np.int64)
    n = int(sizes.sum())

    # Request ids and row numbers: each batch's request indices, offset into one list of ids.
    n_requests = np.array([len(b.request_ids) for b in batches], dtype=np.int64)
    offsets = np.repeat(np.concatenate([[0], np.cumsum(n_requests)[:-1]]), sizes)
    requests = np.concatenate([b.requests for b in batches]).astype(np.int64) + offsets if n else np.zeros(0, np.int64)
    ids = [i for b in batches for i in b.request_ids]
    first = np.r_[True, requests[1:] != requests[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.zeros(int(n_requests.sum()), dtype=np.int64)
    starts[requests[first]] = np.flatnonzero(first)

    # Routes (variant + model versions) as codes into one small list of distinct routes.
    distinct: dict[tuple[str | None, tuple[str, ...]], int] = {}
    codes = []
    for b in batches:
        local = np.array([distinct.setdefault(r, len(distinct)) for r in b.routes], dtype=np.int32)
        codes.append(local[b.route_index] if b.route_index is not None else np.full(b.table.num_rows, local[0]))
    route_codes = np.concatenate(codes) if codes else np.zeros(0, np.int32)

    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "time": wrap_numpy(
            pa.timestamp("us", tz="UTC"), np.repeat(np.array([s.at_us for s in group], np.int64), sizes)
        ),
        "request_id": take_strings(ids, requests),
        "row": wrap_numpy(pa.int32(), (np.arange(n, dtype=np.int64) - starts[requests]).astype(np.int32)),
        "pipeline": take_strings([loaded.name], np.zeros(n, np.int64)),
        "pipeline_version": wrap_numpy(pa.int32(), np.full(n, loaded.version, dtype=np.int32)),
        "variant": take_strings([v for v, _ in distinct], route_codes),
        "model_versions": take_strings([",".join(m) for _, m in distinct], route_codes),
        "latency_ms": wrap_numpy(pa.float64(), np.repeat(np.array([b.elapsed_s * 1000 for b in batches]), sizes)),
        "status": take_strings(["ok"], np.zeros(n, np.int64)),
    }
    # Many small batches (one-row requests) are joined into single chunks first: one Arrow call instead of a Python
    # step per chunk here, and one record batch instead of thousands in the journal.
    small = n < _SMALL_BATCH_ROWS * len(batches)

    def joined(tables: list[pa.Table]) -> pa.Table:
        table = pa.concat_tables(tables)
        return table.combine_chunks() if small else table

    inputs = _named(joined([b.inputs for b in batches]), loaded)
    for name, col in zip(inputs.column_names, inputs.columns, strict=True):
        columns[f"in_{name}"] = col
    outputs = joined([b.table for b in batches])
    for name, col in zip(outputs.column_names, outputs.columns, strict=True):
        columns[f"out_{name}"] = col
    for challenger in batches[0].shadow:
        shadow = joined([b.shadow[challenger] for b in batches])
        for name, col in zip(shadow.column_names, shadow.columns, strict=True):
            columns[f"shadow_{challenger}_{name}"] = col
    for name in batches[0].checks:
        columns[f"check_{name}"] = pa.array(np.concatenate([b.checks[name] for b in batches]), type=pa.bool_())
    return pa.table(columns)


def take_strings(values: Sequence[str | None], index: np.ndarray) -> pa.Array:
    """`values[index]` as an Arrow string array. Request ids, variants and model versions have equal lengths within
    a list, so the bytes are gathered as rows of a numpy matrix: no Python string per row."""
    if all(v is None for v in values):
        return pa.nulls(len(index), pa.string())
    encoded = [v.encode() for v in values if v is not None]
    width = len(encoded[0])
    if len(encoded) < len(values) or any(len(e) != width for e in encoded) or width == 0:
        return pa.array(values, pa.string()).take(pa.array(index))
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).reshape(len(encoded), width)[index]
    offsets = np.arange(len(index) + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.string(), len(index), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _named(inputs: pa.Table, loaded: LoadedPipeline) -> pa.Table:
    """Inputs as named columns (analysts query `in_amount`, not a tensor), whatever form the request used."""
    inputs = expand_named_tensor(inputs)
    validator, schema = loaded._validator, loaded.input_schema
    if validator is not None and schema is not None and validator.is_tensor_form(inputs):
        return expand_tensor(inputs, schema)
    return inputs
