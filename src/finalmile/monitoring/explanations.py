"""Explanations of what was served: a logged request's rows explained with the model version that scored them, and
per window the mean absolute contribution of each feature over a sample of its rows (global importance over time,
so a shift in *why* the model decides shows). On demand, off the request path: the inputs come from the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError, NotFoundError
from finalmile.logs.query import utc
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds.base import run_sql
from finalmile.monitoring.windows import window_ends
from finalmile.registry.store import VersionRecord
from finalmile.runtimes.explain import explain

IMPORTANCE_ROWS = 200
"""Rows explained per window for global importance, drawn by a hash of their ids (the same rows every time)."""


def explain_rows(ctx: MonitorContext, record: VersionRecord, table: pa.Table, background: pa.Table | None) -> pa.Table:
    """`table`'s rows explained with model version `record` (its own framework, code in its sandbox)."""
    runtime = ctx.loader.load(record, "native")
    return explain(runtime, table, background if background is not None else ctx.loader.sample(record))


def explain_request(ctx: MonitorContext, pipeline: str, request_id: str) -> pa.Table:
    """Every row of a logged request: its model, and each feature's contribution to its output."""
    ctx.pipelines.get_version(pipeline)  # an unknown pipeline is a 404
    rows = run_sql(
        ctx.reader,
        "SELECT * FROM logs WHERE pipeline = ? AND request_id = ? AND status = 'ok' ORDER BY row",
        [pipeline, request_id],
    )
    if rows.num_rows == 0:
        raise NotFoundError(f"no request {request_id!r} answered by pipeline '{pipeline}' in the log",
                            {"request_id": request_id})  # fmt: skip
    record, inputs = _model_inputs(ctx, rows)
    explained = explain_rows(ctx, record, inputs, None)
    head = pa.table({"request_id": rows.column("request_id").cast(pa.string()), "row": rows.column("row"),
                     "model": pa.array([f"{record.name}:{record.version}"] * rows.num_rows)})  # fmt: skip
    for name, column in zip(explained.column_names, explained.columns, strict=True):
        head = head.append_column(name, column)
    return head.replace_schema_metadata(explained.schema.metadata)


def importance(ctx: MonitorContext, pipeline: str, start: datetime, end: datetime, window_s: float,
               rows: int = IMPORTANCE_ROWS) -> pa.Table:  # fmt: skip
    """Per window ending in (start, end]: each feature's mean absolute contribution over a sample of its rows. One
    read of the log: each row numbered within its window, the first `rows` of each kept."""
    ctx.pipelines.get_version(pipeline)
    config = MonitorConfig(name="importance", pipeline=pipeline, window_s=window_s, interval_s=window_s)
    ends = window_ends(config, start, end)  # also refuses more windows than a preview computes
    if not ends:
        return pa.Table.from_pylist([], schema=_IMPORTANCE)
    step_us = int(window_s * 1_000_000)
    found = run_sql(
        ctx.reader,
        f"SELECT *, (epoch_us(time) - epoch_us(?::TIMESTAMPTZ)) // {step_us} AS window_index FROM logs "
        "WHERE pipeline = ? AND status = 'ok' AND time >= ? AND time < ? "
        f"QUALIFY row_number() OVER (PARTITION BY window_index ORDER BY hash(request_id, row)) <= {int(rows)}",
        [utc(start), pipeline, utc(start), utc(ends[-1])],
    )
    index = found.column("window_index").to_numpy() if found.num_rows else np.zeros(0, np.int64)
    out: list[dict[str, Any]] = []
    for k, window_end in enumerate(ends):
        sample = found.filter(pa.array(index == k))
        if sample.num_rows == 0:
            continue
        record, inputs = _model_inputs(ctx, sample)
        explained = explain_rows(ctx, record, inputs, None)
        for name in inputs.column_names:
            mean = float(np.abs(explained.column(name).to_numpy(zero_copy_only=False)).mean())
            out.append({"window_end": window_end, "feature": name, "mean_abs_contribution": mean,
                        "rows": sample.num_rows, "model": f"{record.name}:{record.version}"})  # fmt: skip
    return pa.Table.from_pylist(out, schema=_IMPORTANCE)


_IMPORTANCE = pa.schema(
    [
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("feature", pa.string()),
        ("mean_abs_contribution", pa.float64()),
        ("rows", pa.int64()),
        ("model", pa.string()),
    ]
)


def _model_inputs(ctx: MonitorContext, rows: pa.Table) -> tuple[VersionRecord, pa.Table]:
    """The model that scored these logged rows (the route's first), and its inputs as the log holds them."""
    route = str(rows.column("model_versions")[0].as_py() or "")
    ref = route.split(",")[0]
    if not ref:
        raise InvalidInputError("request_id: its rows name no model version", {"field": "request_id"})
    record = ctx.models.get_by_ref(ref)
    names = [str(c["name"]) for c in (record.schema.get("inputs") or [])]
    missing = [n for n in names if f"in_{n}" not in rows.column_names]
    if not names or missing:
        raise InvalidInputError(
            f"request_id: model {ref} reads {', '.join(missing) or 'a tensor'}, which the log does not hold as "
            "inputs (a step before it changed them): explain the model on its own inputs (ModelVersion.explain)",
            {"field": "request_id"},
        )
    return record, pa.table({n: rows.column(f"in_{n}") for n in names})
