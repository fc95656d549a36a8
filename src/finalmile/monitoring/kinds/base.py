"""`MonitorKind`: how one kind of monitor reads its rows from the log and scores a window of them.

A kind is configuration-free: it gets the monitor's `MonitorConfig` with every call, so one instance serves every
monitor of its kind, and the config stays a plain serialisable model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

from finalmile.errors import QueryError
from finalmile.logs.query import LogReader
from finalmile.monitoring.config import MonitorConfig, Status

T = TypeVar("T")
Condense = Callable[[pa.RecordBatch], pa.RecordBatch]
CONDENSED_ROWS = 131_072
"""Rows per batch a condensed read takes from DuckDB (its own default)."""
CONDENSED_MEMORY_MB = 128
"""DuckDB's memory limit for a condensed read, a scan streamed a batch at a time: with the queries' 1 GB it kept
~150 MB more cached for 1M rows × 30 columns, and was no faster."""


class MonitorKind:
    """One kind of monitor. Subclasses name the value they read (`select`) and score a window of it (`score`)."""

    name: ClassVar[str]
    column_noun: ClassVar[str] = "column"
    """What `MonitorConfig.column` names for this kind, in messages."""
    reference: ClassVar[str | None] = None
    """A baseline of several columns, prepared by `monitoring.reference`: `labelled` (scores and labels) or
    `columns` (the watched columns); None: one column's values."""

    def check(self, config: MonitorConfig) -> list[str]:
        """Problems with a configuration of this kind, each naming its field; checked when a monitor is built."""
        return []

    def higher_is_worse(self, config: MonitorConfig) -> bool:
        return True

    def needs_baseline(self, config: MonitorConfig) -> bool:
        """Whether windows are scored against baseline values (read once per run, stored with the monitor)."""
        return False

    def default_alert(self, config: MonitorConfig, baseline: np.ndarray) -> float | None:
        """The alert threshold a monitor gets from its baseline when it names none (None: no alert)."""
        return None

    def logged_column(self, config: MonitorConfig) -> str | None:
        """The log column the monitor reads, which must exist (or be produced by the pipeline) when it is built."""
        return None

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        """The SQL expression read `AS value` from the log `l`, and conditions beyond pipeline, time and variant."""
        raise NotImplementedError

    def read(
        self,
        reader: LogReader,
        config: MonitorConfig,
        where: list[str],
        params: list[Any],
        extra: str,
        baseline: np.ndarray | None = None,
    ) -> pa.Table:
        """`time`, `value` (and whatever `score` needs) of the rows matching `where`, in the log's order (the windows
        put them in time order where they are not), each batch `condense`d as it is read."""
        select, more = self.select(config)
        sql = f"SELECT l.time, {select}{extra} FROM logs l WHERE {' AND '.join([*where, *more])}"
        return run_sql(reader, sql, params, self.condense(config, baseline))

    def condense(self, config: MonitorConfig, baseline: np.ndarray | None) -> Condense | None:
        """What each batch of the rows read becomes before it is kept, for a kind whose score needs much less than
        the columns it reads (the PCA keeps a row's reconstruction error, not its 29 columns): the rows are then read
        a batch at a time and never held whole. None: kept as read."""
        return None

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        """The window's score and its evidence, from the rows `rows` of `table`."""
        raise NotImplementedError

    def status(self, config: MonitorConfig, score: float | None, rows: int) -> Status:
        """`alert` at or beyond the alert threshold, `warning` at or beyond the warning threshold, else `ok`."""
        if score is None or rows < config.min_rows:
            return "no data"
        worse = self.higher_is_worse(config)

        def crossed(threshold: float | None) -> bool:
            if threshold is None:
                return False
            return score >= threshold if worse else score <= threshold

        if crossed(config.alert):
            return "alert"
        if crossed(config.warning):
            return "warning"
        return "ok"


class ColumnKind(MonitorKind):
    """A kind that reads one logged column the monitor names (`in_amount`, or `amount` where only one of `in_` and
    `out_` exists), from rows served without error."""

    def logged_column(self, config: MonitorConfig) -> str | None:
        return config.column

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        return f"l.{quote(config.column or '')} AS value", ["l.status = 'ok'"]


_FITTED: dict[tuple[str, tuple[int, ...], float], Any] = {}
_FITTED_KEPT = 8


def fitted_once(what: str, baseline: np.ndarray, fit: Callable[[np.ndarray], T]) -> T:
    """`fit(baseline)`, remembered by the baseline's content for the last few baselines: a run scores every window
    against one baseline, and what is learnt from it (a calibration, a PCA) need not be learnt again each window."""
    key = (what, baseline.shape, float(np.nansum(baseline[:: max(1, len(baseline) // 1000)])))
    if key not in _FITTED:
        if len(_FITTED) >= _FITTED_KEPT:
            _FITTED.clear()
        _FITTED[key] = fit(baseline)
    return _FITTED[key]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def values(table: pa.Table, column: str, rows: np.ndarray) -> np.ndarray:
    """The chosen rows of a column: floats for numbers, objects for anything else."""
    col = table.column(column).take(pa.array(rows))
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.float64)
    return np.asarray(col.to_pylist(), dtype=object)


def matrix(table: pa.Table, complete: bool = False) -> np.ndarray:
    """A table of numeric columns as one float64 matrix, a row per row, in column-major order: each column is one
    contiguous copy (filling a row-major matrix column by column strides through memory: 0.5 s against 0.1 s for
    1M × 29 here), and every reduction the kinds make is per column anyway. `complete`: only the rows whose values
    are all finite, chosen column by column while copying (a second matrix of them costs as much as the first)."""
    columns = [c.to_numpy(zero_copy_only=False).astype(np.float64, copy=False) for c in table.columns]
    keep = None
    if complete and columns:
        total = columns[0].copy()
        for column in columns[1:]:
            total += column  # finite only where every value of the row is
        keep = None if np.isfinite(total).all() else np.isfinite(total)
    rows = table.num_rows if keep is None else int(keep.sum())
    out = np.empty((rows, len(columns)), dtype=np.float64, order="F")
    for i, column in enumerate(columns):
        out[:, i] = column if keep is None else column[keep]
    return out


def run_sql(reader: LogReader, sql: str, params: list[Any], condense: Condense | None = None) -> pa.Table:
    with reader.connection(memory_mb=None if condense is None else CONDENSED_MEMORY_MB) as conn:
        return fetch(conn, sql, params, condense)


def fetch(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any], condense: Condense | None = None) -> pa.Table:
    """The rows the query answers; with `condense`, read a batch at a time and each batch condensed as it comes, its
    numpy products on one BLAS thread: BLAS threads of their own would only wait on DuckDB's for the same cores (a
    PCA window of 1M rows: 0.50 → 0.37 s)."""
    try:
        relation = conn.sql(sql, params=params)
        if condense is None:
            return relation.to_arrow_table()
        batches = relation.to_arrow_reader(CONDENSED_ROWS)
        with threadpool_limits(1, user_api="blas"):  # DuckDB's threads fill the cores while its batches come
            kept = [condense(batch) for batch in batches]
    except Exception as exc:  # duckdb.Error: a column the log lacks, a label missing from the ground truth
        raise QueryError(f"monitor query failed: {exc}") from None
    return pa.Table.from_batches(kept or [condense(pa.RecordBatch.from_pylist([], schema=batches.schema))])
