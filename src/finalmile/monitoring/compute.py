"""Monitor computation straight from the inference log: one DuckDB read per run, then numpy per window.

Windows end every `interval_s` after `start` and each covers the `window_s` before its end. The rows of a whole
run are read once, sorted by time, and cut into windows with `searchsorted`, so a preview over months of history
costs one scan of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.errors import InvalidInputError
from finalmile.logs.query import QueryError, connect, utc
from finalmile.monitoring import drift
from finalmile.monitoring.config import MonitorConfig, Status

if TYPE_CHECKING:
    from finalmile.client import Client

_UNGROUPED = ""
MAX_WINDOWS = 10_000
"""Most windows one preview or run computes (a run picks up the rest at the next poll)."""


@dataclass
class MonitorResult:
    window_start: datetime
    window_end: datetime
    rows: int
    score: float | None
    status: Status
    group: str = _UNGROUPED
    """`variant=challenger` or `pipeline_version=3` when the monitor is grouped; empty otherwise."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """What the score was computed from: metric, thresholds, bin edges and both histograms, p-values."""


def window_ends(config: MonitorConfig, start: datetime, end: datetime) -> list[datetime]:
    step = timedelta(seconds=config.interval_s)
    count = int((end - start) / step)
    if count > MAX_WINDOWS:
        raise InvalidInputError(
            f"start/end: {count:,} windows of {config.interval_s:g} s; "
            f"at most {MAX_WINDOWS:,} at once (narrow the range)"
        )
    return [start + step * (k + 1) for k in range(max(count, 0))]


def compute(
    client: Client, config: MonitorConfig, ends: list[datetime], baseline: np.ndarray | None = None
) -> list[MonitorResult]:
    """The result of every window ending at `ends` (one per group when grouped)."""
    if not ends:
        return []
    width = timedelta(seconds=config.window_s)
    table = _read(client, config, ends[0] - width, ends[-1])
    times = table.column("time").to_numpy().astype("datetime64[us]").astype(np.int64) if table.num_rows else None
    if config.kind == "drift" and baseline is None:
        baseline = baseline_values(client, config)
    groups = _groups(table, config)
    results = []
    for end in ends:
        lo_hi = _span(times, end - width, end)
        for group, mask in groups:
            rows = np.arange(*lo_hi)
            if mask is not None:
                rows = rows[mask[lo_hi[0] : lo_hi[1]]]
            score, evidence = _score(config, table, rows, baseline)
            n = int(evidence.pop("rows", len(rows)))
            evidence |= {"metric": config.metric, "warning": config.warning, "alert": config.alert}
            results.append(MonitorResult(end - width, end, n, score, config.status(score, n), group, evidence))
    return results


def _span(times: np.ndarray | None, start: datetime, end: datetime) -> tuple[int, int]:
    if times is None:
        return 0, 0
    lo, hi = (int(np.datetime64(utc(t), "us").astype(np.int64)) for t in (start, end))
    return int(np.searchsorted(times, lo, "left")), int(np.searchsorted(times, hi, "left"))


def _groups(table: pa.Table, config: MonitorConfig) -> list[tuple[str, np.ndarray | None]]:
    if config.group_by is None or table.num_rows == 0:
        return [(_UNGROUPED, None)]
    values = np.asarray(table.column(config.group_by).to_pylist(), dtype=object).astype(str)
    return [(f"{config.group_by}={v}", values == v) for v in sorted(set(values.tolist()))]


def _score(
    config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
) -> tuple[float | None, dict[str, Any]]:
    if len(rows) < config.min_rows:
        return None, {"rows": len(rows)}
    if config.kind == "drift":
        assert baseline is not None
        return drift_score(config, baseline, _values(table, "value", rows))
    if config.kind == "check_rate":
        flags = _values(table, "value", rows).astype(bool)
        return float(flags.mean()), {"flagged": int(flags.sum())}
    if config.kind == "error_rate":
        errors = _values(table, "value", rows) > 0
        return float(errors.mean()), {"errors": int(errors.sum())}
    if config.kind == "latency_p99":
        return float(np.percentile(_values(table, "value", rows).astype(np.float64), 99)), {}
    from finalmile.monitoring.performance import performance_score

    return performance_score(config.metric, _values(table, "truth", rows), table.column("value").take(pa.array(rows)))


def _values(table: pa.Table, column: str, rows: np.ndarray) -> np.ndarray:
    col = table.column(column).take(pa.array(rows))
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.float64)
    return np.asarray(col.to_pylist(), dtype=object)


def drift_score(config: MonitorConfig, baseline: np.ndarray, window: np.ndarray) -> tuple[float, dict[str, Any]]:
    """A drift metric of `window` against `baseline`, with the bins, histograms and statistics it used."""
    metric = drift.DRIFT_METRICS[config.metric]
    if metric.kind == "categorical":
        statistic, pvalue, categories, base, win = drift.chi_squared(baseline, window)
        counts = {"categories": categories, "baseline_counts": base.tolist(), "window_counts": win.tolist()}
        return pvalue, counts | {"statistic": statistic, "pvalue": pvalue, "method": "chi_squared"}
    window = window.astype(np.float64)
    b = config.binning
    edges = drift.bin_edges(baseline, b.mode, b.bins, b.edges)
    p = drift.shares(drift.histogram(baseline, edges))
    q = drift.shares(drift.histogram(window, edges))
    evidence: dict[str, Any] = {
        "method": config.metric,
        "edges": edges.tolist(),
        "baseline_shares": p.tolist(),
        "window_shares": q.tolist(),
    }
    if metric.binned is not None:
        return metric.binned(p, q), evidence
    clean_b, clean_w = baseline[~np.isnan(baseline)], window[~np.isnan(window)]
    if config.metric == "wasserstein":
        return drift.wasserstein(clean_b, clean_w), evidence
    statistic, pvalue = drift.ks(clean_b, clean_w)
    evidence |= {"statistic": statistic, "pvalue": pvalue}
    return (statistic if config.metric == "ks" else pvalue), evidence


# -- reading the log -------------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read(client: Client, config: MonitorConfig, start: datetime, end: datetime) -> pa.Table:
    """`time`, `value` (and `truth` for performance, the group column when grouped) of the rows in [start, end)."""
    where = ["l.pipeline = ?", "l.time >= ?", "l.time < ?"]
    params: list[Any] = [config.pipeline, utc(start), utc(end)]
    if config.variant is not None:
        where.append("l.variant = ?")
        params.append(config.variant)
    extra = f", l.{config.group_by}" if config.group_by else ""
    if config.kind == "drift":
        select, where = f"l.{_quote(config.column or '')} AS value", [*where, "l.status = 'ok'"]
    elif config.kind == "check_rate":
        select, where = f"l.{_quote('check_' + (config.column or ''))} AS value", [*where, "l.status = 'ok'"]
    elif config.kind == "error_rate":
        select = "CAST(l.status <> 'ok' AS INTEGER) AS value"
    elif config.kind == "latency_p99":
        select, where = "l.latency_ms AS value", [*where, "l.row = 0"]  # one row per request
    else:
        return _read_with_truth(client, config, where, params, extra)
    sql = f"SELECT l.time, {select}{extra} FROM logs l WHERE {' AND '.join(where)} ORDER BY l.time"
    return _run(client, sql, params)


def _read_with_truth(
    client: Client, config: MonitorConfig, where: list[str], params: list[Any], extra: str
) -> pa.Table:
    conn = connect(client)  # one connection (one scan of the log's file list) for the key columns and the join
    try:
        keys = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT key_column FROM ground_truth WHERE pipeline = ?", [config.pipeline]
            ).fetchall()
        ]
        if not keys:
            return pa.table({"time": pa.array([], pa.timestamp("us", tz="UTC")), "value": [], "truth": []})
        prediction = prediction_column(config.metric, config.prediction)
        joins = [
            f"SELECT l.time, l.{_quote(prediction)} AS value, g.{_quote(config.label)} AS truth{extra} FROM logs l "
            f"JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key_column = '{k.replace(chr(39), '')}' "
            f"AND g.key = CAST(l.{_quote(k)} AS VARCHAR) WHERE {' AND '.join(where)} AND l.status = 'ok' "
            f"AND g.{_quote(config.label)} IS NOT NULL"
            for k in keys
        ]
        sql = " UNION ALL ".join(f"({j})" for j in joins) + " ORDER BY time"
        return _fetch(conn, sql, params * len(keys))
    finally:
        conn.close()


def prediction_column(metric: str, override: str | None = None) -> str:
    """The logged output a performance metric reads: labels, the binary score, or the regression prediction."""
    if override:
        return override
    if metric in ("roc_auc", "log_loss"):
        return "out_score"
    if metric in ("rmse", "mae", "r2"):
        return "out_prediction"
    return "out_label"


def _run(client: Client, sql: str, params: list[Any]) -> pa.Table:
    conn = connect(client)
    try:
        return _fetch(conn, sql, params)
    finally:
        conn.close()


def _fetch(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pa.Table:
    try:
        return conn.sql(sql, params=params).to_arrow_table()
    except Exception as exc:  # duckdb.Error: a column the log lacks, a label missing from the ground truth
        raise QueryError(f"monitor query failed: {exc}") from None


def baseline_values(client: Client, config: MonitorConfig) -> np.ndarray:
    """The baseline as a 1-D array: floats for numeric columns, objects for categories."""
    base = config.baseline
    assert base is not None and config.column is not None
    if base.kind == "log":
        where = ["pipeline = ?", "status = 'ok'"]
        params: list[Any] = [config.pipeline]
        for clause, value in (("time >= ?", base.start), ("time < ?", base.end)):
            if value is not None:
                where.append(clause)
                params.append(utc(value))
        if config.variant is not None:
            where.append("variant = ?")
            params.append(config.variant)
        sql = f"SELECT {_quote(config.column)} AS value FROM logs WHERE {' AND '.join(where)}"
        table = _run(client, sql, params)
    elif base.kind == "frame":
        assert base.artifact is not None
        table = pq.read_table(client._artifacts.verified_path(base.artifact))
    else:
        assert base.model is not None
        sample = client.model(base.model).sample()
        if sample is None:
            raise InvalidInputError(f"baseline: model {base.model} was uploaded without a sample")
        name = source_column(config.column, sample.column_names)
        table = sample.select([name]).rename_columns(["value"])
    values = _values(table, "value", np.arange(table.num_rows))
    if len(values) == 0:
        raise InvalidInputError(f"baseline: no rows of '{config.column}' in the baseline ({base.kind})")
    return values


def source_column(column: str, available: list[str]) -> str:
    """A log column's name in a frame: `in_amount` is `amount` in training data, `out_score` is `score`."""
    for candidate in (column, column.removeprefix("in_"), column.removeprefix("out_")):
        if candidate in available:
            return candidate
    raise InvalidInputError(f"baseline: no column '{column}' in the baseline; it has {', '.join(available)}")
