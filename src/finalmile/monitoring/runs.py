"""Running a saved monitor: every window that has ended is computed and stored once; alerts raise its actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from finalmile.monitoring.actions import take_actions
from finalmile.monitoring.baseline import baseline_values, store_matrix
from finalmile.monitoring.config import MonitorConfig, aware_utc
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import kind_of
from finalmile.monitoring.store import SavedMonitor
from finalmile.monitoring.windows import MAX_WINDOWS, MonitorResult, compute, window_ends

if TYPE_CHECKING:
    import pandas as pd


def run_monitor(ctx: MonitorContext, saved: SavedMonitor, now: datetime | None = None) -> list[MonitorResult]:
    """Compute and store the windows of `saved` that ended by `now`, record alerts, take actions."""
    now = aware_utc(now or datetime.now(UTC))
    step = timedelta(seconds=saved.config.interval_s)
    ends: list[datetime] = []
    at = saved.next_window_end
    while at <= now and len(ends) < MAX_WINDOWS:
        ends.append(at)
        at += step
    if not ends:
        return []
    baseline = baseline_values(ctx, saved.config) if kind_of(saved.config).needs_baseline(saved.config) else None
    results = compute(ctx.reader, saved.config, ends, baseline)
    alerts = ctx.store.record(saved, results, at, {"alert", "warning"})
    if alerts:
        take_actions(ctx.deployer, ctx.store, saved, alerts)
    return results


def save(
    ctx: MonitorContext, config: MonitorConfig, start: datetime | None = None, baseline: np.ndarray | None = None
) -> SavedMonitor:
    """Store a monitor (and the reference it was built with, `baseline`); its first window ends one interval after
    `start` (default: now)."""
    store_matrix(ctx.artifacts, config, baseline)
    first = aware_utc(start or datetime.now(UTC)) + timedelta(seconds=config.interval_s)
    return ctx.store.create(config, first)


def preview(
    ctx: MonitorContext,
    config: MonitorConfig,
    start: datetime | None = None,
    end: datetime | None = None,
    baseline: np.ndarray | None = None,
) -> list[MonitorResult]:
    """Every window ending between `start` + interval and `end` (default now), computed at once, not stored;
    `start` defaults to a day before `end`."""
    end = aware_utc(end or datetime.now(UTC))
    ends = window_ends(config, aware_utc(start) if start is not None else end - timedelta(days=1), end)
    if baseline is None and kind_of(config).needs_baseline(config):
        baseline = baseline_values(ctx, config)
    return compute(ctx.reader, config, ends, baseline)


def results_frame(results: list[MonitorResult]) -> pd.DataFrame:
    """Results as the DataFrame users see: window, group, rows, score, status, evidence."""
    import pandas as pd  # here, not at import: every client (and CLI command) imports this module

    columns = ["window_start", "window_end", "group", "rows", "score", "status", "evidence"]
    return pd.DataFrame([[getattr(r, c) for c in columns] for r in results], columns=columns)
