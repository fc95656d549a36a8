"""Baselines of several columns, for the kinds that declare one (`MonitorKind.reference`), stored in the artifact store
when the monitor is saved (`baseline.store_matrix`) and read back as its baseline (a matrix, one row per reference row).

`labelled` (estimated performance): each reference row's score (a regressor's prediction) and label, and for the
losses the model's inputs, from a period of the log that has ground truth, or from a validation frame with the label
column, which the pipeline's model scores now.
`columns` (multivariate drift): the watched columns, from training data, a period of the log or a model's sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import to_arrow
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.monitoring.baseline import log_range, source_column
from finalmile.monitoring.config import Baseline, MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import kind_of
from finalmile.monitoring.kinds.base import matrix, quote, run_sql
from finalmile.monitoring.kinds.estimated import feature_select, prediction_of
from finalmile.pipelines.loaded import load_pipeline

MIN_LABELLED = 20
"""Fewer labelled reference rows than this cannot calibrate anything."""


def prepare_reference(ctx: MonitorContext, config: MonitorConfig, frame: Any) -> np.ndarray:
    """The reference as the monitor's kind reads it (a matrix, a row per reference row), kept in memory: it is
    stored when the monitor is saved (`baseline.store_matrix`), so one built to be previewed and dropped leaves
    nothing behind. `frame`: the data the caller gave, if they gave data."""
    base = config.baseline
    assert base is not None
    if kind_of(config).reference == "columns":
        found = _columns(ctx, config, base, frame)
        config.baseline = Baseline(kind="frame")
        if config.alert is None:  # the baseline's own spread says what is unusual
            config.alert = kind_of(config).default_alert(config, found)
        return found
    score = prediction_of(config)
    if base.kind == "log":
        table = _from_log(ctx, config, base, score)
    elif base.kind == "frame" and frame is not None:
        table = _scored(ctx, config, frame, score.removeprefix("out_"))
    else:
        raise InvalidInputError("reference: a model's sample has no labels; give a labelled period or a frame",
                                {"field": "reference"})  # fmt: skip
    table = table.filter(pa.compute.is_valid(table.column("truth")))
    if table.num_rows < MIN_LABELLED:
        raise InvalidInputError(
            f"reference: {table.num_rows} labelled rows; at least {MIN_LABELLED} are needed to calibrate",
            {"field": "reference"},
        )
    config.baseline = Baseline(kind="frame")
    return matrix(table)


def _columns(ctx: MonitorContext, config: MonitorConfig, base: Baseline, frame: Any) -> np.ndarray:
    """The baseline's complete rows of the watched columns, in the monitor's order, as floats."""
    columns = config.columns or []
    if base.kind == "log":
        where, params = log_range(config.pipeline, base)
        chosen = ", ".join(f"{quote(c)} AS c{i}" for i, c in enumerate(columns))
        table = run_sql(ctx.reader, f"SELECT {chosen} FROM logs WHERE {' AND '.join(where)}", params)
    else:
        if base.kind == "model_sample":
            assert base.model is not None
            frame = ctx.loader.sample(ctx.models.get_by_ref(base.model))
            if frame is None:
                raise InvalidInputError(f"baseline: model {base.model} was uploaded without a sample")
        source = to_arrow(frame)[0]
        table = pa.table({f"c{i}": source.column(source_column(c, source.column_names)) for i, c in enumerate(columns)})
    try:
        table = table.cast(pa.schema([(f"c{i}", pa.float64()) for i in range(len(columns))]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(
            f"columns: multivariate drift needs numeric columns ({exc})", {"field": "columns"}
        ) from None
    found = matrix(table, complete=True)  # both methods use whole rows only: the baseline keeps those
    if len(found) < MIN_LABELLED:
        raise InvalidInputError(
            f"baseline: {len(found)} complete rows (every watched column a finite number); at least "
            f"{MIN_LABELLED} are needed",
            {"field": "baseline"},
        )
    return found


def _from_log(ctx: MonitorContext, config: MonitorConfig, base: Baseline, score: str) -> pa.Table:
    where, params = log_range(config.pipeline, base, "l.")
    features = "".join(f", {feature_select(c, i, 'l.')}" for i, c in enumerate(config.columns or []))
    sql = (
        f"SELECT CAST(l.{quote(score)} AS DOUBLE) AS value, CAST(g.{quote(config.label)} AS DOUBLE) AS truth"
        f"{features} FROM logs l JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key = l.request_id "
        f"WHERE {' AND '.join(where)}"
    )
    labelled = run_sql(ctx.reader, "SELECT count(*) AS n FROM ground_truth WHERE pipeline = ?", [config.pipeline])
    if not labelled.column("n")[0].as_py():
        raise InvalidInputError(
            f"reference: no ground truth has arrived for pipeline '{config.pipeline}', so no period of its log has "
            "labels (send some, or give a labelled validation frame)",
            {"field": "reference"},
        )
    try:
        return run_sql(ctx.reader, sql, params)
    except FinalmileError as exc:
        raise InvalidInputError(f"reference: {exc.message}", {"field": "reference"}) from None


def _scored(ctx: MonitorContext, config: MonitorConfig, frame: Any, score: str) -> pa.Table:
    """The validation frame's scores: its own score column where it has one, else the frame through the pipeline's
    model (the version serving, else the latest)."""
    table = to_arrow(frame)[0]
    if config.label not in table.column_names:
        raise InvalidInputError(
            f"label: the reference frame has no column '{config.label}' (it has {', '.join(table.column_names)})",
            {"field": "label"},
        )
    if score in table.column_names:  # the model's scores came with the labels: taken as they are
        outputs = table.select([score])
    else:
        served = ctx.pipelines.deployment(config.pipeline)
        record = ctx.pipelines.get_version(config.pipeline, served.version if served else None)
        loaded = load_pipeline(record, ctx.models, ctx.loader, table.num_rows)
        inputs = table.drop_columns([config.label])
        outputs = loaded.run(loaded.conform(inputs), log=False).table
    if score not in outputs.column_names:
        raise InvalidInputError(
            f"prediction: the pipeline outputs no '{score}' (it outputs {', '.join(outputs.column_names)})",
            {"field": "prediction"},
        )
    columns = {"value": outputs.column(score), "truth": table.column(config.label)}
    for i, column in enumerate(config.columns or []):  # the loss model's inputs (`amount` for `in_amount`)
        columns[f"f{i}"] = table.column(source_column(column, table.column_names))
    try:
        return pa.table(columns).cast(pa.schema([(name, pa.float64()) for name in columns]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(f"reference: the columns must be numbers ({exc})", {"field": "reference"}) from None
