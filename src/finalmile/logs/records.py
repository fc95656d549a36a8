"""The log row layout: one row per inferred row, built from the very Arrow batches that were served.

Columns: `time`, `request_id`, `row`, `pipeline_version`, `variant`, `model_versions`, `latency_ms`, `status`,
then `in_<column>` for every input, `out_<column>` for every output, `shadow_<challenger>_<column>` for every shadow
output and `check_<name>` for every check flag. The pipeline is named by the journal's file name and the Parquet
partition (`pipeline=…`), where the `logs` view reads it, not by a column.

Rows are built for many served batches at once (`log_table` over a run of batches of one deployed version): the
tables are concatenated, and every per-row column comes from a handful of numpy calls, so logging costs a few
microseconds a batch instead of a few hundred.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import finalmile.tracing as tracing
from finalmile.arrow.frames import wrap_numpy
from finalmile.arrow.tensors import expand_named_tensor
from finalmile.schema import expand_tensor

_SMALL_BATCH_ROWS = 256
PIECE_ROWS = 32_768

if TYPE_CHECKING:
    from finalmile.pipelines.batch import Batch
    from finalmile.pipelines.loaded import LoadedPipeline


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


def layout_runs(served: list[Served]) -> list[list[Served]]:
    """`served` cut into runs of consecutive batches that share a layout (see `Served.group_key`)."""
    runs: list[list[Served]] = []
    previous: tuple[object, ...] | None = None
    for s in served:
        key = s.group_key()
        if key != previous:
            runs.append([])
            previous = key
        runs[-1].append(s)
    return runs


def log_tables(run: list[Served], max_rows: int = PIECE_ROWS) -> Iterator[pa.Table]:
    """The log rows of one run of batches, built lazily in pieces of about `max_rows` rows (a batch is never cut).

    Pieces keep each build's memory under glibc's mmap threshold, so it is reused from one second to the next; a
    whole second of heavy traffic built at once (70 MB) was mapped fresh and page-faulted in every time, which cost
    more than building it."""
    start, rows = 0, 0
    for i, s in enumerate(run):
        rows += s.batch.table.num_rows
        if rows >= max_rows or i == len(run) - 1:
            yield log_table(run[start : i + 1])
            start, rows = i + 1, 0


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
    ids = list(chain.from_iterable(b.request_ids for b in batches))
    first = np.r_[True, requests[1:] != requests[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.zeros(int(n_requests.sum()), dtype=np.int64)
    starts[requests[first]] = np.flatnonzero(first)

    # Routes (variant + model versions) as codes into one small list of distinct routes. Most batches took one
    # route (no A/B split), so theirs is one code repeated; a split batch's rows are filled in afterwards.
    distinct: dict[tuple[str | None, tuple[str, ...]], int] = {}
    one_route = np.array([distinct.setdefault(b.routes[0], len(distinct)) for b in batches], dtype=np.int32)
    route_codes = np.repeat(one_route, sizes)
    batch_starts = np.cumsum(sizes) - sizes
    for b, at in zip(batches, batch_starts.tolist(), strict=True):
        if b.route_index is not None:
            local = np.array([distinct.setdefault(r, len(distinct)) for r in b.routes], dtype=np.int32)
            route_codes[at : at + len(b.route_index)] = local[b.route_index]

    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "time": wrap_numpy(
            pa.timestamp("us", tz="UTC"), np.repeat(np.array([s.at_us for s in group], np.int64), sizes)
        ),
        "request_id": take_strings(ids, requests),
        "row": wrap_numpy(pa.int32(), (np.arange(n, dtype=np.int64) - starts[requests]).astype(np.int32)),
        "pipeline_version": wrap_numpy(pa.int32(), np.full(n, loaded.version, dtype=np.int32)),
        "variant": take_strings([v for v, _ in distinct], route_codes),
        "model_versions": take_strings([",".join(m) for _, m in distinct], route_codes),
        "latency_ms": wrap_numpy(pa.float64(), _latency_ms(batches, sizes, batch_starts, route_codes, distinct)),
        "status": take_strings(["ok"], np.zeros(n, np.int64)),
    }
    if tracing.enabled() or any(b.trace_ids for b in batches):  # tracing on: each row names its request's trace
        # (null where the sampler dropped it): a column present only when a sampled request is in the piece would
        # change the journal's schema with the sampler's draws, and each change seals the journal as a Parquet part
        traces = list(chain.from_iterable(b.trace_ids or [None] * len(b.request_ids) for b in batches))
        columns["trace_id"] = take_strings(traces, requests)
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


def _latency_ms(
    batches: list[Batch],
    sizes: np.ndarray,
    starts: np.ndarray,
    route_codes: np.ndarray,
    distinct: dict[tuple[str | None, tuple[str, ...]], int],
) -> np.ndarray:
    """Each row's milliseconds: its batch's, less the time the A/B variants it did not take spent."""
    latency = np.repeat(np.array([b.elapsed_s * 1000 for b in batches]), sizes)
    variants = list(distinct)
    for b, at, n in zip(batches, starts.tolist(), sizes.tolist(), strict=True):
        if b.variant_s:
            shared = b.elapsed_s - sum(b.variant_s.values())
            own = np.array([b.variant_s.get(v or "", 0.0) for v, _ in variants])
            latency[at : at + n] = (shared + own[route_codes[at : at + n]]) * 1000
    return latency


def take_strings(values: Sequence[str | None], index: np.ndarray) -> pa.DictionaryArray:
    """`values[index]` as an Arrow dictionary array: each row holds a small integer code (no string is copied),
    and Parquet writes the dictionary as it is instead of hashing every row's string to build one."""
    dictionary = pa.array(values, pa.string())
    codes = wrap_numpy(pa.int32(), index.astype(np.int32))
    if dictionary.null_count:  # a missing value is a null code, never a null in the dictionary (Parquet can't write it)
        codes = pc.if_else(pc.take(dictionary.is_null(), codes), None, codes)
        dictionary = dictionary.fill_null("")
    return pa.DictionaryArray.from_arrays(codes, dictionary)


def _named(inputs: pa.Table, loaded: LoadedPipeline) -> pa.Table:
    """Inputs as named columns (analysts query `in_amount`, not a tensor), whatever form the request used, in
    the float type they were served in (a V2 client's FP32 tensor is logged as float32: `logs` reads it as
    DOUBLE where other parts of the log hold float64)."""
    inputs = expand_named_tensor(inputs)
    validator, schema = loaded.validator, loaded.input_schema
    if validator is not None and schema is not None and validator.is_tensor_form(inputs):
        return expand_tensor(inputs, schema, as_served=True)
    return inputs
