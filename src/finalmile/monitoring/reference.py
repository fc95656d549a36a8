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
from finalmile.monitoring.kinds.multivariate import complete_mask
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
    """The baseline's rows of the watched columns, in the monitor's order, as floats; it must have enough complete
    ones (every column a finite number), which are the ones both methods use."""
    columns = config.columns or []
    if base.kind == "log":
        where, params = log_range(config.pipeline, base)
        chosen = ", ".join(f"{quote(c)} AS c{i}" for i, c in enumerate(columns))
        table = run_sql(ctx.reader, f"SELECT {chosen} FROM logs WHERE {' AND '.join(where)}", params)
        found = matrix(_numeric(table, len(columns)))
    else:
        if base.kind == "model_sample":
            assert base.model is not None
            frame = ctx.loader.sample(ctx.models.get_by_ref(base.model))
            if frame is None:
                raise InvalidInputError(f"baseline: model {base.model} was uploaded without a sample")
        found = _frame_numbers(frame, columns)
    if int(complete_mask(found[: 4 * MIN_LABELLED]).sum()) >= MIN_LABELLED:  # the usual case, seen in its first rows
        return found
    complete = int(complete_mask(found).sum())
    if complete < MIN_LABELLED:
        raise InvalidInputError(
            f"baseline: {complete} complete rows (every watched column a finite number); at least "
            f"{MIN_LABELLED} are needed",
            {"field": "baseline"},
        )
    return found


def _frame_numbers(frame: Any, columns: list[str]) -> np.ndarray:
    """The watched columns of a frame as one float64 matrix, a row per row. A pandas frame whose columns lie in one
    float64 block gives it without a copy, where a fresh matrix of a million rows costs more in page faults than all
    the monitor then computes from it (0.6 s of 1 s here)."""
    if type(frame).__module__.split(".")[0] == "pandas":
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            names = [source_column(c, [str(n) for n in frame.columns]) for c in columns]
            chosen = frame[names]
            try:
                values = np.asfortranarray(chosen.to_numpy(dtype=np.float64, na_value=np.nan))
            except (TypeError, ValueError) as exc:
                raise _not_numeric(exc) from None
            return np.asarray(_Viewed(values, chosen))
    source = to_arrow(frame)[0]
    table = pa.table({f"c{i}": source.column(source_column(c, source.column_names)) for i, c in enumerate(columns)})
    return matrix(_numeric(table, len(columns)))


class _Viewed:
    """A matrix that views a pandas frame's memory, holding that frame for as long as the matrix lives (the array
    made from it keeps it as its base). pandas' copy-on-write tracks views through its own objects only: with the
    frame held, a later change to the caller's frame copies their frame first; without it, the change wrote
    through into the monitor's baseline."""

    def __init__(self, values: np.ndarray, frame: Any) -> None:
        self.__array_interface__ = values.__array_interface__
        self.values, self.frame = values, frame


def _numeric(table: pa.Table, width: int) -> pa.Table:
    try:
        return table.cast(pa.schema([(f"c{i}", pa.float64()) for i in range(width)]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _not_numeric(exc) from None


def _not_numeric(exc: Exception) -> InvalidInputError:
    return InvalidInputError(f"columns: multivariate drift needs numeric columns ({exc})", {"field": "columns"})


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
