"""Drift assays: one logged column's distribution in each window against a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.monitoring import drift
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import ColumnKind, values


class DriftKind(ColumnKind):
    """A drift metric (PSI by default) of a column's window against its baseline, with bins and shares as evidence."""

    name = "drift"

    def needs_baseline(self, config: MonitorConfig) -> bool:
        return True

    def check(self, config: MonitorConfig) -> list[str]:
        if config.metric not in drift.DRIFT_METRICS:
            return [f"metric: unknown drift metric {config.metric!r}; use {', '.join(drift.DRIFT_METRICS)}"]
        if not config.column:
            return ["column: a drift assay needs the logged column it watches"]
        if config.baseline is None:
            return ["baseline: a drift assay needs a baseline"]
        if config.binning.mode == "edges" and not config.binning.edges:
            return ["binning.edges: binning 'edges' needs at least one edge"]
        return []

    def higher_is_worse(self, config: MonitorConfig) -> bool:
        return drift.DRIFT_METRICS[config.metric].higher_is_worse

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        assert baseline is not None
        return drift_score(config, baseline, values(table, "value", rows))


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
