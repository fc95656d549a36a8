"""Model performance against ground truth, per window: scikit-learn's metrics over the log joined to the labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.logs.ground_truth import key_matches, logged_types
from finalmile.logs.query import LogReader
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import MonitorKind, fetch, quote, values

PERFORMANCE_METRICS: dict[str, bool] = {
    # name -> higher is worse
    "accuracy": False,
    "precision": False,
    "recall": False,
    "f1": False,
    "roc_auc": False,
    "log_loss": True,
    "rmse": True,
    "mae": True,
    "r2": False,
}


class PerformanceKind(MonitorKind):
    """A metric of the logged predictions against late ground truth (`label` names the true-value column)."""

    name = "performance"

    def check(self, config: MonitorConfig) -> list[str]:
        if config.metric not in PERFORMANCE_METRICS:
            return [f"metric: unknown performance metric {config.metric!r}; use {', '.join(PERFORMANCE_METRICS)}"]
        return []

    def higher_is_worse(self, config: MonitorConfig) -> bool:
        return PERFORMANCE_METRICS[config.metric]

    def read(
        self,
        reader: LogReader,
        config: MonitorConfig,
        where: list[str],
        params: list[Any],
        extra: str,
        baseline: np.ndarray | None = None,
    ) -> pa.Table:
        # one connection (one scan of the log's file list) for the key columns and the join
        with reader.connection() as conn:
            keys = label_keys(conn, config.pipeline)
            if not keys:
                return pa.table({"time": pa.array([], pa.timestamp("us", tz="UTC")), "value": [], "truth": []})
            prediction = prediction_column(config.metric, config.prediction)
            types = logged_types(conn)
            joins = [
                f"SELECT l.time, l.{quote(prediction)} AS value, g.{quote(config.label)} AS truth{extra} FROM logs l "
                f"JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key_column = '{k.replace(chr(39), '')}' "
                f"AND {key_matches(f'l.{quote(k)}', types.get(k))} WHERE {' AND '.join(where)} AND l.status = 'ok' "
                f"AND g.{quote(config.label)} IS NOT NULL"
                for k in keys
            ]
            sql = " UNION ALL ".join(f"({j})" for j in joins)
            return fetch(conn, sql, params * len(keys))

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        return performance_score(
            config.metric, values(table, "truth", rows), table.column("value").take(pa.array(rows))
        )


def label_keys(conn: Any, pipeline: str) -> list[str]:
    """The log columns `pipeline`'s ground truth was sent under (`request_id`, or an input's): what labels join on."""
    return [r[0] for r in conn.execute("SELECT DISTINCT key_column FROM ground_truth WHERE pipeline = ?",
                                       [pipeline]).fetchall()]  # fmt: skip


def prediction_column(metric: str, override: str | None = None) -> str:
    """The logged output a performance metric reads: labels, the binary score, or the regression prediction."""
    if override:
        return override
    if metric in ("roc_auc", "log_loss"):
        return "out_score"
    if metric in ("rmse", "mae", "r2"):
        return "out_prediction"
    return "out_label"


def performance_score(
    metric: str, truth: np.ndarray, predicted: pa.ChunkedArray | pa.Array
) -> tuple[float, dict[str, Any]]:
    """`metric` of the logged predictions against the true values; the classes seen are part of the evidence."""
    from sklearn import metrics  # here, not at import: every client (and CLI command) imports this module

    if metric in ("rmse", "mae", "r2"):
        y, p = truth.astype(np.float64), predicted.to_numpy().astype(np.float64)
        if metric == "rmse":
            return float(np.sqrt(metrics.mean_squared_error(y, p))), {}
        if metric == "mae":
            return float(metrics.mean_absolute_error(y, p)), {}
        return float(metrics.r2_score(y, p)), {}
    labels = _labels(truth)
    if metric in ("roc_auc", "log_loss"):
        score = predicted.to_numpy().astype(np.float64)
        classes = np.unique(labels)
        evidence = {"classes": classes.tolist()}
        if len(classes) < 2:
            return float("nan"), evidence | {"note": "only one class in the window"}
        positive = (labels == classes[-1]).astype(int)
        if metric == "roc_auc":
            return float(metrics.roc_auc_score(positive, score)), evidence
        return float(metrics.log_loss(positive, score, labels=[0, 1])), evidence
    p = _labels(np.asarray(predicted.to_pylist(), dtype=object))
    if labels.dtype != p.dtype:
        labels, p = labels.astype(str), p.astype(str)
    classes = np.unique(np.concatenate([labels, p]))
    evidence = {"classes": classes.tolist()}
    if metric == "accuracy":
        return float(metrics.accuracy_score(labels, p)), evidence
    average = "binary" if len(classes) == 2 else "macro"
    kwargs: dict[str, Any] = {"average": average, "zero_division": 0}
    if average == "binary":
        kwargs["pos_label"] = classes[-1]
    scorer = {"precision": metrics.precision_score, "recall": metrics.recall_score, "f1": metrics.f1_score}[metric]
    return float(scorer(labels, p, **kwargs)), evidence | {"average": average}


def _labels(values: np.ndarray) -> np.ndarray:
    """Integral floats (labels that went through a float column) back to integers; text stays text."""
    if values.dtype == object:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            return values.astype(str)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values
