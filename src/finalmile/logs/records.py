"""The log row layout: one row per inferred row, built from the very Arrow batch that was served.

Columns: `time`, `request_id`, `row`, `pipeline`, `pipeline_version`, `variant`, `model_versions`, `latency_ms`,
`status`, then `in_<column>` for every input, `out_<column>` for every output, `shadow_<challenger>_<column>` for
every shadow output and `check_<name>` for every check flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from finalmile.registry.schema import expand_tensor
from finalmile.serving.codecs import expand_named_tensor

if TYPE_CHECKING:
    from finalmile.pipelines.executor import Batch
    from finalmile.serving.deployments import LoadedPipeline


def log_table(loaded: LoadedPipeline, batch: Batch, at_us: int, latency_ms: float) -> pa.Table:
    n = batch.table.num_rows
    requests = batch.requests
    starts = np.zeros(int(requests.max()) + 1 if n else 0, dtype=np.int64)
    if n:
        first = np.r_[True, requests[1:] != requests[:-1]]
        starts[requests[first]] = np.flatnonzero(first)
    ids = np.asarray(batch.request_ids, dtype=object)
    routes = batch.row_routes()
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "time": pa.array(np.full(n, at_us, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "request_id": pa.array(ids[requests] if n else [], type=pa.string()),
        "row": pa.array(np.arange(n, dtype=np.int64) - starts[requests] if n else [], type=pa.int32()),
        "pipeline": pa.array([loaded.name] * n, type=pa.string()),
        "pipeline_version": pa.array(np.full(n, loaded.version, dtype=np.int32)),
        "variant": pa.array([variant for variant, _ in routes], type=pa.string()),
        "model_versions": pa.array([",".join(models) for _, models in routes], type=pa.string()),
        "latency_ms": pa.array(np.full(n, latency_ms, dtype=np.float64)),
        "status": pa.array(["ok"] * n, type=pa.string()),
    }
    inputs = _named(batch.inputs, loaded)
    for name, col in zip(inputs.column_names, inputs.columns, strict=True):
        columns[f"in_{name}"] = col
    for name, col in zip(batch.table.column_names, batch.table.columns, strict=True):
        columns[f"out_{name}"] = col
    for challenger, table in batch.shadow.items():
        for name, col in zip(table.column_names, table.columns, strict=True):
            columns[f"shadow_{challenger}_{name}"] = col
    for name, flags in batch.checks.items():
        columns[f"check_{name}"] = pa.array(flags, type=pa.bool_())
    return pa.table(columns)


def _named(inputs: pa.Table, loaded: LoadedPipeline) -> pa.Table:
    """Inputs as named columns (analysts query `in_amount`, not a tensor), whatever form the request used."""
    inputs = expand_named_tensor(inputs)
    validator, schema = loaded._validator, loaded.input_schema
    if validator is not None and schema is not None and validator.is_tensor_form(inputs):
        return expand_tensor(inputs, schema)
    return inputs
