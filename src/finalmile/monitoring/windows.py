"""Monitor windows straight from the inference log: one DuckDB read per run, then the kind's score per window.

Windows end every `interval_s` after `start` and each covers the `window_s` before its end. The rows of a whole
run are read once, put in time order, and cut into windows with `searchsorted`, so a preview over months of history
costs one scan of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError
from finalmile.logs.query import LogReader, utc
from finalmile.monitoring.config import MonitorConfig, Status
from finalmile.monitoring.kinds import kind_of

_UNGROUPED = ""
MAX_WINDOWS = 10_000
"""Most windows one preview or run computes (a run picks up the rest at the next poll)."""


@dataclass
class MonitorResult:
    """One window's score, status and evidence (one per group when the monitor is grouped)."""

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
    reader: LogReader, config: MonitorConfig, ends: list[datetime], baseline: np.ndarray | None
) -> list[MonitorResult]:
    """The result of every window ending at `ends` (one per group when grouped); `baseline` for drift assays."""
    if not ends:
        return []
    kind = kind_of(config)
    width = timedelta(seconds=config.window_s)
    table = _read(reader, config, ends[0] - width, ends[-1], baseline)
    table, times = _by_time(table)
    groups = _groups(table, config)
    results = []
    for end in ends:
        lo_hi = _span(times, end - width, end)
        for group, mask in groups:
            rows = np.arange(*lo_hi)
            if mask is not None:
                rows = rows[mask[lo_hi[0] : lo_hi[1]]]
            score: float | None
            evidence: dict[str, Any]
            if len(rows) < config.min_rows:
                score, evidence = None, {}
            else:
                score, evidence = kind.score(config, table, rows, baseline)
            n = len(rows)
            evidence |= {"metric": config.metric, "warning": config.warning, "alert": config.alert}
            results.append(MonitorResult(end - width, end, n, score, kind.status(config, score, n), group, evidence))
    return results


def _by_time(table: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
    """The rows in time order and their times (µs). The log is read in its own order, which is time order within
    a part; sorting in SQL sorts every column read (~0.15 s of 0.5 s for 1M × 29 here), so the sort is left to the
    reads that need it, and done by the time column alone."""
    if not table.num_rows:
        return table, None
    column = table.column("time")  # as integers (µs): numpy's datetime64 from a chunked column took ~0.2 s for 1M
    times = column.cast(pa.timestamp("us", column.type.tz), safe=False).cast(pa.int64()).to_numpy()
    if len(times) > 1 and bool((times[1:] < times[:-1]).any()):
        order = np.argsort(times, kind="stable")
        table, times = table.take(pa.array(order)), times[order]
    return table, times


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


def _read(
    reader: LogReader, config: MonitorConfig, start: datetime, end: datetime, baseline: np.ndarray | None
) -> pa.Table:
    """`time`, `value` (and `truth` for performance, the group column when grouped) of the rows in [start, end)."""
    where = ["l.pipeline = ?", "l.time >= ?", "l.time < ?"]
    params: list[Any] = [config.pipeline, utc(start), utc(end)]
    if config.variant is not None:
        where.append("l.variant = ?")
        params.append(config.variant)
    extra = f", l.{config.group_by}" if config.group_by else ""
    return kind_of(config).read(reader, config, where, params, extra, baseline)
